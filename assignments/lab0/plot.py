r"""Lab 0: one PNG, three panels, from the validation rows (`split == valid`) of three runs' log.csv.

    python assignments/lab0/plot.py runs/lab0_vae runs/lab0_dual runs/lab0_ac -o lab0.png

(a) VAE     vae.py --anneal none                          kl (closed form) and au over steps: posterior collapse
(b) DUAL    ivae.py --encoder_layers 0                    kl (the critic's, the paper's number), kl_exact, kl_lower
(c) AC      ivae.py --encoder_layers 0 --kl_estimator ac  kl_ac = kl_gauss + kl_resid beside kl_exact; the dual
                                                          run's critic KL from (b), dotted, for comparison

A folder that is missing, a log.csv without validation rows, or a column a panel needs that is absent or
empty stops the script with a one-line error (exit 2) naming the folder and the column. Uses only the
standard library and matplotlib (the lab's commands in README.md write the three folders).
"""
import argparse
import csv
import json
import os

import matplotlib

matplotlib.use("Agg")                     # PLUMBING: write a file, never open a window
import matplotlib.pyplot as plt  # noqa: E402

# Each run: the columns its panel draws, a column whose values say it is a different run, and the command.
RUNS = {
    "vae": {"needs": ("kl", "au"), "not": "kl_lower",
            "command": "python vae.py --anneal none ... --out_dir runs/lab0_vae"},
    "dual": {"needs": ("kl", "kl_exact", "kl_lower"), "not": "kl_ac",
             "command": "python ivae.py --encoder_layers 0 ... --out_dir runs/lab0_dual"},
    "ac": {"needs": ("kl_ac", "kl_gauss", "kl_resid", "kl_exact"), "not": None,
           "command": "python ivae.py --encoder_layers 0 --kl_estimator ac ... --out_dir runs/lab0_ac"},
}


class LogError(ValueError):
    """A run folder or its log.csv that cannot give a panel its columns."""


# ----------------------------------------------------------------------------------------------------
# PLUMBING: read the validation rows of one run
# ----------------------------------------------------------------------------------------------------


def read_run(folder: str, run: str) -> dict:
    """{"step": [...], column: [...]} over the rows with split == valid, for the columns RUNS[run] needs,
    plus "latent" (from config.json, or None). Raises LogError saying what is wrong and what to run."""
    spec, hint = RUNS[run], f"(the {run} run: {RUNS[run]['command']}, see assignments/lab0/README.md)"
    if not os.path.isdir(folder):
        raise LogError(f"{folder}: no such folder {hint}")
    path = os.path.join(folder, "log.csv")
    if not os.path.isfile(path):
        raise LogError(f"{path}: not found: the run has not written a log yet {hint}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") == "valid"]
    if not rows:
        raise LogError(f"{path}: no validation row (split == valid): a run shorter than an epoch needs "
                       f"--val_every {hint}")
    if spec["not"] and any(r.get(spec["not"]) for r in rows):
        raise LogError(f"{path}: has {spec['not']} values, so it is not the {run} run {hint}")
    out = {}
    for col in ("step",) + spec["needs"]:
        if col not in rows[0]:
            raise LogError(f"{path}: no column {col!r}, which panel {run} draws {hint}")
        try:
            out[col] = [float(r[col]) for r in rows]
        except (TypeError, ValueError):
            raise LogError(f"{path}: column {col!r} is empty or not a number in a validation row {hint}") from None
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            out["latent"] = json.load(f).get("latent")
    except (OSError, ValueError):
        out["latent"] = None                                             # only sets the AU axis' top
    return out


# ----------------------------------------------------------------------------------------------------
# The three panels
# ----------------------------------------------------------------------------------------------------


def _last_value(ax, xs: list, ys: list, color: str) -> None:
    """Write a line's last value beside its last point, so the numbers need no reading off an axis."""
    value = round(ys[-1], 2) + 0.0                                       # + 0.0: "0.00", not "-0.00"
    ax.annotate(f"{value:.2f}", (xs[-1], ys[-1]), xytext=(4, 4), textcoords="offset points", color=color,
                fontsize=8)


def draw(vae: dict, dual: dict, ac: dict, path: str):
    """Write the PNG at `path`; returns the figure (closed) so a test can read its lines."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.6))
    dot = dict(marker="o", ms=4)

    # (a) Gaussian VAE, beta = 1 from step 0: KL (closed form) and active units
    a.plot(vae["step"], vae["kl"], color="tab:red", label="KL(q(z|x) || p), closed form", **dot)
    _last_value(a, vae["step"], vae["kl"], "tab:red")
    a.set_ylabel("KL, nats per sentence")
    a.set_ylim(bottom=0)
    au = a.twinx()
    au.plot(vae["step"], vae["au"], color="tab:blue", ls="--", marker="s", ms=4, label="active units (AU)")
    au.set_ylabel("active units" + (f" (of {vae['latent']})" if vae["latent"] else ""))
    au.set_ylim(-0.5, (vae["latent"] or max(max(vae["au"]), 1)) + 0.5)
    lines = a.get_lines() + au.get_lines()
    a.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=8)
    a.set_title("(a) Gaussian VAE (vae.py --anneal none)")

    # (b) affine iVAE trained with the paper's dual critic: its KL, the exact KL, the lower bound (in expectation)
    b.plot(dual["step"], dual["kl_exact"], color="tab:green", label="exact KL (kl_exact)", **dot)
    b.plot(dual["step"], dual["kl_lower"], color="tab:blue", ls="--", label="lower bound (kl_lower)", **dot)
    b.plot(dual["step"], dual["kl"], color="tab:red", label="critic's KL, the paper's (kl)", **dot)
    for col, color in (("kl_exact", "tab:green"), ("kl", "tab:red")):
        _last_value(b, dual["step"], dual[col], color)
    b.set_yscale("symlog", linthresh=1.0)            # exact KL spans hundreds of nats, the critic's ~0-10
    b.set_ylabel("nats per sentence (symlog)")
    b.legend(fontsize=8)
    b.set_title("(b) affine iVAE, dual critic (ivae.py --encoder_layers 0)")

    # (c) the same model trained with adaptive contrast: kl_ac = kl_gauss + kl_resid
    c.plot(ac["step"], ac["kl_exact"], color="tab:green", lw=4, alpha=0.4, label="exact KL (kl_exact)")
    c.plot(ac["step"], ac["kl_ac"], color="tab:purple", label="adaptive contrast (kl_ac)", **dot)
    c.plot(ac["step"], ac["kl_gauss"], color="black", lw=0.8, ls=":", label="its Gaussian term (kl_gauss)")
    c.plot(ac["step"], ac["kl_resid"], color="tab:orange", label="its residual critic (kl_resid)", **dot)
    c.plot(dual["step"], dual["kl"], color="tab:red", ls=":", alpha=0.7, label="dual critic's KL, run (b)")
    for col, color in (("kl_ac", "tab:purple"), ("kl_resid", "tab:orange")):
        _last_value(c, ac["step"], ac[col], color)
    c.set_ylabel("nats per sentence")
    c.legend(fontsize=8)
    c.set_title("(c) affine iVAE, adaptive contrast (--kl_estimator ac)")

    for ax in (a, b, c):
        ax.set_xlabel("training step (validation rows)")
        ax.grid(alpha=0.3)
        ax.margins(x=0.12)                            # room for the last values' labels
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description="Lab 0: plot the three runs' validation rows into one PNG")
    for run in RUNS:
        parser.add_argument(f"{run}_dir", help=f"out_dir of the {run} run ({RUNS[run]['command']})")
    parser.add_argument("-o", "--out", default="lab0.png", help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        logs = {run: read_run(getattr(args, f"{run}_dir"), run) for run in RUNS}
    except LogError as e:
        parser.error(str(e))
    if os.path.dirname(args.out) and not os.path.isdir(os.path.dirname(args.out)):
        parser.error(f"-o {args.out}: no folder {os.path.dirname(args.out)}")
    fig = draw(logs["vae"], logs["dual"], logs["ac"], args.out)
    print(f"wrote {args.out}")
    return fig


if __name__ == "__main__":
    main()

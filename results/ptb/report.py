"""Tables 2 and 5 (PTB) and two pictures, from the committed runs in results/ptb/<folder>/.

    python results/ptb/report.py            # rewrites the two tables in results/ptb/README.md (between its
                                            # "report.py: table2/table5" markers); draws
                                            # docs/ptb_kl_critic_vs_exact.png and docs/ptb_nelbo_bounds.png
    python results/ptb/report.py --check    # writes nothing: exit 1 if the page's tables differ from the runs
    python results/ptb/report.py --no_plots # the tables only (no matplotlib needed)

Every number of ours is read from a run's metrics.json (final test) or log.csv (validations); the paper's
rows are typed from the paper (Fang et al. 2019, Tables 2 and 5). A run that is not committed yet is
listed as "not finished". Nothing here computes or adjusts a metric.
"""
import argparse
import csv
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PAGE = os.path.join(HERE, "README.md")       # the page whose marked tables this script writes

# folder, command, paper row name, paper (-ELBO, PPL, KL, MI, AU), paper (forward PPL, reverse PPL)
RUNS = [
    ("vae", "python vae.py --data ptb --fwd_rev_ppl", "VAE", ("102.6", "108.26", "1.08", "0.8", "2"), (18494, 10149)),
    ("vae_beta0.5", "python vae.py --data ptb --beta 0.5 --fwd_rev_ppl", "β(0.5)-VAE",
     ("104.5", "117.92", "7.50", "3.1", "5"), (939, 4078)),
    ("vae_cyclical", "python vae.py --data ptb --anneal cyclical --fwd_rev_ppl", "Cyc-VAE",
     ("103.1", "110.50", "3.48", "1.8", "5"), (3390, 5587)),
    ("ivae_affine", "python ivae.py --data ptb --encoder_layers 0 --fwd_rev_ppl", "iVAE",
     ("87.6", "54.46", "6.32", "3.5", "32"), (116, 1520)),
    ("ivae", "python ivae.py --data ptb --fwd_rev_ppl", "iVAE", ("87.6", "54.46", "6.32", "3.5", "32"), (116, 1520)),
    ("ivae_ac_affine", "python ivae.py --data ptb --encoder_layers 0 --kl_estimator ac --fwd_rev_ppl "
     "--resid_check_every 10", "iVAE", ("87.6", "54.46", "6.32", "3.5", "32"), (116, 1520)),
    ("ivae_ac_mlp256", "python ivae.py --data ptb --kl_estimator ac --fwd_rev_ppl --ac_samples 256 "
     "--ac_critic_samples 32 --ac_nu_lr 3e-4", "iVAE", ("87.6", "54.46", "6.32", "3.5", "32"), (116, 1520)),
    ("ivae_mi_affine", "python ivae_mi.py --data ptb --encoder_layers 0 --fwd_rev_ppl", "iVAE_MI",
     ("87.2", "53.44", "12.51", "12.2", "32"), (134, 1137)),
    ("ivae_mi", "python ivae_mi.py --data ptb", "iVAE_MI", ("87.2", "53.44", "12.51", "12.2", "32"), (134, 1137)),
]


def load(folder: str):
    """(metrics.json as a dict, validation rows of log.csv) of a committed run, or (None, [])."""
    path = os.path.join(HERE, folder)
    if not os.path.exists(os.path.join(path, "metrics.json")):
        return None, []
    with open(os.path.join(path, "metrics.json"), encoding="utf-8") as f:
        result = json.load(f)
    with open(os.path.join(path, "log.csv"), encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "valid"]
    return result, rows


def test_seconds(folder: str, result: dict):
    """The final test's wall time in seconds: metrics.json's test_seconds, or for runs made before that field
    existed the "(HH:MM:SS-HH:MM:SS, X min)" the run's stdout_tail.txt header states for its final test."""
    if "test_seconds" in result:
        return float(result["test_seconds"])
    path = os.path.join(HERE, folder, "stdout_tail.txt")
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    found = re.search(r"final test\s*#?\s*\(\d\d:\d\d:\d\d-\d\d:\d\d:\d\d, ([\d.]+) min\)", text)
    return float(found.group(1)) * 60 if found else None


def duration(seconds) -> str:
    if seconds is None:
        return "(see the run's stdout)"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def machine(result: dict) -> str:
    """Where the run trained, from metrics.json's device: "CPU" (this project's 2-core machine) or the GPU's name."""
    found = re.match(r"cuda \((?:NVIDIA )?([^)]*)\)", result.get("device", ""))
    return found.group(1) if found else "CPU"


def num(value, digits: int = 2) -> str:
    if value is None or value == "":
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return "∞"
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"


def table2() -> str:
    lines = ["| run | −ELBO | PPL | KL | MI | AU | IW-NLL | IW-PPL | exact KL (or ≥ bound) | exact MI | log N "
             "| epochs, wall, machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    shown = None
    for folder, _, name, paper, _ in RUNS:
        if name != shown:                                 # one paper row above our runs of that model
            lines.append(f"| paper, {name} | {paper[0]} | {paper[1]} | {paper[2]} | {paper[3]} | {paper[4]} "
                         "| — | — | — | — | — | |")
            shown = name
        r, rows = load(folder)
        if r is None:
            lines.append(f"| **ours, `{folder}`** | not finished | | | | | | | | | | |")
            continue
        vae = folder.startswith("vae")
        kl_true = num(r.get("kl")) if vae else (num(r["kl_exact"]) if "kl_exact" in r else f"≥ {num(r['kl_lower'])}")
        mi_true = num(r.get("mi")) if vae else num(r.get("mi_exact"))
        wall = f"{duration(r['train_time_s'])} + test {duration(test_seconds(folder, r))}, {machine(r)}"
        epochs = rows[-1]["epoch"] if rows else "?"
        lines.append(f"| **ours, `{folder}`** | {num(r['nelbo'])} | {num(r['ppl'])} | {num(r['kl'])} | "
                     f"{num(r['mi'])} | {r['au']} | {num(r['iw_nll'])} | {num(r['iw_ppl'])} | {kl_true} | "
                     f"{mi_true} | {num(r['log_n'])} | {float(epochs):.0f}, {wall} |")
    return "\n".join(lines)


def table5() -> str:
    lines = ["| run | paper forward / reverse PPL | ours forward | ours reverse (train) | ours reverse (test) |",
             "|---|---|---|---|---|"]
    for folder, _, name, _, paper in RUNS:
        r, _ = load(folder)
        if r is None or "fwd_ppl" not in r:
            ours = ["not finished"] + [""] * 2
        else:
            ours = [num(r["fwd_ppl"], 1), num(r["rev_ppl"], 1), num(r["rev_ppl_test"], 1)]
        lines.append(f"| `{folder}` ({name}) | {paper[0]:,} / {paper[1]:,} | " + " | ".join(ours) + " |")
    return "\n".join(lines)


def pictures() -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    # 1. The critic's KL against the exact KL, per validation, for the affine runs (q(z|x) Gaussian).
    affine = [(f, load(f)[1]) for f in ("ivae_affine", "ivae_mi_affine")]
    affine = [(f, rows) for f, rows in affine if rows and rows[0].get("kl_exact")]
    if affine:
        fig, ax = plt.subplots(figsize=(7, 4))
        for (folder, rows), color in zip(affine, ("tab:blue", "tab:orange")):
            ep = [float(r["epoch"]) for r in rows]
            ax.plot(ep, [float(r["kl_exact"]) for r in rows], color=color, label=f"{folder}: exact KL")
            ax.plot(ep, [float(r["kl"]) for r in rows], color=color, ls="--", label=f"{folder}: critic's KL (paper)")
        ax.set_xlabel("epoch"), ax.set_ylabel("nats per sentence (validation)")
        ax.set_title("PTB, affine G_φ: the KL the paper reports vs the exact KL")
        ax.legend(fontsize=8), fig.tight_layout()
        written.append(os.path.join(ROOT, "docs", "ptb_kl_critic_vs_exact.png"))
        fig.savefig(written[-1], dpi=120), plt.close(fig)
    # 2. -ELBO the paper's way, the IW bound and (affine / VAE) the exact -ELBO, per model, on test.
    done = [(f, load(f)[0]) for f, *_ in RUNS]
    done = [(f, r) for f, r in done if r is not None]
    if done:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.27
        for i, (folder, r) in enumerate(done):
            if folder.startswith("vae") or "nelbo_exact" in r:             # q(z|x) Gaussian: known exactly
                third = (r["nelbo"] if folder.startswith("vae") else r["nelbo_exact"], "exact −ELBO", None)
            else:                                                             # MLP G_phi: a floor (in expectation)
                third = (r["rec"] + r["kl_lower"], "−ELBO ≥ rec + KL lower bound (in expectation)", "//")
            bars = [(r["nelbo"], "−ELBO, the paper's way", "tab:gray", None),
                    (r["iw_nll"], "IW-NLL (upper bound on −log p(x))", "tab:green", None),
                    (third[0], third[1], "tab:red", third[2])]
            for j, (value, label, color, hatch) in enumerate(bars):
                ax.bar(i + (j - 1) * width, value, width, color=color, hatch=hatch, label=label)
        ax.set_xticks(range(len(done)), [f for f, _ in done], rotation=20, fontsize=8)
        ax.set_ylabel("nats per sentence (test)"), ax.set_title("PTB: what the paper reports vs true bounds")
        handles, labels = ax.get_legend_handles_labels()
        keep = dict(zip(labels, handles))                                    # one legend entry per kind of bar
        ax.legend(keep.values(), keep.keys(), fontsize=8), fig.tight_layout()
        written.append(os.path.join(ROOT, "docs", "ptb_nelbo_bounds.png"))
        fig.savefig(written[-1], dpi=120), plt.close(fig)
    return written


def fill(page: str, tables: dict) -> str:
    """`page` with the text between each "<!-- report.py: NAME begin -->" and "... end -->" marker pair
    replaced by tables[NAME]; a missing marker is an error (the page was edited by hand)."""
    for name, table in tables.items():
        begin, end = f"<!-- report.py: {name} begin -->", f"<!-- report.py: {name} end -->"
        if begin not in page or end not in page:
            raise SystemExit(f"report.py: {os.path.relpath(PAGE, ROOT)} has no {begin} ... {end} markers")
        head, rest = page.split(begin, 1)
        page = head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1]
    return page


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the tables in results/ptb/README.md differ from the runs")
    parser.add_argument("--no_plots", action="store_true", help="do not draw the two pictures")
    args = parser.parse_args(argv)
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    new = fill(page, {"table2": table2(), "table5": table5()})
    rel = os.path.relpath(PAGE, ROOT)
    if args.check:
        print(f"{rel}: tables {'up to date' if new == page else 'differ from the committed runs'}")
        return 0 if new == page else 1
    if new != page:
        with open(PAGE + ".tmp", "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(PAGE + ".tmp", PAGE)
        print(f"wrote Tables 2 and 5 into {rel}")
    else:
        print(f"{rel}: tables already up to date")
    print("Commands:")
    for folder, command, *_ in RUNS:
        print(f"    {command} --out_dir runs/{folder}")
    print("    python ivae_mi.py --out_dir runs/ivae_mi --eval_only --skip_test --fwd_rev_ppl --interpolate A B"
          "   # the headline run's Tables 4, 5")
    if not args.no_plots:
        for path in pictures():
            print("wrote", os.path.relpath(path, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 29's per-validation check of adaptive contrast (ivae.py --kl_estimator ac), from a run's log.csv.

    python results/ptb/ac_progress.py results/ptb/ivae_ac_affine/log.csv [more log.csv ...] [--vae results/ptb/vae/log.csv]

For each validation row: the KL the model was trained with (kl_ac = kl_gauss + kl_resid), its two parts, and
where the encoder is affine (q(z|x) Gaussian) the exact KL and the relative error (kl_ac - kl_exact) / kl_exact
and (kl_gauss - kl_exact) / kl_exact; at the rows with a residual check, the fresh critic's residual
(kl_resid_check) beside the joint critic's on the same sentences (kl_resid_joint); with --vae, the Gaussian
VAE's validation IW-NLL and KL at the same epoch (same validation sentences, same K). Then, for an implicit q,
the checks summed up, and the test row (log.csv's, else metrics.json's beside it). Reads, never adjusts.
"""
import csv
import json
import os
import sys


def num(row: dict, key: str):
    return float(row[key]) if row.get(key) not in (None, "") else None


def report(path: str, vae: dict) -> None:
    rows = [r for r in csv.DictReader(open(path)) if r["split"] == "valid"]
    print(f"{path}: {len(rows)} validations")
    print(f"{'step':>6} {'ep':>4} {'kl_ac':>7} {'gauss':>7} {'resid':>7} {'exact':>7} {'rel_ac':>8} {'rel_g':>8} "
          f"{'check':>7} {'joint':>7} {'iw_nll':>7}" + (f" {'vae_iw':>7} {'vae_kl':>7}" if vae else ""))
    rel, checks = [], []
    for r in rows:
        ac, g, res, ex = num(r, "kl_ac"), num(r, "kl_gauss"), num(r, "kl_resid"), num(r, "kl_exact")
        ck, jt = num(r, "kl_resid_check"), num(r, "kl_resid_joint")
        f = lambda v, w=7, p=3: f"{v:{w}.{p}f}" if v is not None else " " * (w - 1) + "-"
        ra, rg = ((ac - ex) / ex, (g - ex) / ex) if ex else (None, None)
        if ra is not None:
            rel.append(abs(ra))
        if ck is not None:
            checks.append((float(r["epoch"]), ck, jt, g, ac))
        print(f"{int(r['step']):>6} {float(r['epoch']):4.0f} {f(ac)} {f(g)} {f(res)} {f(ex)} {f(ra, 8, 4)} "
              f"{f(rg, 8, 4)} {f(ck)} {f(jt)} {f(num(r, 'iw_nll'), 7, 2)}"
              + (f" {f(num(vae.get(r['epoch'], {}), 'iw_nll'), 7, 2)} {f(num(vae.get(r['epoch'], {}), 'kl'))}" if vae else ""))
    if rel:
        print(f"|kl_ac - kl_exact| / kl_exact: mean {sum(rel) / len(rel):.4f}, max {max(rel):.4f} "
              f"over {len(rel)} validations")
    if checks and not rel:       # implicit q: the joint residual against the fresh critic's, kl_ac against both terms
        gap = [abs(jt - ck) for _, ck, jt, _, _ in checks]
        apart = [abs(jt - ck) / ck for _, ck, jt, _, _ in checks]
        low = [(g + ck - ac) / (g + ck) for _, ck, _, g, ac in checks]
        print(f"|kl_resid_joint - kl_resid_check|: mean {sum(gap) / len(gap):.3f}, max {max(gap):.3f} nats; "
              f"/ check: mean {sum(apart) / len(apart):.2f}, max {max(apart):.2f}; kl_ac below gauss + check: "
              + ", ".join(f"{e:.0f}: {x:.0%}" for (e, *_), x in zip(checks, low)) + f" ({len(checks)} checks)")
    test = [r for r in csv.DictReader(open(path)) if r["split"] == "test"]
    beside = os.path.join(os.path.dirname(path), "metrics.json")     # an --eval_only test leaves log.csv as it was
    if not test and os.path.exists(beside):
        test = [json.load(open(beside))]
    for r in test:
        ck, jt, g, ac = (num(r, k) for k in ("kl_resid_check", "kl_resid_joint", "kl_gauss", "kl_ac"))
        print(f"test (step {r['step']}): kl_ac {ac:.3f} = gauss {g:.3f} + resid {num(r, 'kl_resid'):.3f}; "
              + (f"check {ck:.3f} vs joint {jt:.3f}; kl_ac {(g + ck - ac) / (g + ck):.0%} below gauss + check; "
                 if ck is not None else "") + f"iw_nll {num(r, 'iw_nll'):.2f}")


if __name__ == "__main__":
    args, vae = sys.argv[1:], {}
    if "--vae" in args:
        i = args.index("--vae")
        vae = {r["epoch"]: r for r in csv.DictReader(open(args[i + 1])) if r["split"] == "valid"}
        args = args[:i] + args[i + 2:]
    for p in args:
        report(p, vae)

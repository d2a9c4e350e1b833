"""Issue 29's per-validation check of adaptive contrast (ivae.py --kl_estimator ac), from a run's log.csv.

    python results/ptb/ac_progress.py results/ptb/ivae_ac_affine/log.csv [more log.csv ...] [--vae results/ptb/vae/log.csv]

For each validation row: the KL the model was trained with (kl_ac = kl_gauss + kl_resid), its two parts, and
where the encoder is affine (q(z|x) Gaussian) the exact KL and the relative error (kl_ac - kl_exact) / kl_exact
and (kl_gauss - kl_exact) / kl_exact; at the rows with a residual check, the fresh critic's residual
(kl_resid_check) beside the joint critic's on the same sentences (kl_resid_joint); with --vae, the Gaussian
VAE's validation IW-NLL and KL at the same epoch (same validation sentences, same K). Reads, never adjusts.
"""
import csv
import sys


def num(row: dict, key: str):
    return float(row[key]) if row.get(key) not in (None, "") else None


def report(path: str, vae: dict) -> None:
    rows = [r for r in csv.DictReader(open(path)) if r["split"] == "valid"]
    print(f"{path}: {len(rows)} validations")
    print(f"{'step':>6} {'ep':>4} {'kl_ac':>7} {'gauss':>7} {'resid':>7} {'exact':>7} {'rel_ac':>8} {'rel_g':>8} "
          f"{'check':>7} {'joint':>7} {'iw_nll':>7}" + (f" {'vae_iw':>7} {'vae_kl':>7}" if vae else ""))
    rel = []
    for r in rows:
        ac, g, res, ex = num(r, "kl_ac"), num(r, "kl_gauss"), num(r, "kl_resid"), num(r, "kl_exact")
        ck, jt = num(r, "kl_resid_check"), num(r, "kl_resid_joint")
        f = lambda v, w=7, p=3: f"{v:{w}.{p}f}" if v is not None else " " * (w - 1) + "-"
        ra, rg = ((ac - ex) / ex, (g - ex) / ex) if ex else (None, None)
        if ra is not None:
            rel.append(abs(ra))
        print(f"{int(r['step']):>6} {float(r['epoch']):4.0f} {f(ac)} {f(g)} {f(res)} {f(ex)} {f(ra, 8, 4)} "
              f"{f(rg, 8, 4)} {f(ck)} {f(jt)} {f(num(r, 'iw_nll'), 7, 2)}"
              + (f" {f(num(vae.get(r['epoch'], {}), 'iw_nll'), 7, 2)} {f(num(vae.get(r['epoch'], {}), 'kl'))}" if vae else ""))
    if rel:
        print(f"|kl_ac - kl_exact| / kl_exact: mean {sum(rel) / len(rel):.4f}, max {max(rel):.4f} "
              f"over {len(rel)} validations")


if __name__ == "__main__":
    args, vae = sys.argv[1:], {}
    if "--vae" in args:
        i = args.index("--vae")
        vae = {r["epoch"]: r for r in csv.DictReader(open(args[i + 1])) if r["split"] == "valid"}
        args = args[:i] + args[i + 2:]
    for p in args:
        report(p, vae)

r"""Is the learned prior's z useless to the decoder because it sits OFFSET from the posterior's? A probe of a dialog.py
checkpoint (eval mode, fp32, CPU, one thread, fixed seed), on validation responses.

    PYTHONPATH=. python results/dailydialog/final/prior_shift.py --ckpt CKPT --data_dir DIR [--fit 1000 --n 2000]

The critic nu(z, c) sees posterior and prior samples in separate passes, each normalised in every BatchNorm layer by
its own batch statistics (dialog.py's docstring): a prior whose z are all moved by one vector, or rescaled per
dimension, gives the critic the same features, so the prior's update gets no gradient against such an offset.
The test-time decoder, in eval mode, does see it. Here, on the first `fit` validation responses, the pooled per-
dimension mean and std of prior and posterior samples; then, on the next `n` responses, -log p(x | z, c) per
response (summed over tokens) with z from:
    posterior          z ~ q(z|x,c)                                                   (dialog.py's rec)
    prior              z ~ p(z|c)                                                     (rec_prior)
    prior, recentred   z - mean_p + mean_q                 (the pooled offset removed: what BN hides from the critic)
    prior, matched     (z - mean_p) / std_p * std_q + mean_q   (per-dimension mean and scale of the posterior)
    prior, whitened    mean_q + L_q L_p^-1 (z - mean_p)        (the posterior's mean and full covariance, L L^T = Cov)
and how far a prior z, and a held-out posterior z, lie from the nearest of the fitted posterior z (off the support?).
    shuffled           another response's posterior z                                 (rec_shuffled)
A DIAGNOSTIC, not a way to sample: the moments come from posterior samples, which need the response.
A measurement, not a model script: it imports dialog.py to use its model.
"""
import argparse

import torch

import data
import dialog


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--fit", type=int, default=1000, help="validation responses for the pooled moments")
    ap.add_argument("--n", type=int, default=2000, help="the next n validation responses, for the NLLs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    cfg = dialog.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()})
    vocab = data.Vocab.from_state_dict(ckpt["vocab"])
    corpus = data.load_corpus(cfg.data, args.data_dir, ("valid",), vocab=vocab, max_context=cfg.max_context)
    model = dialog.DialogModel(len(vocab), cfg.emb_dim, cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    gen = torch.Generator().manual_seed(0)
    examples = corpus.examples["valid"]

    def batches(exs):
        for idx in data.batch_plan([len(e.response) for e in exs], 64, 0, 0, shuffle=False):
            batch = data.collate([exs[i] for i in idx])
            c, x = model.encoder(batch)                                  # (B, Hc), (B, 2H)
            yield batch, c, model.posterior(torch.cat([x, c], -1), gen), model.prior(c, gen)   # (B, Z) each

    zq, zp = map(torch.cat, zip(*[(q, p) for _, _, q, p in batches(examples[:args.fit])]))   # (fit, Z) each
    mq, sq, mp, sp = zq.mean(0), zq.std(0), zp.mean(0), zp.std(0)        # (Z,) each
    eye = 1e-4 * torch.eye(zq.shape[1])
    Lq, Lp = (torch.linalg.cholesky(torch.cov(z.T.double()) + eye) for z in (zq, zp))    # (Z, Z) each
    A = (Lq @ torch.linalg.inv(Lp)).float()                             # (Z, Z): p's covariance -> q's
    eff_dim = lambda z: float(torch.linalg.eigvalsh(torch.cov(z.T.double())).sum() ** 2
                              / (torch.linalg.eigvalsh(torch.cov(z.T.double())) ** 2).sum())   # participation ratio
    near = {"prior": [], "posterior": []}                               # distance to the nearest fitted posterior z
    tot, n = {k: 0.0 for k in ("posterior", "prior", "prior, recentred", "prior, matched", "prior, whitened",
                               "shuffled")}, 0
    for batch, c, q, p in batches(examples[args.fit:args.fit + args.n]):
        for key, z in (("posterior", q), ("prior", p), ("prior, recentred", p - mp + mq),
                       ("prior, matched", (p - mp) / sp * sq + mq), ("prior, whitened", mq + (p - mp) @ A.T),
                       ("shuffled", q.roll(1, 0))):
            tot[key] += float(model.nll(batch.tokens, z, c).sum())
        near["prior"].append(torch.cdist(p, zq).min(1).values)
        near["posterior"].append(torch.cdist(q, zq).min(1).values)
        n += len(c)
    print(f"checkpoint step {ckpt['step']} (epoch {ckpt['step'] / 2725:.1f}); moments from validation responses "
          f"0-{args.fit - 1}, NLLs on the next {n}")
    shift = (mp - mq).abs() / sq
    print(f"pooled offset |mean_p - mean_q| in posterior stds: median {float(shift.median()):.3f}, max "
          f"{float(shift.max()):.3f}; std_p / std_q per dimension: median {float((sp / sq).median()):.3f} "
          f"(range {float((sp / sq).min()):.3f}-{float((sp / sq).max()):.3f})")
    print(f"effective dimensions of the pooled z (participation ratio of the covariance's eigenvalues): prior "
          f"{eff_dim(zp):.1f}, posterior {eff_dim(zq):.1f} of {zq.shape[1]}")
    d = {k: torch.cat(v) for k, v in near.items()}
    print(f"distance from a z to the nearest of the {len(zq)} fitted posterior z: median {float(d['prior'].median()):.2f}"
          f" for prior z, {float(d['posterior'].median()):.2f} for held-out posterior z (their pooled spread: "
          f"{float(zq.std(0).norm()):.2f})")
    for key, v in tot.items():
        print(f"-log p(x | z, c) per response, z = {key:<17} {v / n:8.2f}")


if __name__ == "__main__":
    main()

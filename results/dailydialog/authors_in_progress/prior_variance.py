r"""How much of the learned prior's spread does the context decide? A variance decomposition of the dialog
model's implicit prior p(z|c) and posterior q(z|x,c), for a checkpoint of runs/dialog_authors.

    PYTHONPATH=. python results/dailydialog/authors_in_progress/prior_variance.py --ckpt CKPT [--n 1000 --m 32]

On the first n validation responses (their contexts), m samples of z per context from each distribution
(fixed seed, fp32, eval mode, CPU). Per latent dimension d, the law of total variance:

    Var(z_d) = E_c Var(z_d | c) + Var_c E(z_d | c)           (within + between)

estimated with the per-context sample means and unbiased variances; the between term is corrected for the
noise of an m-sample mean (Var of the means minus within / m). Summed over d:

    share = between / (within + between)

is the fraction of the prior's variance that the context explains (1: z is a function of c; 0: the same
for every context). The same for the posterior, whose input is (x, c). A low prior share with a decoder
that follows z explains ten typed contexts getting the same responses from the same noise.
Also: the cosine similarity of z from the SAME noise eps under two different contexts (mean over pairs).
A measurement, not a model script: it imports dialog.py to use its model.
"""
import argparse

import torch

import data
import dialog


def decompose(z: torch.Tensor) -> tuple:
    """z (N, M, Z): M samples for each of N inputs -> (within, between, share), summed over Z."""
    M = z.shape[1]
    within = z.var(1, unbiased=True).mean(0)                             # (Z,) E_c Var(z | c)
    between = (z.mean(1).var(0, unbiased=True) - within / M).clamp(min=0)   # (Z,) Var_c E(z | c)
    w, b = float(within.sum()), float(between.sum())
    return w, b, b / (w + b)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--n", type=int, default=1000, help="validation responses (their contexts)")
    ap.add_argument("--m", type=int, default=32, help="samples of z per context")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    cfg = dialog.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()})
    vocab = data.Vocab.from_state_dict(ckpt["vocab"])
    corpus = data.load_corpus(cfg.data, args.data_dir, ("valid",), vocab=vocab, max_context=cfg.max_context)
    model = dialog.DialogModel(len(vocab), cfg.emb_dim, cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    examples = corpus.examples["valid"][:args.n]
    gen = torch.Generator().manual_seed(0)
    zp, zq, cs = [], [], []
    for idx in data.batch_plan([len(e.response) for e in examples], 64, 0, 0, shuffle=False):
        batch = data.collate([examples[i] for i in idx])
        c, x = model.encoder(batch)                                      # (B, Hc), (B, 2H)
        B, M = len(idx), args.m
        zp.append(model.prior(c.repeat_interleave(M, 0), gen).view(B, M, -1))          # (B, M, Z)
        zq.append(model.posterior(torch.cat([x, c], -1).repeat_interleave(M, 0), gen).view(B, M, -1))
        cs.append(c)
    zp, zq, c = torch.cat(zp), torch.cat(zq), torch.cat(cs)
    print(f"checkpoint step {ckpt['step']} (epoch {ckpt['step'] / 2725:.1f}); {len(zp)} validation contexts, "
          f"{args.m} samples each, Z = {zp.shape[-1]}")
    for name, z in (("prior p(z|c)", zp), ("posterior q(z|x,c)", zq)):
        w, b, share = decompose(z)
        print(f"{name:<19} within {w:9.3f}  between {b:9.3f}  share explained by its input {share:.3f}  "
              f"(|z| mean {float(z.norm(dim=-1).mean()):.2f})")
    ratio = zq.var(1).mean(0) / zp.var(1).mean(0)                       # (Z,) within-q over within-p, per dim
    print(f"posterior's within-context variance over the prior's, per dimension: median {float(ratio.median()):.4f}"
          f" (max {float(ratio.max()):.4f}): q(z|x,c) is {'nearly a point' if ratio.median() < 0.01 else 'spread'}"
          " beside p(z|c)")
    # The same noise under two different contexts: the prior's own map, eps fixed, c varied.
    mu, logvar = model.prior.gauss(c).chunk(2, -1)                       # (N, Z) each
    eps = torch.randn(1, mu.shape[1], generator=gen).expand_as(mu)
    z_same = model.prior.generator(mu + (0.5 * logvar).exp() * eps)      # (N, Z): one eps for all contexts
    zn = torch.nn.functional.normalize(z_same, dim=-1)
    cos = zn @ zn.T
    off = cos[~torch.eye(len(zn), dtype=torch.bool)]
    print(f"same eps, different contexts: cosine of z mean {float(off.mean()):.3f} (min {float(off.min()):.3f}); "
          f"e = mu + sigma eps: mean sigma {float((0.5 * logvar).exp().mean()):.3f}, "
          f"std of mu over contexts {float(mu.std(0).mean()):.3f} (per-dim means)")


if __name__ == "__main__":
    main()

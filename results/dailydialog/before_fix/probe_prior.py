r"""Probe of the selected dialog model (runs/dialog/best.pt): does z matter to the decoder, and does the
learned prior p(z|c) put its samples where the posterior q(z|x,c) does? (Table 8 reading, results/dailydialog/README.md.)

    PYTHONPATH=. python results/dailydialog/before_fix/probe_prior.py --ckpt runs/dialog/best.pt --data_dir ../shared/data

It probes the model BEFORE issue 30's fix and runs against that code only (dialog.py at 5cb1eca; e.g.
`git worktree add /tmp/old 5cb1eca` and run it there): probe_prior.txt is its output, the diagnosis kept
beside the old Table 8 row. The new dialog.py logs the same three reconstructions in every validation row.

On the first 2,000 test responses (fixed seed, fp32, CPU):
1. reconstruction NLL per response with z from the posterior, from the prior, and with the posterior's z
   shuffled across the batch (another response's code): what z is worth to the decoder;
2. the run's critic nu(z, c) on posterior and on prior samples: the dual KL estimate, and the spread of
   nu on prior samples (exp(nu) of a few of them dominates the estimate when it explodes);
3. norms of z: posterior vs prior samples, and the per-context spread of ten prior samples (what makes
   ten responses differ).
A measurement, not a model script: it imports dialog.py to use its model.
"""
import argparse
import math

import torch

import data
import dialog
import metrics


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="runs/dialog/best.pt")
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    cfg = dialog.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()})
    vocab = data.Vocab.from_state_dict(ckpt["vocab"])
    corpus = data.load_corpus(cfg.data, args.data_dir, ("test",), vocab=vocab, max_context=cfg.max_context)
    model = dialog.DialogModel(len(vocab), cfg.emb_dim, cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    examples = corpus.examples["test"][:args.n]
    gen = torch.Generator().manual_seed(1)
    tot = {"post": 0.0, "prior": 0.0, "shuffled": 0.0}
    nu_q, nu_p, zq_norm, zp_norm, spread, words = [], [], [], [], [], 0
    for idx in data.batch_plan([len(e.response) for e in examples], 64, 0, 0, shuffle=False):
        b = data.collate([examples[i] for i in idx])
        c = model.encode_context(b)
        x = model.encode_utterances(b.tokens, b.lengths)
        zq = model.posterior(torch.cat([x, c], -1), gen)                 # (B, Z)
        zp = model.prior(c, gen)                                         # (B, Z)
        perm = torch.randperm(len(idx), generator=gen)
        tot["post"] += float(model.nll(b.tokens, zq, c).sum())
        tot["prior"] += float(model.nll(b.tokens, zp, c).sum())
        tot["shuffled"] += float(model.nll(b.tokens, zq[perm], c).sum())
        words += int((b.lengths - 1).sum())
        nu_q.append(model.critic(zq, c).float())
        nu_p.append(model.critic(zp, c).float())
        zq_norm.append(zq.norm(dim=-1))
        zp_norm.append(zp.norm(dim=-1))
        ten = model.prior(c.repeat_interleave(10, 0), gen).reshape(len(idx), 10, -1)   # (B, 10, Z)
        spread.append(ten.std(1).norm(dim=-1))                           # per context
    n = len(examples)
    print(f"{n} test responses of {cfg.data}, model of step {ckpt['step']}")
    for k, v in tot.items():
        print(f"rec NLL per response, z from the {k:<9}: {v / n:7.2f}  (PPL {metrics.perplexity(v, words):8.2f})")
    nu_q, nu_p = torch.cat(nu_q), torch.cat(nu_p)
    print(f"critic nu(z, c): posterior samples mean {nu_q.mean():.2f} (min {nu_q.min():.2f}, max {nu_q.max():.2f}); "
          f"prior samples mean {nu_p.mean():.2f} (min {nu_p.min():.2f}, max {nu_p.max():.2f})")
    print(f"dual KL estimate on these samples: {float(metrics.dual_kl(nu_q, nu_p)):.4g}; "
          f"prior samples with nu > 20: {int((nu_p > 20).sum())} of {len(nu_p)}")
    share = torch.softmax(nu_p.double(), 0).max()
    print(f"largest single prior sample's share of sum exp(nu): {float(share):.3f}")
    print(f"|z|: posterior {torch.cat(zq_norm).mean():.2f}, prior {torch.cat(zp_norm).mean():.2f}; "
          f"spread of 10 prior samples per context (norm of the per-dim std): {torch.cat(spread).mean():.3f}")
    print(f"(posterior z of different responses, batch std norm: {torch.stack([torch.cat(zq_norm)]).std():.3f})")


if __name__ == "__main__":
    main()

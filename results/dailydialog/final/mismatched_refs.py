r"""Do Table 8's scores see the context? The test run of a dialog.py checkpoint again, its responses scored once
against their own references (Table 8, as metrics.json) and then against ANOTHER context's reference:
    neighbour   the next context in the evaluation's order; batches there are sorted by response length, so
                the reference has about the same length (BLEU's brevity penalty and Distinct are unchanged);
                dialog.py's test row reports this one as `*_other` (added after this run)
    random      a seeded random permutation of the contexts
A response that answers its context should score clearly higher against its own reference than against another's.
Distinct does not look at the reference, so only BLEU and BOW are printed.
With --z posterior, the positive control: the K responses are decoded from z ~ q(z|x,c), which has read the
reference (same seed and batches; not Table 8's setting), to show the scores CAN tell the right reference apart.

    PYTHONPATH=. IVAE_DATA_DIR=/work/shared/data python results/dailydialog/final/mismatched_refs.py \
        --ckpt runs/dialog_mixed/best.pt [--threads 2]

A measurement, not a model script: it imports dialog.py to use its model and its evaluation (same seed, so the
responses are the run's own up to the order of floating-point sums).
"""
import argparse
import random

import torch

import data
import dialog
import metrics


@torch.no_grad()
def posterior_responses(model, corpus, cfg) -> list:
    """K responses per test context decoded from z ~ q(z|x,c), in dialog.evaluate's order (batches by length)."""
    model.eval()
    # dialog.evaluate's seed (the draws come in another order here: no rec passes, posterior in place of prior)
    gen, K, examples = torch.Generator().manual_seed(cfg.seed + 12345), cfg.samples_per_context, corpus.examples["test"]
    hyps = []
    for idx in data.batch_plan([len(e.response) for e in examples], cfg.batch_size, 0, 0, shuffle=False):
        batch = data.collate([examples[i] for i in idx])
        with data.autocast_for(torch.device("cpu"), cfg.precision)():
            c, x = model.encoder(batch)                                  # (B, Hc), (B, 2H)
            xcK, cK = torch.cat([x, c], -1).repeat_interleave(K, 0), c.repeat_interleave(K, 0)
            ids = dialog.decode(model, model.posterior(xcK, gen), cK, cfg.max_decode_len, cfg.temperature, gen)
        hyps += [[dialog.bleu_tokens(s, corpus.vocab) for s in ids[j * K:(j + 1) * K]] for j in range(len(idx))]
    return hyps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random permutation")
    ap.add_argument("--z", default="prior", choices=["prior", "posterior"], help="decode from p(z|c) or q(z|x,c)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    cfg = dialog.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()})
    vocab = data.Vocab.from_state_dict(ckpt["vocab"])
    corpus = data.load_corpus(cfg.data, cfg.data_dir, ("test",), vocab=vocab, max_context=cfg.max_context)
    vectors = metrics.load_word_vectors(cfg.embeddings, vocab.itos)
    model = dialog.DialogModel(len(vocab), cfg.emb_dim, cfg)
    model.load_state_dict(ckpt["model"])
    row, (_, refs, hyps) = dialog.evaluate(model, corpus, "test", cfg, torch.device("cpu"), vectors)
    if args.z == "posterior":
        hyps = posterior_responses(model, corpus, cfg)
        diagnostics = {k: row[k] for k in ("rec", "rec_prior", "rec_shuffled")}       # the model's, whatever z
        row = dialog.response_scores(hyps, refs, vectors, cfg.bleu_n) | diagnostics
    perm = list(range(len(refs)))
    random.Random(args.seed).shuffle(perm)
    rows = {"own reference": row,
            "neighbour's": dialog.response_scores(hyps, refs[1:] + refs[:1], vectors, cfg.bleu_n),
            "random other's": dialog.response_scores(hyps, [refs[i] for i in perm], vectors, cfg.bleu_n)}
    keys = ["bleu_r", "bleu_p", "bleu_f1", "bleu4_f1", "bleu_nltk34_r", "bleu_nltk34_p", "bleu_nltk34_f1",
            "bow_a", "bow_e", "bow_g"]
    per_epoch = 2725                                                     # DailyDialog batches of 32 (the run's log)
    print(f"checkpoint step {ckpt['step']} (epoch {ckpt['step'] / per_epoch:.1f}); {len(refs)} test contexts, "
          f"{cfg.samples_per_context} responses each, z from the {args.z}; rec {row['rec']:.2f} "
          f"rec_prior {row['rec_prior']:.2f} rec_shuffled {row['rec_shuffled']:.2f}")
    print(f"{'scored against':16s}" + "".join(f"{k:>15s}" for k in keys))
    for name, r in rows.items():
        print(f"{name:16s}" + "".join(f"{r[k]:15.4f}" for k in keys))


if __name__ == "__main__":
    main()

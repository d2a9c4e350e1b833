"""Why eval mode reads worse than batch statistics (bn_probe.py): is it that a training batch holds responses
of one length? On the first N validation responses, each checkpoint's diagnostics (dialog.evaluate) with
    (b) BatchNorm by batch statistics on evaluate's own batches, sorted by response length (as bn_probe.py),
    (d) BatchNorm by batch statistics on batches of mixed lengths (a seeded permutation cut into 32s),
    (c) eval mode with running averages recomputed over R training batches of mixed lengths (a cumulative
        average, momentum None: "precise BN", Wu & Johnson 2021), forward passes as training steps 2-3.
A batch of one keeps the running averages. rec_shuffled rolls the batch by one: in (b) the other response
has the same length, in (d) not, so compare (b) and (d) on rec and rec_prior.

    PYTHONPATH=. python results/dailydialog/authors_in_progress/bn_probe_2.py CKPT [CKPT ...] [--n 2000] [--r 200]
"""
import copy
import sys

import numpy as np
import torch
import torch.nn.functional as F

import data
import dialog

torch.set_num_threads(1)
args, opts = sys.argv[1:], {"--n": 2000, "--r": 200}
for k in opts:
    if k in args:
        i = args.index(k); opts[k] = int(args[i + 1]); args = args[:i] + args[i + 2:]
KEYS = ("rec", "rec_prior", "rec_shuffled", "ppl", "dual")
show = lambda row: " | ".join(f"{k} {row[k]:.2f}" for k in KEYS)


def batch_statistics(model):
    m2 = copy.deepcopy(model)
    for b in m2.modules():
        if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
            b.forward = lambda x, b=b: F.batch_norm(x, None if len(x) > 1 else b.running_mean,
                                                    None if len(x) > 1 else b.running_var, b.weight, b.bias,
                                                    len(x) > 1, 0.0, b.eps)
    return m2


def mixed_plan(lengths, batch_size, seed, epoch, shuffle=True, equal_length=True):
    p = np.random.default_rng(7).permutation(len(lengths)).tolist()
    return [p[i:i + batch_size] for i in range(0, len(p), batch_size)]


for path in args:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dialog.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in ck["config"].items()})
    cfg.eval_limit = opts["--n"]
    vocab = data.Vocab.from_state_dict(ck["vocab"])
    corpus = data.load_corpus(cfg.data, "data", ("train", "valid"), vocab=vocab, max_context=cfg.max_context,
                              verbose=False)
    model = dialog.DialogModel(len(vocab), cfg.emb_dim, cfg)
    model.load_state_dict(ck["model"])
    print(f"{path} step {ck['step']} (epoch {ck['step'] / 2725:.2f}), {opts['--n']} valid responses", flush=True)
    row, _ = dialog.evaluate(batch_statistics(model), corpus, "valid", cfg, torch.device("cpu"), {}, sample=False)
    print("  (b) batch statistics, length-sorted batches:  " + show(row), flush=True)
    sorted_plan, data.batch_plan = data.batch_plan, mixed_plan
    row, _ = dialog.evaluate(batch_statistics(model), corpus, "valid", cfg, torch.device("cpu"), {}, sample=False)
    data.batch_plan = sorted_plan
    print("  (d) batch statistics, mixed-length batches:   " + show(row), flush=True)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    gen, autocast = torch.Generator().manual_seed(1), data.autocast_for(torch.device("cpu"), cfg.precision)
    with torch.no_grad():
        for b in bns:
            b.reset_running_stats()
            b.momentum = None
        model.train()
        model.encoder.eval()                                             # steps 2-3 encode without dropout
        batches = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed, equal_length=False,
                               by_length=False).epoch(0)                 # mixed: each batch's variance ~ the whole's
        for i, batch in zip(range(opts["--r"]), batches):
            if len(batch.lengths) > 1:
                with autocast():
                    c, x = model.encoder(batch)
                    model.critic(model.posterior(torch.cat([x, c], -1), gen), c)
                    model.critic(model.prior(c, gen), c)
        for b in bns:
            b.momentum = 0.1                                             # back to nn.BatchNorm1d's default (M:129)
    row, _ = dialog.evaluate(model, corpus, "valid", cfg, torch.device("cpu"), {}, sample=False)
    print(f"  (c) running averages recomputed on {opts['--r']} training batches:  " + show(row), flush=True)
    print("      running_var max per layer: " + ", ".join(f"{float(b.running_var.max()):.3g}" for b in bns), flush=True)

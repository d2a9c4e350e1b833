"""Epoch 17's validation jump (rec 45.30 -> 58.63): is it the model, or BatchNorm's running averages in eval mode?
Validation diagnostics of dialog.evaluate on the first N validation responses, (a) as the run validates (eval mode,
BatchNorm by running averages) and (b) the same weights with BatchNorm by each batch's statistics (as in training;
a batch of one keeps the running averages).

    PYTHONPATH=. python results/dailydialog/authors_in_progress/bn_probe.py CKPT [CKPT ...] [--n 2000]
"""
import copy
import sys

import torch

import data
import dialog

torch.set_num_threads(1)
args = sys.argv[1:]
n = 2000
if "--n" in args:
    i = args.index("--n"); n = int(args[i + 1]); args = args[:i] + args[i + 2:]
for path in args:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dialog.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in ck["config"].items()})
    cfg.eval_limit = n
    vocab = data.Vocab.from_state_dict(ck["vocab"])
    corpus = data.load_corpus(cfg.data, "data", ("valid",), vocab=vocab, max_context=cfg.max_context, verbose=False)
    model = dialog.DialogModel(len(vocab), cfg.emb_dim, cfg)
    model.load_state_dict(ck["model"])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    row, _ = dialog.evaluate(model, corpus, "valid", cfg, torch.device("cpu"), {}, sample=False)
    print(f"{path} step {ck['step']} (epoch {ck['step'] / 2725:.2f}), {n} valid responses, {len(bns)} BatchNorm layers")
    print("  (a) running averages:  " + " | ".join(f"{k} {row[k]:.2f}" for k in ("rec", "rec_prior", "rec_shuffled", "ppl", "dual")))
    stats = [(float(b.running_var.max()), float(b.running_mean.abs().max())) for b in bns]
    print("  running_var max per layer: " + ", ".join(f"{v:.3g}" for v, _ in stats))
    m2 = copy.deepcopy(model)
    for b in m2.modules():
        if isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
            def fwd(x, b=b):                          # batch statistics; a batch of one keeps the running ones
                return torch.nn.functional.batch_norm(x, None if len(x) > 1 else b.running_mean,
                                                      None if len(x) > 1 else b.running_var, b.weight, b.bias,
                                                      len(x) > 1, 0.0, b.eps)
            b.forward = fwd
    row, _ = dialog.evaluate(m2, corpus, "valid", cfg, torch.device("cpu"), {}, sample=False)
    print("  (b) batch statistics:  " + " | ".join(f"{k} {row[k]:.2f}" for k in ("rec", "rec_prior", "rec_shuffled", "ppl", "dual")), flush=True)

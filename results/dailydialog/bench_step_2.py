r"""Issue 30, second pass: can one dialog.py training iteration get 1.5x faster than "before" at the same model?

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/dailydialog/bench_step_2.py --data_dir ../shared/data \
        | tee results/dailydialog/bench_step_2.txt

bench_step.py's method (its "before" is the reference; bench_step.txt is the first pass): the same model
(dialog.py's default Config), optimisers and DailyDialog training batches, one thread, twin copies of one
model, alternating timed blocks, the process's CPU time. The variants:
    before    dialog.py's encoders at commit 5cb1eca (bench_step.encoder_before): nn.GRU on PackedSequences
    now       dialog.py as committed: gru_final_states, one hand-written loop per GRU direction
    merged    both directions of the utterance BiGRU in one loop (`gru_merged`): the two directions' weights
              stacked, one torch.baddbmm per step for both, the recurrent weights cast to the autocast dtype
              once per call instead of at every step (half the kernels of the loop, forward and backward)
    compiled  merged, with the GRU cell's elementwise part (gates, tanh, lerp) in torch.compile(dynamic=True):
              fused kernels forward and backward; it compiles ~30 graphs (grad or not, fp32 or bf16, D = 1 or 2,
              steps of one row, ...), more than torch's default recompile_limit of 8 (the excess would run
              eagerly), so the limit is raised to 32, and it is warmed on `compile_warmup` batches first
              (the others need no warm-up but get the same); the count is printed
Then where "now" spends an iteration (torch.profiler, self CPU time): the matrix products by layer (GFLOP
and GFLOP/s) and everything else, and one large matrix product's single-thread speed: what share of an
iteration the matrix products alone take, at the speed they run at now and at that speed (the bound).
Last, two ideas timed on their own (dropped_ideas). bench_step_2.txt beside this file is its output, with the
reading at its top. A measurement, not a model script: it imports dialog.py and only swaps its GRU loop in memory.
"""
import argparse
import copy
import os
import platform
import statistics
import sys
import time
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import dialog

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import encoder_before                                    # noqa: E402  the reference


def gru_merged(gru: nn.GRU, x, lengths, embed=None, drop=None, cell=None) -> torch.Tensor:
    """dialog.gru_final_states with the directions in one loop: (D, n_t, H) states, one baddbmm per step."""
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    inp = embed(packed.data) if embed is not None else packed.data
    inp, sizes, H = drop(inp) if drop is not None else inp, packed.batch_sizes, gru.hidden_size
    sfx = ("", "_reverse") if gru.bidirectional else ("",)
    w = lambda name: [getattr(gru, f"{name}_l0{s}") for s in sfx]
    gi = F.linear(inp, torch.cat(w("weight_ih")), torch.cat(w("bias_ih"))).view(len(inp), len(sfx), 3 * H)
    if gru.bidirectional:                                                # the backward direction reads rows reversed
        step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        first = sizes.cumsum(0) - sizes
        row = torch.arange(len(step)) - first[step]
        rows = first[lengths.cpu()[packed.sorted_indices.cpu()][row] - 1 - step] + row
        gi = torch.stack([gi[:, 0], gi[rows.to(inp.device), 1]])       # (D, S, 3H)
    else:
        gi = gi.transpose(0, 1)
    w_hh = torch.stack(w("weight_hh")).transpose(1, 2).to(gi.dtype)     # (D, H, 3H), cast once
    b_hh = torch.stack(w("bias_hh")).unsqueeze(1).to(gi.dtype)          # (D, 1, 3H)
    h, ended = inp.new_zeros(len(sfx), int(sizes[0]), H), []
    for n_t, gi_t in zip(sizes.tolist(), gi.split(sizes.tolist(), 1)):
        ended.append(h[:, n_t:])
        h = h[:, :n_t]
        h = (cell or gru_cell)(gi_t, torch.baddbmm(b_hh, h.to(gi.dtype), w_hh), h)
    h = torch.cat([h] + ended[::-1], 1)                                  # (D, N, H), longest first
    return torch.cat(list(h), -1)[packed.unsorted_indices]


def gru_cell(gi_t, gh, h):
    """torch.nn.GRU's equations given the input and recurrent products (D, n, 3H) and h (D, n, H)."""
    H = h.shape[-1]
    r, z = torch.sigmoid(gi_t[..., :2 * H] + gh[..., :2 * H]).chunk(2, -1)
    n = torch.tanh(gi_t[..., 2 * H:] + r * gh[..., 2 * H:])
    return torch.lerp(n.to(h.dtype), h, z.to(h.dtype))


torch._dynamo.config.recompile_limit = 32                               # default 8: ~30 graphs here (docstring)
compiled_cell = torch.compile(gru_cell, dynamic=True)
GRU = {"now": dialog.gru_final_states, "merged": gru_merged,
       "compiled": lambda *a, **k: gru_merged(*a, **k, cell=compiled_cell)}
VARIANTS = ("before", "now", "merged", "compiled")


def copies(cfg, vocab_size) -> dict:
    """One freshly initialised model per variant (deep copies) with its optimisers."""
    torch.manual_seed(0)
    model = dialog.DialogModel(vocab_size, cfg.emb_dim, cfg)
    out = {}
    for name in VARIANTS:
        m = copy.deepcopy(model)
        if name == "before":
            m.encoder.forward = types.MethodType(encoder_before, m.encoder)
        out[name] = (m, dialog.make_optimizers(m, cfg))
    return out


def time_block(name, model, opts, batches, cfg, autocast) -> tuple:
    """(CPU seconds, wall seconds) per iteration of variant `name` (dialog.py's GRU loop swapped in)."""
    dialog.gru_final_states = GRU.get(name, GRU["now"])
    try:
        t, w = time.process_time(), time.perf_counter()
        for b in batches:
            dialog.train_step(model, opts, b, 1.0, cfg, autocast)
        return (time.process_time() - t) / max(1, len(batches)), (time.perf_counter() - w) / max(1, len(batches))
    finally:
        dialog.gru_final_states = GRU["now"]


def layer_of(shapes: list, cfg, V: int) -> str:
    """Which layer a matrix product belongs to, from its operands' shapes (forward and backward)."""
    dims = {d for s in shapes for d in s}
    H, E, Hd = cfg.utt_hidden, cfg.emb_dim, cfg.latent + cfg.ctx_hidden
    if V in dims:
        return "output layer (500 x 10,005)"
    if 3 * Hd in dims:
        return "decoder GRU"
    if {E, 3 * H} <= dims or {E, 6 * H} <= dims:
        return "utterance BiGRU, input products"
    if 2 * H + 2 in dims:
        return "context GRU, input products"
    if 3 * H in dims:
        return "utterance/context GRU, recurrent"
    return "MLPs (q, p, critic) and the rest"


def dropped_ideas(cfg, V: int, batches: list, reps: int = 6) -> None:
    """Two ideas timed on their own (CPU ms, alternating repetitions): the output layer computed as (W x^T)^T
    (another matrix layout for the same products) with cross-entropy, forward and backward; and the part of
    step 3 that is provably the same at each of its nu_steps critic updates, the Gaussian MLPs of q and p
    (same input, same weights, batch-statistics BatchNorm), whose reuse would still have to replay BatchNorm's
    running-average updates."""
    torch.manual_seed(0)
    model = dialog.DialogModel(V, cfg.emb_dim, cfg)
    b = max(batches, key=lambda b: b.tokens.numel())
    x0, y = torch.randn(b.tokens.shape[0] * (b.tokens.shape[1] - 1), model.out.in_features), b.tokens[:, 1:].reshape(-1)
    ways = {"F.linear": lambda x: model.out(x),
            "(W x^T)^T": lambda x: torch.addmm(model.out.bias.unsqueeze(1), model.out.weight, x.t()).t()}
    xc, c = torch.randn(cfg.batch_size, 2 * cfg.utt_hidden + cfg.ctx_hidden), torch.randn(cfg.batch_size, cfg.ctx_hidden)
    for precision in ("fp32", "auto"):
        autocast = data.autocast_for(torch.device("cpu"), precision)
        t = {k: 0.0 for k in ways}
        for _ in range(reps):
            for k, f in ways.items():
                x = x0.clone().requires_grad_()
                s = time.process_time()
                with autocast():
                    logits = f(x)
                F.cross_entropy(logits.float(), y).backward()
                t[k] += (time.process_time() - s) / reps
        with torch.no_grad(), autocast():
            s = time.process_time()
            for _ in range(reps * 10):
                model.posterior(xc), model.prior(c)
            both = (time.process_time() - s) / reps / 10
            s = time.process_time()
            for _ in range(reps * 10):
                model.posterior.gauss(xc), model.prior.gauss(c)
            gauss = (time.process_time() - s) / reps / 10
        print(f"dropped, {data.precision_in_use(torch.device('cpu'), precision)}: output layer + cross-entropy over "
              f"{len(y)} positions, forward and backward: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in t.items())
              + f"; step 3 draws q and p {cfg.nu_steps} times ({1000 * cfg.nu_steps * both:.1f} ms per iteration), "
              f"the reusable Gaussian MLPs {1000 * (cfg.nu_steps - 1) * gauss:.1f} ms of it")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--steps", type=int, default=6, help="iterations per timed block")
    ap.add_argument("--rounds", type=int, default=4, help="timed blocks of each variant, alternating")
    ap.add_argument("--compile_warmup", type=int, default=12, help="warm-up iterations (torch.compile's recompiles)")
    ap.add_argument("--profile_steps", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread; load average "
          f"at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    corpus = data.load_corpus("dailydialog", args.data_dir, ("train",), max_context=10, verbose=False)
    cfg, V = dialog.Config(), len(corpus.vocab)
    n = args.compile_warmup + args.steps * args.rounds
    batches = []
    for b in data.Batcher(corpus.examples["train"], cfg.batch_size, seed=0, equal_length=False).epoch(0):
        batches.append(b)
        if len(batches) == n:
            break
    pad = sum(b.tokens.numel() - b.tokens.shape[0] for b in batches) - sum(int((b.lengths - 1).sum()) for b in batches)
    print(f"DailyDialog train, vocabulary {V:,}, batch {cfg.batch_size}; the {len(batches)} batches: "
          f"{statistics.mean(int(b.utt_lengths.sum()) for b in batches):.0f} context tokens and "
          f"{statistics.mean(int(b.lengths.sum()) for b in batches):.0f} response tokens on average; padded "
          f"response positions fed to the output layer: {pad} (so no logits to save there)")

    m = copies(cfg, V)
    with torch.no_grad():
        for model, _ in m.values():
            model.eval()
        ref = m["now"][0].encoder(batches[0])
        for name in ("before", "merged", "compiled"):
            dialog.gru_final_states = GRU.get(name, GRU["now"])
            c, x = m[name][0].encoder(batches[0])
            dialog.gru_final_states = GRU["now"]
            print(f"same function (dropout off), {name} vs now: max |c - c_now| {float((c - ref[0]).abs().max()):.2e}, "
                  f"max |x - x_now| {float((x - ref[1]).abs().max()):.2e}")

    cpu = torch.device("cpu")
    for precision in ("fp32", "auto"):
        used = data.precision_in_use(cpu, precision)
        if precision == "auto" and used == "fp32":
            print("--precision auto: fp32 on this CPU (no native bf16), timed above")
            continue
        autocast = data.autocast_for(cpu, precision)
        m = copies(cfg, V)
        times = {k: [] for k in VARIANTS}
        w = time.perf_counter()
        for name, (model, opts) in m.items():
            time_block(name, model, opts, batches[:args.compile_warmup], cfg, autocast)
        print(f"--precision {precision} ({used}): warm-up {time.perf_counter() - w:.0f} s wall (torch.compile's); "
              f"graphs compiled so far: {torch._dynamo.utils.counters['stats']['unique_graphs']}")
        for r in range(args.rounds):
            block = batches[args.compile_warmup + r * args.steps:args.compile_warmup + (r + 1) * args.steps]
            for name, (model, opts) in m.items():
                times[name].append(time_block(name, model, opts, block, cfg, autocast))
        print(f"    {args.rounds} x {args.steps} iterations each, per iteration (CPU time of this process; wall in brackets):")
        mean = {k: [statistics.mean(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
        for name in VARIANTS:
            print(f"    {name:8s} {1000 * mean[name][0]:5.0f} ms CPU ({1 / mean[name][0]:.2f} it/s) [wall "
                  f"{1000 * mean[name][1]:5.0f} ms]; {mean['before'][0] / mean[name][0]:.2f}x before, "
                  f"{mean['now'][0] / mean[name][0]:.2f}x now; blocks vs now "
                  f"{' '.join(f'{a[0] / b[0]:.2f}' for a, b in zip(times['now'], times[name]))}")
        print(f"    1.5x before would be {1000 * mean['before'][0] / 1.5:.0f} ms: {mean['now'][0] / mean['before'][0] * 1.5:.2f}x "
              "faster than now")

    from torch.profiler import ProfilerActivity, profile
    a = torch.randn(2048, 2048)
    for precision in ("fp32", "auto"):
        used = data.precision_in_use(cpu, precision)
        if precision == "auto" and used == "fp32":
            continue
        autocast = data.autocast_for(cpu, precision)
        big = a.to(torch.bfloat16 if used == "bf16" else torch.float32)
        t = time.process_time()
        for _ in range(3):
            big @ big
        peak = 3 * 2 * 2048 ** 3 / (time.process_time() - t) / 1e9
        model, opts = copies(cfg, V)["now"]
        time_block("now", model, opts, batches[:2], cfg, autocast)
        plain = time_block("now", model, opts, batches[2:2 + args.profile_steps], cfg, autocast)[0]
        with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
            time_block("now", model, opts, batches[2:2 + args.profile_steps], cfg, autocast)
        layers, other, k, casts = {}, 0.0, args.profile_steps, [0.0, 0.0]
        for e in prof.events():
            if e.name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
                row = layers.setdefault(layer_of([s for s in e.input_shapes if s], cfg, V), [0.0, 0.0])
                row[0] += e.self_cpu_time_total / 1e6 / k
                row[1] += (e.flops or 0) / 1e9 / k
            else:
                other += e.self_cpu_time_total / 1e6 / k
                if e.name == "aten::copy_":                              # dtype casts, mostly
                    big = max((torch.Size(s).numel() for s in e.input_shapes if s), default=0) >= V * 100
                    casts[big] += e.self_cpu_time_total / 1e6 / k
        mm, flop = sum(r[0] for r in layers.values()), sum(r[1] for r in layers.values())
        print(f"profile of now, {used}, the same {k} iterations again (now {1000 * plain:.0f} ms CPU each without the "
              f"profiler): matrix products {1000 * mm:.0f} ms for {flop:.1f} GFLOP ({flop / mm:.0f} GFLOP/s; one 2048^3 "
              f"product: {peak:.0f} GFLOP/s here), the other operators {1000 * other:.0f} ms (self CPU, inflated by the "
              f"profiler). The matrix products alone, at the speed they run at now, are {mm / plain:.0%} of an "
              f"iteration; at the 2048^3 speed {flop / peak / plain:.0%}. By layer (ms, GFLOP, GFLOP/s):")
        for name, (s, f) in sorted(layers.items(), key=lambda kv: -kv[1][0]):
            print(f"    {name:36s} {1000 * s:6.1f} ms {f:6.2f} GFLOP {f / s:6.0f} GFLOP/s")
        print(f"    copies (dtype casts, mostly): {1000 * casts[1]:.1f} ms of tensors of >= 1M elements (the output layer's "
              f"weight, its gradient, the logits to fp32 and back), {1000 * casts[0]:.1f} ms of the others")
    dropped_ideas(cfg, V, batches)
    print(f"# load average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

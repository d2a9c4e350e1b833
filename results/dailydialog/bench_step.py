r"""Speed of one dialog.py training iteration on the CPU, before and after issue 30's speed-up, in one run.

    PYTHONPATH=. python results/dailydialog/bench_step.py --data_dir ../shared/data \
        | tee results/dailydialog/bench_step.txt

The same model (dialog.py's default Config: the authors' sizes, embedding 200), the same optimisers and the
same DailyDialog training batches (the first of epoch 0, batch 32), one thread. Two implementations of the
encoders, which compute the same function (checked below with dropout off):
    before  dialog.py's encoders as they were (commit 5cb1eca), on the new model: nn.GRU on PackedSequences;
            dropout on the padded (B*C, U, E) embeddings; every context slot encoded, an empty one as one
            token; the responses in a second pass
    after   dialog.py now: gru_final_states (nn.GRU's equations on nn.GRU's weights, the input products of
            all tokens in one matrix product); embedding and dropout of real tokens only; empty slots skipped;
            responses and contexts in one pass
Each precision (fp32, and bf16 where --precision auto picks it) times `rounds` alternating blocks of
`steps` iterations (before, after, before, after, ...) on twin copies of one model, after `warmup` each.
Then torch.profiler over `profile_steps` iterations of each, fp32: the top operators by self CPU time.
A measurement, not a model script: it imports dialog.py. The load average is printed: on a shared CPU
the ratio (before and after alternate, so both see the same load) is what to read, not the seconds; the
process's CPU time is steadier than the wall clock there, the profiler's per-operator times are wall clock.
bench_step.txt beside this file is its output (issue 30).
"""
import argparse
import copy
import os
import platform
import statistics
import time
import types

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

import data
import dialog


def encoder_before(enc: dialog.ContextEncoder, batch: data.Batch) -> tuple:
    """dialog.py's encoders before (commit 5cb1eca), on the new model's modules: the same function."""
    B, C, U = batch.context.shape

    def utterances(tokens, lengths):                                     # (N, L) -> (N, 2H)
        packed = pack_padded_sequence(enc.drop(enc.emb(tokens)), lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, h = enc.utt_rnn(packed)                                       # (2, N, H)
        return torch.cat([h[0], h[1]], -1)

    utt = utterances(batch.context.view(B * C, U)[:, 1:], batch.utt_lengths.view(-1) - 1).view(B, C, -1)
    inp = enc.ctx_drop(torch.cat([utt, F.one_hot(batch.speakers, 2).to(utt.dtype)], -1))
    packed = pack_padded_sequence(inp, batch.context_lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, h = enc.ctx_rnn(packed)
    return h[-1], utterances(batch.tokens[:, 1:], batch.lengths - 1)


def twins(cfg, vocab_size):
    """Two copies of one freshly initialised model with their optimisers: 'before' and 'after'."""
    torch.manual_seed(0)
    model = dialog.DialogModel(vocab_size, cfg.emb_dim, cfg)
    out = {}
    for name in ("before", "after"):
        m = copy.deepcopy(model)
        if name == "before":
            m.encoder.forward = types.MethodType(encoder_before, m.encoder)
        out[name] = (m, dialog.make_optimizers(m, cfg))
    return out


def time_block(model, opts, batches, cfg, autocast) -> tuple:
    """(CPU seconds, wall seconds) per iteration. On a shared CPU the process's CPU time is the steadier
    measure (one thread: the seconds it computed, not those it waited for a core)."""
    t, w = time.process_time(), time.perf_counter()
    for b in batches:
        dialog.train_step(model, opts, b, 1.0, cfg, autocast)
    return (time.process_time() - t) / max(1, len(batches)), (time.perf_counter() - w) / max(1, len(batches))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--steps", type=int, default=6, help="iterations per timed block")
    ap.add_argument("--rounds", type=int, default=4, help="timed blocks of each implementation, alternating")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile_steps", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread; load average "
          f"at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    corpus = data.load_corpus("dailydialog", args.data_dir, ("train",), max_context=10, verbose=False)
    cfg = dialog.Config()
    n = args.warmup + args.steps * args.rounds
    batches = []
    for b in data.Batcher(corpus.examples["train"], cfg.batch_size, seed=0, equal_length=False).epoch(0):
        batches.append(b)
        if len(batches) == max(n, args.profile_steps):
            break
    print(f"DailyDialog train, vocabulary {len(corpus.vocab):,}, batch {cfg.batch_size}; the {len(batches)} batches: "
          f"{statistics.mean(int(b.utt_lengths.sum()) for b in batches):.0f} context tokens and "
          f"{statistics.mean(int(b.lengths.sum()) for b in batches):.0f} response tokens on average")

    m = twins(cfg, len(corpus.vocab))
    for model, _ in m.values():
        model.eval()
    with torch.no_grad():
        (c0, x0), (c1, x1) = (m[k][0].encoder(batches[0]) for k in ("before", "after"))
    print(f"same function (dropout off): max |c before - c after| {float((c0 - c1).abs().max()):.2e}, "
          f"max |x before - x after| {float((x0 - x1).abs().max()):.2e}")

    cpu = torch.device("cpu")
    for precision in ("fp32", "auto"):
        used = data.precision_in_use(cpu, precision)
        if precision == "auto" and used == "fp32":
            print("--precision auto: fp32 on this CPU (no native bf16), timed above")
            continue
        autocast = data.autocast_for(cpu, precision)
        m = twins(cfg, len(corpus.vocab))
        times = {"before": [], "after": []}
        for name, (model, opts) in m.items():
            time_block(model, opts, batches[:args.warmup], cfg, autocast)
        for r in range(args.rounds):
            block = batches[args.warmup + r * args.steps:args.warmup + (r + 1) * args.steps]
            for name, (model, opts) in m.items():
                times[name].append(time_block(model, opts, block, cfg, autocast))
        print(f"--precision {precision} ({used}), {args.rounds} x {args.steps} iterations each, per iteration "
              "(CPU time of this process; wall time in brackets):")
        mean = {k: [statistics.mean(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
        for name in ("before", "after"):
            print(f"    {name:6s} {1000 * mean[name][0]:5.0f} ms CPU ({1 / mean[name][0]:.2f} it/s) [wall "
                  f"{1000 * mean[name][1]:5.0f} ms]; blocks {' '.join(f'{1000 * t[0]:.0f}' for t in times[name])} ms CPU")
        print(f"    after / before: {mean['before'][0] / mean['after'][0]:.2f}x the iterations per CPU second "
              f"[{mean['before'][1] / mean['after'][1]:.2f}x per wall second]; blockwise (CPU) "
              f"{' '.join(f'{b[0] / a[0]:.2f}' for b, a in zip(times['before'], times['after']))}")
        print(f"    2,725 iterations (an epoch): {2725 * mean['before'][0] / 60:.1f} min before, "
              f"{2725 * mean['after'][0] / 60:.1f} min after, in CPU time (training only)")

    from torch.profiler import ProfilerActivity, profile
    m = twins(cfg, len(corpus.vocab))
    autocast = data.autocast_for(cpu, "fp32")
    for name, (model, opts) in m.items():
        time_block(model, opts, batches[:args.warmup], cfg, autocast)
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            time_block(model, opts, batches[:args.profile_steps], cfg, autocast)
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        gemm = [e for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
        print(f"profile, {name}, fp32, {args.profile_steps} iterations: {total / 1e6 / args.profile_steps:.2f} s "
              f"self CPU per iteration (wall clock inside each operator: a shared CPU inflates it), of which matrix "
              f"products {sum(e.self_cpu_time_total for e in gemm) / 1e6 / args.profile_steps:.2f} s for "
              f"{sum(e.flops for e in gemm) / 1e9 / args.profile_steps:.1f} GFLOP; top operators (self CPU per "
              "iteration, calls per iteration):")
        for e in rows:
            print(f"    {e.key:32s} {e.self_cpu_time_total / 1e3 / args.profile_steps:8.1f} ms "
                  f"{e.count / args.profile_steps:8.0f}")
    print(f"# load average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

r"""Training-step benchmark of vae.py, ivae.py and ivae_mi.py: the paper's Table 3 ("Re." column).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019,
Table 3: iVAE costs 1.3-1.4x a Gaussian VAE per step. The extra cost is the critics: nu_steps updates of
two small MLPs per step, which on a GPU are bound by kernel launches rather than arithmetic; there the
scripts replay each training step from a CUDA graph (data.CudaGraphs), and `--cuda_graph off` times
the steps run eagerly. With graphs the timed batches are first run
twice untimed, so that every shape they hold is recorded: a 40-epoch run meets each shape hundreds of
times and records it once.

Each model is built with its script's default settings for the corpus (the authors' sizes), and runs
its own `train_step` on the *same* batches, in one process: a few warm-up steps, then `--steps` timed
steps. Reported per model: ms/step, tokens/s (words and </s>), sentences/s, peak memory, and the ratio
of ms/step to vae.py's.

Run
    python bench.py --data ptb --quick            # < 1 min on a CPU
    python bench.py --data ptb --cuda              # on a GPU
Writes results/bench/<device>_<date>.json (device, torch version, date, command, table) unless --no_save.

This is a harness, not a model script: it imports the three model scripts to time their own code.
"""
import datetime
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass

import torch

import data
import ivae
import ivae_mi
import vae
from data import option

MODELS = ("vae", "ivae", "ivae_mi", "ivae_ac")   # ivae_ac: ivae.py --kl_estimator ac


@dataclass
class Config:
    data: str = option("ptb", "corpus (its training split supplies the batches)")
    data_dir: str = option("data", "where corpora are looked for first (then $IVAE_DATA_DIR)")
    seed: int = option(0, "seed of the models' initialisation and of the batch order")
    cuda: bool = option(False, "insist on a CUDA GPU (an error if there is none)")
    cpu: bool = option(False, "run on the CPU even if a GPU is present")
    threads: int = option(0, "CPU threads torch may use (0: all cores; 1 when other work shares the machine)")
    precision: str = option("fp32", "fp32, or bf16 autocast of the LSTMs and Linear layers", choices=["fp32", "bf16"])
    steps: int = option(100, "timed training steps per model")
    warmup: int = option(10, "untimed steps per model before timing (allocator, cuDNN autotune)")
    quick: bool = option(False, "10 timed steps after 2 warm-up steps (under a minute on a CPU)")
    models: tuple = option(MODELS, f"which models, among {', '.join(MODELS)}", nargs="+")
    cuda_graph: str = option("step", "on a GPU, as the scripts' --cuda_graph: replay the whole step (step) or "
                                     "nothing (off)", choices=["step", "off"])
    out_dir: str = option("results/bench", "where the JSON result goes")
    no_save: bool = option(False, "print the table only")


def build(name: str, corpus: data.Corpus, device, precision: str, cuda_graph: str = "off"):
    """The script's default config for the corpus, its model and optimisers, and a step function that
    runs as the script's train() runs it (the same data.CudaGraphs wrapping)."""
    module = {"vae": vae, "ivae": ivae, "ivae_mi": ivae_mi, "ivae_ac": ivae}[name]
    cfg = data.lm_defaults(module.Config(data=corpus.spec.name, precision=precision, cuda_graph=cuda_graph),
                           corpus.spec.name)
    if name == "ivae_ac":
        cfg.kl_estimator = "ac"
    graphs = cuda_graph if device.type == "cuda" else "off"
    if name == "vae":                            # build() sets --precision's autocast and Adam for the graph
        model, opt = module.build(cfg, len(corpus.vocab), device)
        step = data.CudaGraphs(module.train_step, enabled=graphs == "step")
        return lambda batch: step(model, opt, batch.tokens, batch.lengths, 1.0, cfg)
    model, nu_xz, nu_z, opt, nu_opt = module.build(cfg, len(corpus.vocab), device)
    train_step = module.ac_train_step if name == "ivae_ac" else module.train_step
    step = data.CudaGraphs(train_step, enabled=graphs == "step" and name != "ivae_ac")
    return lambda batch: step(model, nu_xz, nu_z, opt, nu_opt, batch.tokens, batch.lengths, 1.0, cfg)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(name: str, corpus: data.Corpus, batches: list, warmup: int, seed: int, device,
               precision: str = "fp32", cuda_graph: str = "off") -> dict:
    data.set_seed(seed)
    step = build(name, corpus, device, precision, cuda_graph)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = batches[warmup:]
    untimed = batches[:warmup] + (2 * timed if device.type == "cuda" and cuda_graph == "step" else [])
    for batch in untimed:                            # with graphs: each timed shape run eagerly, then recorded
        step(batch)
    sync(device)
    start = time.perf_counter()
    for batch in timed:
        out = step(batch)
    float(out["loss"])                                                   # wait for the last step's work
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(int((b.lengths - 1).sum()) for b in timed)
    sentences = sum(len(b.lengths) for b in timed)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)   # CPU: the process's peak RSS
    return {"ms_per_step": 1000 * seconds / len(timed), "tokens_per_s": tokens / seconds,
            "sentences_per_s": sentences / seconds, "peak_memory_mb": peak / 2 ** 20, "timed_steps": len(timed)}


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "Benchmark the training steps of vae.py, ivae.py, ivae_mi.py", argv)
    if cfg.quick:
        cfg.steps, cfg.warmup = 10, 2
    if cfg.steps < 1 or cfg.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    bad = [m for m in cfg.models if m not in MODELS]
    if bad or not cfg.models:
        parser.error(f"--models takes some of {', '.join(MODELS)}")
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    if not cfg.no_save:
        data.check_writable_dir(cfg.out_dir, parser)                     # before minutes of timing
    try:
        corpus = data.load_corpus(cfg.data, cfg.data_dir, ("train",))
    except data.DataError as err:
        parser.error(str(err))
    batcher = data.Batcher(corpus.examples["train"], 32, seed=cfg.seed)
    batches = [b.to(device) for _, b in zip(range(cfg.warmup + cfg.steps), batcher.epoch(0))]
    described = data.describe_device(device)
    print(f"device: {described}; {cfg.warmup} warm-up + {cfg.steps} timed steps of batch 32 from {corpus.spec.name}")
    table = {}
    for name in cfg.models:
        table[name] = time_model(name, corpus, batches, cfg.warmup, cfg.seed, device, cfg.precision,
                                 cfg.cuda_graph)
    base = table.get("vae", {}).get("ms_per_step")
    print(f"{'model':<9}{'ms/step':>10}{'tokens/s':>11}{'sent/s':>9}{'peak MB':>9}{'vs vae':>8}")
    for name, r in table.items():
        r["ratio_to_vae"] = r["ms_per_step"] / base if base else None
        ratio = f"{r['ratio_to_vae']:.2f}x" if base else "-"
        print(f"{name:<9}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>11.0f}{r['sentences_per_s']:>9.1f}"
              f"{r['peak_memory_mb']:>9.0f}{ratio:>8}")
    result = {"device": described, "torch": torch.__version__, "python": platform.python_version(),
              "date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv if argv is None
                                                                                      else ["bench.py", *argv]),
              "corpus": corpus.spec.name, "precision": cfg.precision,
              "cuda_graph": cfg.cuda_graph if device.type == "cuda" else "off",
              "batch_size": 32, "warmup": cfg.warmup,
              "steps": cfg.steps, "table": table}
    if not cfg.no_save:
        os.makedirs(cfg.out_dir, exist_ok=True)
        tag = "cuda" if device.type == "cuda" else "cpu"
        tag += f"_graph-{cfg.cuda_graph}" if device.type == "cuda" else ""
        path = os.path.join(cfg.out_dir, f"{tag}_{cfg.precision}_{torch.get_num_threads()}t_{result['date']}"
                                         f"{'_quick' if cfg.quick else ''}.json")
        data.write_json(path, result)
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    data.run_script(main)

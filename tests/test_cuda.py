"""The GPU path, run where a CUDA GPU is present and skipped elsewhere (CI has none): each script trains,
tests and writes its files under --cuda (bf16 autocast, the default there), a run interrupted and resumed
on the GPU ends where the uninterrupted one ends (to a relative 1e-3: PyTorch does not promise bit-for-bit
CUDA runs, e.g. the embeddings' backward adds with atomics), and a checkpoint trained on the GPU
re-evaluates with --eval_only --cpu."""
import copy
import json
import math
import pathlib
import sys

import pytest
import torch

import data
import dialog
import ivae
import ivae_mi
import style_transfer

sys.path.insert(0, str(pathlib.Path(__file__).parent))   # the CPU tests' TINY flags and fixtures (importlib mode)
import test_dialog  # noqa: E402
import test_ivae  # noqa: E402
import test_ivae_mi  # noqa: E402
import test_style_transfer  # noqa: E402
import test_vae  # noqa: E402
import vae  # noqa: E402
from test_dialog import dialog_dir  # noqa: F401  (the fixtures, shared with the CPU tests)
from test_style_transfer import style_dir  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def on_gpu(flags):
    return ["--cuda" if f == "--cpu" else f for f in flags]


def assert_same_run(resumed, straight, rel=1e-3):
    """Every number within rel (GPU rounding), every other value equal; the wall time and device aside."""
    for key, want in straight.items():
        if key in ("train_time_s", "device", "test_seconds"):
            continue
        got = resumed[key]
        if isinstance(want, float) and math.isfinite(want):
            assert got == pytest.approx(want, rel=rel, abs=1e-3), (key, got, want)
        else:
            assert got == want, (key, got, want)


def test_auto_precision_is_bf16_on_this_gpu():
    assert data.precision_in_use(torch.device("cuda"), "auto") == "bf16"


@pytest.mark.parametrize("script, tiny, steps", [
    (vae, test_vae.TINY, "9"), (ivae, test_ivae.TINY, "9"), (ivae_mi, test_ivae_mi.TINY, "9")])
def test_ptb_scripts_on_the_gpu(corpus_dir, tmp_path, script, tiny, steps):
    def run(out, *extra):
        return script.main(["--data", corpus_dir, "--out_dir", str(tmp_path / out), *on_gpu(tiny), "--epochs", "2",
                            *extra])
    straight = run("a")
    assert straight["device"].startswith("cuda") and math.isfinite(straight["nelbo"]), straight
    run("b", "--max_steps", steps)
    assert_same_run(run("b", "--resume"), straight)
    for name in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "best.pt", "samples.txt", "curves.png"):
        assert (tmp_path / "a" / name).exists(), name
    # Trained on the GPU, evaluated on the CPU (in fp32 there: --precision fp32).
    on_cpu = script.main(["--data", corpus_dir, "--out_dir", str(tmp_path / "a"), *tiny, "--epochs", "2",
                          "--eval_only", "--precision", "fp32"])
    assert on_cpu["device"].startswith("cpu")
    assert on_cpu["nelbo"] == pytest.approx(straight["nelbo"], rel=0.05), (on_cpu["nelbo"], straight["nelbo"])


def test_ivae_mi_affine_exact_diagnostics_on_the_gpu(corpus_dir, tmp_path):
    res = ivae_mi.main(["--data", corpus_dir, "--out_dir", str(tmp_path), *on_gpu(test_ivae_mi.TINY),
                        "--epochs", "1", "--encoder_layers", "0"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert res["device"].startswith("cuda")
    assert all(math.isfinite(v) for v in saved.values() if isinstance(v, float))
    # the exact diagnostics of the affine encoder ran on the GPU: exact MI within [0, log N], KL >= its bound
    assert 0.0 <= saved["mi_exact"] <= saved["log_n"] + 1e-6 and saved["kl_exact"] >= saved["kl_lower"] - 1e-3


def test_style_transfer_on_the_gpu(style_dir, tmp_path):  # noqa: F811
    def run(out, *extra):
        return style_transfer.main(["--data_dir", style_dir, "--out_dir", str(tmp_path / out), "--classifier_dir",
                                    str(tmp_path / "clf"), *on_gpu(test_style_transfer.TINY), "--epochs", "2", *extra])
    straight = run("a")
    assert straight["device"].startswith("cuda")
    run("b", "--max_steps", "11")
    assert_same_run(run("b", "--resume"), straight)
    assert (tmp_path / "a" / "transfers.txt").exists()


def test_dialog_on_the_gpu(dialog_dir, tmp_path):  # noqa: F811
    def run(out, *extra):
        return dialog.main(["--data_dir", dialog_dir, "--out_dir", str(tmp_path / out), "--embeddings",
                            f"{dialog_dir}/vec.txt", *on_gpu(test_dialog.TINY), *extra])
    straight = run("a")
    assert straight["device"].startswith("cuda")
    run("b", "--max_steps", "3")
    assert_same_run(run("b", "--resume"), straight)
    res = dialog.main(["--out_dir", str(tmp_path / "a"), "--eval_only", "--context", "hi .",
                       "--samples_per_context", "10", "--cpu"])               # a GPU checkpoint answers on the CPU
    assert res["context"] == ["hi ."] and len(res["responses"]) == 10


def graphed_steps(script, cfg, mode: str):
    """A step function as the script's train() builds it: `mode` = step / off (data.CudaGraphs). build()
    returns the modules and optimisers that train_step takes first, in its order."""
    torch.manual_seed(0)
    cfg.cuda_graph, cfg.precision = mode, "fp32"
    built = script.build(cfg, 20, torch.device("cuda"))
    step = data.CudaGraphs(script.train_step, enabled=mode == "step")
    return (lambda x, n, b: step(*built, x, n, b, cfg)), step, [m for m in built if isinstance(m, torch.nn.Module)]


@pytest.mark.parametrize("script", [vae, ivae, ivae_mi], ids=["vae-step", "ivae-step", "ivae_mi-step"])
def test_steps_replayed_from_cuda_graphs_match_the_eager_ones(script):
    # data.CudaGraphs runs the first 3 calls and the first call of each batch shape eagerly, records a shape
    # at its second call and replays it after. 16 training steps over three shapes (lengths 7 and 9 of 6
    # sentences, a last partial batch of 4), interleaved, with dropout and a changing beta, must leave every
    # weight where the eager steps leave it and report the same losses, from the same start and randomness.
    common = dict(emb_dim=16, hidden=16, latent=4, init_range=0.1, dropout=0.3, batch_size=6)
    cfg = (vae.Config(**common) if script is vae else
           script.Config(**common, noise_dim=4, encoder_width=16, nu_width=32, nu_layers=2, nu_lr=1e-3))
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(3)
    shapes = [(6, 7), (6, 9), (6, 7), (4, 7), (6, 9), (6, 7), (6, 9), (4, 7)] * 2
    batches = [data.collate([[1] + torch.randint(3, 20, (t - 2,), generator=gen).tolist() + [2] for _ in range(b)])
               .to(device) for b, t in shapes]
    runs = []
    for m in ("off", "step"):
        call, wrapper, modules = graphed_steps(script, cfg, m)
        torch.manual_seed(1)
        outs = [call(batch.tokens, batch.lengths, 0.5 + 0.03 * i) for i, batch in enumerate(batches)]
        runs.append(([copy.deepcopy(mod.state_dict()) for mod in modules], [float(o["loss"]) for o in outs],
                     len(wrapper.graphs)))
    (eager, loss0, _), (graphed, loss1, n_graphs) = runs
    assert n_graphs == 3                                     # every shape recorded
    for a, b in zip(eager, graphed):
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6), key
    assert loss0 == pytest.approx(loss1, rel=1e-5, abs=1e-6)

"""toy.py: a short run writes the figures; the grid likelihood obeys Gibbs' inequality; the VAE's -ELBO
bounds the exact -log p(x)."""
import json
import math

import pytest

import toy


def test_short_run(tmp_path):
    out = tmp_path / "toy"
    results = toy.main(["--out_dir", str(out), "--cpu", "--max_steps", "60", "--plot_samples", "50"])
    for name in ("toy_vae.png", "toy_ivae.png", "toy_ivae_mi.png", "toy_all.png", "metrics.json"):
        assert (out / name).exists(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert {m: pytest.approx(v) for m, v in saved.items()} == results
    for name, r in results.items():
        # no model of the uniform distribution over 4 points beats its entropy, log 4
        assert r["nll_exact"] >= math.log(4) - 1e-3, name
    # the VAE's -ELBO (exact KL) is an upper bound on the exact -log p(x)
    assert results["vae"]["objective"] >= results["vae"]["nll_exact"] - 0.02


def test_bad_models_flag(tmp_path, capsys):
    with pytest.raises(SystemExit):
        toy.main(["--out_dir", str(tmp_path), "--models", "gan"])
    assert "--models" in capsys.readouterr().err

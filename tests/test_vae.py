"""vae.py: annealing schedules against hand values, the IW bound against the ELBO, and tiny end-to-end
main([...]) runs including resume, sampling, interpolation and bad flags."""
import json

import pytest
import torch

import data
import metrics
import vae

TINY = ["--emb_dim", "16", "--hidden", "16", "--latent", "4", "--batch_size", "8", "--eval_samples", "8",
        "--iw_samples", "16", "--val_iw_samples", "4", "--log_every", "5", "--cpu", "--num_samples", "3",
        "--max_decode_len", "12"]


def run(corpus_dir, out_dir, *extra):
    return vae.main(["--data", corpus_dir, "--out_dir", str(out_dir), *TINY, *extra])


def test_monotonic_schedule_hand_values():
    cfg = vae.Config(anneal="monotonic", beta_start=0.1, warmup_epochs=2)
    assert [vae.beta_at(s, 10, 400, cfg) for s in (0, 5, 10, 20, 35)] == pytest.approx([0.1, 0.325, 0.55, 1, 1])
    capped = vae.Config(anneal="monotonic", beta=0.5, beta_start=0.1, warmup_epochs=2)
    assert [vae.beta_at(s, 10, 400, capped) for s in (0, 5, 10, 20)] == pytest.approx([0.1, 0.325, 0.5, 0.5])


def test_cyclical_schedule_hand_values():
    # Fu et al. (2019): T = 100 steps, M = 4 cycles of 25, R = 0.5: beta rises over 12.5 steps, then 1.
    cfg = vae.Config(anneal="cyclical", cycles=4, ratio=0.5)
    got = [vae.beta_at(s, 10, 100, cfg) for s in (0, 5, 10, 12, 13, 24, 25, 30, 99)]
    assert got == pytest.approx([0, 0.4, 0.8, 0.96, 1, 1, 0, 0.4, 1])
    half = vae.Config(anneal="cyclical", cycles=4, ratio=0.5, beta=0.5)
    assert vae.beta_at(30, 10, 100, half) == pytest.approx(0.2)
    assert vae.beta_at(7, 10, 100, vae.Config(anneal="none", beta=0.5)) == 0.5


def vae_iw(model, x, mu, logvar, K, seed):
    """The IW bound of each sentence as vae.evaluate computes it: K samples of q(z|x) = N(mu, diag
    exp(logvar)) drawn by the model's posterior, q itself the proposal (metrics.LMEvaluation.add_gaussian)."""
    with torch.no_grad():
        model.posterior.linear.weight.zero_()                            # q(z|x) = N(mu, logvar) whatever h
        model.posterior.linear.bias.copy_(torch.cat([mu[0], logvar[0]]))
    iw = []
    for i in range(len(x)):
        ev = metrics.LMEvaluation(torch.device("cpu"), seed=seed, n_samples=K)
        with torch.no_grad():
            q_mu, q_logvar, z = model(x[i:i + 1], torch.tensor([x.shape[1]]), K, ev.gen)   # (1, Z), (1, Z), (1, K, Z)
            ev.add_gaussian(q_mu, q_logvar, -metrics.chunked_nll(model.nll, x[i:i + 1], z, 1000), z)
        iw.append(ev.tot["iw"])
    return torch.tensor(iw, dtype=torch.float64)


def test_iw_bound_is_tighter_than_the_elbo_and_exact_for_a_linear_decoder_free_case():
    # With the decoder ignoring z, p(x|z) = p(x): log p(x) = -nll exactly, and every importance weight
    # p(x) p(z) / q(z|x) has mean p(x); with q = p (mu 0, logvar 0) the bound is exact.
    torch.manual_seed(0)
    model = vae.VAE(vae.Config(emb_dim=4, hidden=4, latent=3, dropout=0.0), vocab_size=10).eval()
    with torch.no_grad():
        model.decoder.z_to_h.weight.zero_()
        model.decoder.rnn.weight_ih_l0[:, 4:].zero_()                    # z does not enter the LSTM
    x = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2]])
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    with torch.no_grad():
        nll = model.nll(x, torch.zeros(2, 3)).double()
    iw = vae_iw(model, x, mu, logvar, 50, seed=0)
    torch.testing.assert_close(iw, nll)
    # A Gaussian posterior away from the prior: IW-NLL (K = 200) <= -ELBO = rec + KL.
    mu2, logvar2 = torch.full((2, 3), 1.0), torch.full((2, 3), -1.0)
    elbo = nll + metrics.gaussian_kl(mu2, logvar2).double()
    iw2 = vae_iw(model, x, mu2, logvar2, 200, seed=0)
    assert torch.all(iw2 < elbo) and torch.all(iw2 >= nll - 1e-6)


def test_train_step_is_eq_3_with_the_reparameterised_sample():
    # One step by hand: the same z (same seed), rec = -log p(x|z), KL in closed form (checked against
    # torch.distributions), loss = rec + beta * KL; and the optimiser moved the weights.
    torch.manual_seed(0)
    cfg = vae.Config(emb_dim=4, hidden=4, latent=3, dropout=0.0, batch_size=2)
    model, opt = vae.build(cfg, 10, torch.device("cpu"))
    x, lengths = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2]]), torch.tensor([4, 4])
    torch.manual_seed(1)
    with torch.no_grad():
        mu, logvar, z = model(x, lengths)
        rec = model.nll(x, z[:, 0]).mean()
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(1)
    out = vae.train_step(model, opt, x, lengths, 0.3, cfg)
    assert float(out["rec"]) == pytest.approx(float(rec), rel=1e-6)
    assert float(out["KL"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(rec + 0.3 * kl), rel=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_no_importance_samples_leaves_the_iw_columns_out(corpus_dir, tmp_path):
    # --iw_samples 0 / --val_iw_samples 0: no IW bound, the rest of the row (MI from each sentence's first
    # sample) as usual; validation selects on -ELBO.
    result = run(corpus_dir, tmp_path / "k0", "--max_steps", "4", "--val_every", "2", "--iw_samples", "0",
                 "--val_iw_samples", "0")
    assert "iw_nll" not in result and "mi" in result and result["nelbo"] == pytest.approx(result["rec"] + result["kl"])


def test_tiny_run_writes_everything(corpus_dir, tmp_path):
    out = tmp_path / "run"
    result = run(corpus_dir, out, "--epochs", "2", "--interpolate", "the cat sat", "a dog ran")
    for name in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "best.pt", "samples.txt",
                 "interpolation.txt", "curves.png", "active_units.png", "posterior_pca.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("rec", "kl", "mi", "au", "nelbo", "ppl", "iw_nll", "iw_ppl"):
        assert saved[key] == pytest.approx(result[key])
    assert saved["nelbo"] == pytest.approx(saved["rec"] + saved["kl"])
    assert saved["iw_nll"] <= saved["nelbo"] + 0.5              # the IW bound is (stochastically) tighter
    assert len((out / "interpolation.txt").read_text().splitlines()) == 11
    rows = data.CsvLog(str(out / "log.csv"), resume_step=10 ** 9).rows()
    assert [r["split"] for r in rows] == ["valid", "valid", "test"]


def test_resume_ends_where_an_uninterrupted_run_ends(corpus_dir, tmp_path):
    straight = run(corpus_dir, tmp_path / "a", "--epochs", "3", "--anneal", "cyclical")
    run(corpus_dir, tmp_path / "b", "--epochs", "3", "--anneal", "cyclical", "--max_steps", "17")
    resumed = run(corpus_dir, tmp_path / "b", "--epochs", "3", "--resume")
    skip = {"train_time_s", "device", "test_seconds"}   # wall times vary
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flags, message", [
    (["--anneal", "sigmoid"], "invalid choice"),
    (["--beta", "0"], "--beta"),
    (["--ratio", "1.5"], "--ratio"),
    (["--cycles", "0"], "--cycles"),
    (["--resume", "--eval_only"], "exclude"),
    (["--eval_only"], "no checkpoint"),
])
def test_bad_flags_are_parser_errors(corpus_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        vae.main(["--data", corpus_dir, "--out_dir", str(tmp_path / "x"), *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err

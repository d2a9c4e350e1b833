"""ivae.py: the critic against the closed-form KL, the annealing schedule, the affine encoder's Gaussian,
and tiny end-to-end main([...]) runs including resume, sampling, interpolation and bad flags."""
import json
import math

import pytest
import torch

import data
import ivae
import metrics

TINY = ["--emb_dim", "16", "--hidden", "16", "--latent", "4", "--noise_dim", "4", "--encoder_width", "16",
        "--nu_width", "16", "--nu_layers", "2", "--batch_size", "8", "--eval_samples", "8", "--iw_samples", "8",
        "--val_samples", "4", "--val_iw_samples", "4", "--fit_samples", "16", "--log_every", "5", "--cpu",
        "--num_samples", "3", "--max_decode_len", "12"]


def run(corpus_dir, out_dir, *extra):
    return ivae.main(["--data", corpus_dir, "--out_dir", str(out_dir), *TINY, *extra])


# ----------------------------------------------------------------------------------------------------
# The critic and the schedule
# ----------------------------------------------------------------------------------------------------


def test_critic_trained_by_the_scripts_code_recovers_gaussian_kl():
    # q(z|x) = N(A h_x, diag sigma^2): a Gaussian posterior with a known KL per x. The script's own
    # Critic and critic_step (Eq. 9) are trained on it; the dual estimate must land within 10%.
    torch.manual_seed(0)
    Z, H = 2, 4
    A = torch.randn(Z, H) * 0.5
    sigma = torch.tensor([0.4, 0.8])

    def sample(n):
        h = torch.randn(n, H)
        mu = h @ A.T
        return h, mu + sigma * torch.randn(n, Z), mu

    nu_xz, nu_z = ivae.Critic(Z, H, 64, 2), ivae.Critic(Z, 0, 64, 2)
    opt = torch.optim.Adam(list(nu_xz.parameters()) + list(nu_z.parameters()), lr=2e-3)
    for step in range(800):
        if step == 560:
            for g in opt.param_groups:
                g["lr"] = 2e-4
        h, z, _ = sample(512)
        ivae.critic_step(nu_xz, nu_z, opt, h, z, torch.randn_like(z))
    with torch.no_grad():
        h, z, mu = sample(100_000)
        true_kl = float(metrics.gaussian_kl(mu, (sigma ** 2).log().expand_as(mu)).mean())
        est = float(metrics.dual_kl(nu_xz(z, h), nu_xz(torch.randn_like(z), h)))
    assert true_kl > 1.0
    assert abs(est - true_kl) < 0.1 * true_kl, (est, true_kl)


def test_beta_schedule_hand_values():
    cfg = ivae.Config(beta_start=0.1, warmup_epochs=2)
    assert [ivae.beta_at(s, 10, cfg) for s in (0, 5, 10, 20, 35)] == pytest.approx([0.1, 0.325, 0.55, 1.0, 1.0])
    assert ivae.beta_at(3, 10, ivae.Config(warmup_epochs=0)) == 1.0


def test_affine_encoder_is_gaussian_with_the_stated_covariance():
    torch.manual_seed(0)
    g = ivae.ImplicitPosterior(hidden=6, noise_dim=3, latent=3, layers=0, width=8)
    h = torch.randn(2, 6)
    mean, w = g.gaussian(h)
    cov = w @ w.T
    z = g(h, 200_000)                                                    # (2, S, 3)
    torch.testing.assert_close(z.mean(1), mean, atol=0.01, rtol=0)
    for b in range(2):
        torch.testing.assert_close(torch.cov(z[b].T), cov, atol=0.01, rtol=0.02)
    mlp = ivae.ImplicitPosterior(hidden=6, noise_dim=3, latent=3, layers=2, width=8)
    assert len([m for m in mlp.net if isinstance(m, torch.nn.Linear)]) == 3


# ----------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------


def test_tiny_run_writes_everything(corpus_dir, tmp_path):
    out = tmp_path / "run"
    result = run(corpus_dir, out, "--epochs", "2", "--interpolate", "the cat sat", "a dog ran")
    for name in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "best.pt", "samples.txt",
                 "interpolation.txt", "curves.png", "active_units.png", "posterior_pca.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("rec", "kl", "mi", "au", "nelbo", "ppl", "iw_nll", "iw_ppl", "kl_lower", "log_n"):
        assert key in saved and saved[key] == pytest.approx(result[key])
    assert saved["nelbo"] == pytest.approx(saved["rec"] + saved["kl"])
    assert saved["mi"] == pytest.approx(saved["kl"] - saved["kl_agg"])
    assert saved["n_sentences"] == 24
    test_lines = open(f"{corpus_dir}/test.txt").read().split("\n")[:24]
    assert saved["n_words"] == sum(len(line.split()) + 1 for line in test_lines)   # words and </s>, not <s>
    assert saved["ppl"] == pytest.approx(math.exp(saved["nelbo"] * 24 / saved["n_words"]))
    rows = data.CsvLog(str(out / "log.csv"), resume_step=10 ** 9).rows()
    assert [r["split"] for r in rows] == ["valid", "valid", "test"]
    assert len((out / "interpolation.txt").read_text().splitlines()) == 11
    assert len((out / "samples.txt").read_text().splitlines()) == 1 + 2 * 3
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == saved["step"] == 28                       # 14 equal-length batches per epoch
    assert ckpt["vocab"]["itos"][:4] == list(data.SPECIALS)
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 1e-3                                      # PTB-sized default resolved


def test_affine_encoder_reports_exact_kl(corpus_dir, tmp_path):
    result = run(corpus_dir, tmp_path / "affine", "--encoder_layers", "0", "--max_steps", "6")
    assert result["kl_exact"] > 0 and result["nelbo_exact"] == pytest.approx(result["rec"] + result["kl_exact"])
    assert 0 <= result["mi_exact"] <= result["log_n"] == pytest.approx(math.log(24))
    assert result["kl_agg_exact"] == pytest.approx(result["kl_exact"] - result["mi_exact"])
    assert result["kl_lower"] <= result["kl_exact"] + 0.5


def test_evaluation_keeps_the_dual_plus_one():
    # Critics that output 0 everywhere: the dual E_q nu - E_p exp(nu) + 1 is exactly 0 for both, per
    # sentence (nu(x, z)) and pooled (nu(z)). Dropping the "+1" anywhere in the evaluation gives -1.
    cfg = ivae.Config(emb_dim=8, hidden=8, latent=3, noise_dim=3, encoder_width=8, nu_width=8, nu_layers=1,
                      init_range=0.1, batch_size=4, fit_samples=8)
    torch.manual_seed(0)
    model, nu_xz, nu_z, _, _ = ivae.build(cfg, 12, torch.device("cpu"))
    with torch.no_grad():
        for p in list(nu_xz.parameters()) + list(nu_z.parameters()):
            p.zero_()
    examples = [[1, 4, 5, 6, 2], [1, 7, 8, 9, 2], [1, 5, 5, 2], [1, 10, 11, 2]]
    row, _, _ = ivae.evaluate(model, nu_xz, nu_z, examples, cfg, 4, 0, torch.device("cpu"))
    assert row["kl"] == 0.0 and row["kl_agg"] == 0.0 and row["mi"] == 0.0


def test_model_loss_sees_h_only_through_z():
    # Eq. (10): nu(x, z) gets h DETACHED, so phi reaches the KL term only through z = G_phi(h, eps).
    # Make G ignore h (zero its h-columns): then neither rec nor the KL term depends on the encoder,
    # and the encoder's gradient must be exactly zero. Without the detach it is not.
    cfg = ivae.Config(emb_dim=8, hidden=8, latent=3, noise_dim=3, encoder_layers=0, nu_width=8, nu_layers=1,
                      init_range=0.1, dropout=0.0)
    torch.manual_seed(0)
    model, nu_xz, nu_z, _, _ = ivae.build(cfg, 12, torch.device("cpu"))
    with torch.no_grad():
        model.posterior.net[0].weight[:, :cfg.hidden] = 0
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    nu_opt = torch.optim.Adam(list(nu_xz.parameters()) + list(nu_z.parameters()), lr=1e-3)
    batch = data.collate([[1, 4, 5, 6, 2], [1, 7, 8, 9, 2]])
    ivae.train_step(model, nu_xz, nu_z, opt, nu_opt, batch.tokens, batch.lengths, 1.0, cfg)
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(g is None or float(g.abs().max()) == 0.0 for g in enc)
    assert float(model.decoder.out.weight.grad.abs().max()) > 0       # the step did run


def test_affine_encoder_with_fewer_noise_dims_than_latent_is_a_parser_error(corpus_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(corpus_dir, tmp_path / "s", "--encoder_layers", "0", "--noise_dim", "2")
    assert "singular covariance" in capsys.readouterr().err


def test_resume_ends_where_an_uninterrupted_run_ends(corpus_dir, tmp_path):
    straight = run(corpus_dir, tmp_path / "a", "--epochs", "3")
    # Same seed, stopped mid-epoch 2 (step 17; 14 batches per epoch), then resumed to the end.
    first = run(corpus_dir, tmp_path / "b", "--epochs", "3", "--max_steps", "17")
    assert first["step"] == 17
    resumed = run(corpus_dir, tmp_path / "b", "--epochs", "3", "--resume")
    skip = {"train_time_s", "device", "test_seconds"}   # wall times vary
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for part in ("model", "nu_xz", "nu_z"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    rows = data.CsvLog(str(tmp_path / "b" / "log.csv"), resume_step=10 ** 9).rows()
    assert [int(r["step"]) for r in rows if r["split"] == "valid"] == [14, 28, 42]      # no duplicated rows
    # --eval_only re-evaluates the selected checkpoint and gets the same test numbers.
    again = run(corpus_dir, tmp_path / "b", "--eval_only")
    assert again["rec"] == pytest.approx(straight["rec"]) and again["iw_nll"] == pytest.approx(straight["iw_nll"])


@pytest.mark.parametrize("flags, message", [
    (["--dropout", "1.5"], "--dropout"),
    (["--cuda", "--cpu"], "exclude"),
    (["--batch_size", "0"], "--batch_size"),
    (["--encoder_layers", "-1"], "--encoder_layers"),
    (["--data", "no_such_corpus"], "unknown corpus"),
    (["--resume"], "no checkpoint"),
])
def test_bad_flags_are_parser_errors(corpus_dir, tmp_path, capsys, flags, message):
    argv = ["--data", corpus_dir, "--out_dir", str(tmp_path / "x"), *flags]
    with pytest.raises(SystemExit) as exit_:
        ivae.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_cuda_flag_without_gpu_is_an_error(corpus_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        ivae.main(["--data", corpus_dir, "--out_dir", str(tmp_path), "--cuda"])
    assert "no CUDA GPU" in capsys.readouterr().err


def test_resume_refuses_changed_model_settings(corpus_dir, tmp_path, capsys):
    run(corpus_dir, tmp_path / "c", "--max_steps", "3")
    with pytest.raises(SystemExit):
        run(corpus_dir, tmp_path / "c", "--resume", "--latent", "8")
    assert "differs from the checkpoint" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_older_than_a_model_flag(corpus_dir, tmp_path, capsys):
    """Resuming, a model flag the checkpoint does not record (added since) must be given: its default may not
    be what the run trained with. --eval_only and run-control flags (--log_every) need no such care."""
    run(corpus_dir, tmp_path / "o", "--max_steps", "3")
    for path in (tmp_path / "o").glob("*.pt"):
        ckpt = torch.load(path, weights_only=True)
        del ckpt["config"]["dropout"], ckpt["config"]["log_every"]
        torch.save(ckpt, path)
    ivae.main(["--out_dir", str(tmp_path / "o"), "--eval_only", "--eval_samples", "2", "--iw_samples", "2"])  # no training
    with pytest.raises(SystemExit):
        run(corpus_dir, tmp_path / "o", "--resume", "--max_steps", "4")
    assert "written before --dropout existed" in capsys.readouterr().err
    run(corpus_dir, tmp_path / "o", "--resume", "--max_steps", "4", "--dropout", "0.5")      # given: resumes


def test_objective_uses_nu_xz():
    # Eq. (10): the model's update follows nu(x, z) (ivae_mi.py's test checks the opposite for Eq. 14).
    import copy
    cfg = ivae.Config(emb_dim=8, hidden=8, latent=3, noise_dim=3, encoder_width=8, nu_width=8, nu_layers=1,
                      init_range=0.1, dropout=0.0)
    torch.manual_seed(0)
    model, nu_xz, nu_z, _, _ = ivae.build(cfg, 12, torch.device("cpu"))
    batch = data.collate([[1, 4, 5, 6, 2], [1, 7, 8, 9, 2]])
    after = []
    for scale in (1.0, 50.0):
        m, a, b = copy.deepcopy(model), copy.deepcopy(nu_xz), copy.deepcopy(nu_z)
        with torch.no_grad():
            for p in a.parameters():
                p.mul_(scale)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        nu_opt = torch.optim.Adam(list(a.parameters()) + list(b.parameters()), lr=1e-3)
        torch.manual_seed(1)
        ivae.train_step(m, a, b, opt, nu_opt, batch.tokens, batch.lengths, 1.0, cfg)
        after.append(m.state_dict())
    assert not all(torch.equal(after[0][k], after[1][k]) for k in after[0])


@pytest.mark.slow
def test_critic_in_the_operating_regime_ideal_vs_jointly_trained():
    # The regime a PTB run reaches: Z = 32, KL ~ 40 nats, batch 32. q(z|x) = N(A h, 0.3^2 I), known KL.
    # Measured behaviour, asserted as such:
    #  * the IDEAL critic nu* = log q/p, 128 + 128 samples, recovers the KL up to about +1: at KL >> log 128
    #    no prior sample lands where q lives, so E_p[exp nu*] (= 1) is seen as ~0 (RESEARCH.md: 24.7 -> 25.7);
    #  * the script's critic trained the authors' way (Adam 1e-5, 5 updates per step, 300 steps) reports
    #    under a quarter of it (seen: 3.8 of 40.9).
    torch.manual_seed(0)
    Z, H, B, sigma = 32, 64, 32, 0.3
    A = torch.randn(Z, H) / math.sqrt(H)

    def sample(n, s=1):
        h = torch.randn(n, H)
        mu = h @ A.T
        return h, mu.unsqueeze(1) + sigma * torch.randn(n, s, Z), mu

    def log_ratio(z, mu):                                            # log q(z|x) - log p(z)
        return (-0.5 * ((z - mu) / sigma).pow(2) - math.log(sigma) + 0.5 * z.pow(2)).sum(-1)

    h, z, mu = sample(200, 128)
    zp = torch.randn(200, 128, Z)
    true_kl = float((0.5 * (mu.pow(2).sum(-1) + Z * (sigma ** 2 - math.log(sigma ** 2) - 1))).mean())
    ideal = float(metrics.dual_kl(log_ratio(z, mu.unsqueeze(1)), log_ratio(zp, mu.unsqueeze(1))).mean())
    assert 35 < true_kl < 50
    assert true_kl - 0.5 < ideal < true_kl + 1.5, (ideal, true_kl)

    nu_xz, nu_z = ivae.Critic(Z, H, 512, 3), ivae.Critic(Z, 0, 512, 3)
    opt = torch.optim.Adam(list(nu_xz.parameters()) + list(nu_z.parameters()), lr=1e-5)
    for _ in range(300):
        hb, zb, _ = sample(B)
        prior = torch.randn(5, B, Z)
        for i in range(5):
            ivae.critic_step(nu_xz, nu_z, opt, hb, zb.squeeze(1), prior[i])
    with torch.no_grad():
        trained = float(metrics.dual_kl(nu_xz(z, h.unsqueeze(1)), nu_xz(zp, h.unsqueeze(1))).mean())
    assert trained < 0.25 * true_kl, (trained, true_kl)


def test_encoder_summarises_each_sentence_by_its_state_at_the_end_token():
    # Padded batch: h_x must be the LSTM's state after the sentence's last real token (</s>), the h_n of
    # running the LSTM on the sentence alone, not the state at a padding position or one token early.
    torch.manual_seed(0)
    enc = ivae.Encoder(vocab_size=12, emb_dim=5, hidden=6)
    batch = data.collate([[1, 4, 5, 6, 2], [1, 7, 2]])                 # lengths 5 and 3, padded to 5
    h = enc(batch.tokens, batch.lengths)
    for i, sentence in enumerate([[1, 4, 5, 6, 2], [1, 7, 2]]):
        _, (h_n, _) = enc.rnn(enc.emb(torch.tensor([sentence])))
        torch.testing.assert_close(h[i], h_n[0, 0])


def test_adaptive_contrast_reports_the_exact_kl_of_the_affine_encoder(corpus_dir, tmp_path):
    # --kl_estimator ac (issue 29): for the affine G_phi q(z|x) is Gaussian, so the AC estimate's residual
    # is ~0 and kl_ac must sit on the exact KL; the fresh-critic check runs at test. A Gaussian term fitted
    # with the wrong sample count, or a residual critic that sees unwhitened samples, moves kl_ac off it.
    result = run(corpus_dir, tmp_path / "ac", "--encoder_layers", "0", "--kl_estimator", "ac", "--max_steps", "14",
                 "--resid_check_steps", "20", "--resid_check_every", "1")
    assert result["kl"] == result["kl_ac"] == pytest.approx(result["kl_gauss"] + result["kl_resid"])
    assert result["kl_ac"] == pytest.approx(result["kl_exact"], rel=0.05), (result["kl_ac"], result["kl_exact"])
    assert abs(result["kl_resid"]) < 0.05 and abs(result["kl_resid_check"]) < 0.2
    assert result["resid_check_sentences"] == 8


def test_the_first_progress_line_counts_the_validations_and_the_test(corpus_dir, tmp_path, capsys):
    # Issue 31: before the first validation, a validation on a few sentences (Run.training's probe) times
    # the evaluations, so the first ETA already includes every validation and the final test.
    run(corpus_dir, tmp_path / "eta", "--max_steps", "6", "--log_every", "5")
    first = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step"))
    assert "validation + test" in first, first

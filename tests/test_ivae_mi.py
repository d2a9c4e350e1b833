"""ivae_mi.py: nu(z) against the closed-form KL of a Gaussian aggregate, the objective's independence of
nu(x, z), and tiny end-to-end main([...]) runs including resume and Table 5's forward / reverse PPL."""
import copy
import json

import pytest
import torch

import data
import ivae_mi
import metrics

TINY = ["--emb_dim", "16", "--hidden", "16", "--latent", "4", "--noise_dim", "4", "--encoder_width", "16",
        "--nu_width", "16", "--nu_layers", "2", "--batch_size", "8", "--eval_samples", "8", "--iw_samples", "8",
        "--val_samples", "4", "--val_iw_samples", "4", "--fit_samples", "16", "--log_every", "5", "--cpu",
        "--num_samples", "3", "--max_decode_len", "12"]


def run(corpus_dir, out_dir, *extra):
    return ivae_mi.main(["--data", corpus_dir, "--out_dir", str(out_dir), *TINY, *extra])


def test_nu_z_estimates_the_kl_of_a_gaussian_aggregate():
    # The aggregated posterior q(z) = N(m, diag s^2) (as if every q(z|x) were pooled): the script's own
    # critic_step trains nu(z) on its samples; the dual estimate of KL(q(z) || p) must land within 10%.
    torch.manual_seed(0)
    D = torch.distributions
    q = D.Independent(D.Normal(torch.tensor([1.2, -0.6]), torch.tensor([0.5, 0.7])), 1)
    true_kl = float(D.kl_divergence(q, D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)))
    nu_xz, nu_z = ivae_mi.Critic(2, 3, 32, 2), ivae_mi.Critic(2, 0, 64, 2)
    opt = torch.optim.Adam(list(nu_xz.parameters()) + list(nu_z.parameters()), lr=2e-3)
    for step in range(800):
        if step == 560:
            for g in opt.param_groups:
                g["lr"] = 2e-4
        ivae_mi.critic_step(nu_xz, nu_z, opt, torch.randn(512, 3), q.sample((512,)), torch.randn(512, 2))
    with torch.no_grad():
        z = q.sample((100_000,))
        est = float(metrics.dual_kl(nu_z(z), nu_z(torch.randn_like(z))))
    assert true_kl > 1.0 and abs(est - true_kl) < 0.1 * true_kl, (est, true_kl)


def test_objective_does_not_use_nu_xz():
    # Eq. (14): the model's update depends on nu(z) only. Two copies that differ only in nu(x, z) must
    # take exactly the same model step.
    cfg = ivae_mi.Config(emb_dim=8, hidden=8, latent=3, noise_dim=3, encoder_width=8, nu_width=8, nu_layers=1,
                         init_range=0.1, dropout=0.0)
    torch.manual_seed(0)
    model, nu_xz, nu_z, _, _ = ivae_mi.build(cfg, 12, torch.device("cpu"))
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
        ivae_mi.train_step(m, a, b, opt, nu_opt, batch.tokens, batch.lengths, 1.0, cfg)
        after.append(m.state_dict())
    assert all(torch.equal(after[0][k], after[1][k]) for k in after[0])


def test_tiny_run_with_resume_and_fwd_rev_ppl(corpus_dir, tmp_path):
    straight = run(corpus_dir, tmp_path / "a", "--epochs", "2", "--fwd_rev_ppl", "--fwd_rev_samples", "20")
    run(corpus_dir, tmp_path / "b", "--epochs", "2", "--max_steps", "9", "--fwd_rev_ppl", "--fwd_rev_samples", "20")
    resumed = run(corpus_dir, tmp_path / "b", "--epochs", "2", "--resume", "--fwd_rev_ppl", "--fwd_rev_samples", "20")
    skip = {"train_time_s", "device", "test_seconds"}   # wall times vary
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("rec", "kl", "mi", "au", "nelbo", "ppl", "iw_nll", "iw_ppl", "fwd_ppl", "rev_ppl", "rev_ppl_test"):
        assert key in saved
    lines = (tmp_path / "a" / "fwd_rev_samples.txt").read_text().splitlines()
    assert len(lines) == 20 and saved["fwd_rev_samples"] == 20
    for name in ("curves.png", "active_units.png", "posterior_pca.png", "samples.txt", "best.pt"):
        assert (tmp_path / "a" / name).exists()


def test_forward_reverse_ppl_on_a_toy_corpus():
    train = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran", "the cat ran"]]
    test = [s.split() for s in ["the dog ran", "a dog sat"]]
    samples = [s.split() for s in ["the cat sat", "the cat sat", "a dog"]]
    vocab = ["the", "a", "cat", "dog", "sat", "ran", "<unk>"]
    out = metrics.forward_reverse_ppl(samples, train, test, vocab, order=3)
    assert out["fwd_ppl"] == pytest.approx(metrics.NGramLM(3).fit(train).perplexity(samples))
    reverse = metrics.NGramLM(3).fit([[w] for w in vocab] + samples)      # the authors' smoothing
    assert out["rev_ppl"] == pytest.approx(reverse.perplexity(train))
    assert out["rev_ppl_test"] == pytest.approx(reverse.perplexity(test))
    # Without the prepended vocabulary "ran" would be an unknown word of the reverse LM.
    assert "ran" in reverse.vocab and "ran" not in metrics.NGramLM(3).fit(samples).vocab
    # Samples that copy the training text are fluent (low forward PPL) but cover it poorly.
    copies = metrics.forward_reverse_ppl([train[0]] * 3, train, test, vocab, order=3)
    varied = metrics.forward_reverse_ppl(train, train, test, vocab, order=3)
    assert varied["rev_ppl"] < copies["rev_ppl"]

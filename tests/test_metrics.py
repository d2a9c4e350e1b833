"""metrics.py against independent references: torch.distributions, closed forms, numerical integration,
nltk and hand computations."""
import math

import numpy as np
import pytest
import torch

import metrics

# ----------------------------------------------------------------------------------------------------
# KL: closed form and dual
# ----------------------------------------------------------------------------------------------------


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(7, 32, generator=g) * 2
    logvar = torch.randn(7, 32, generator=g)
    q = torch.distributions.Independent(torch.distributions.Normal(mu, (0.5 * logvar).exp()), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(32), torch.ones(32)), 1)
    ref = torch.distributions.kl_divergence(q, p)                       # (7,)
    assert metrics.gaussian_kl(mu, logvar).shape == (7,)
    torch.testing.assert_close(metrics.gaussian_kl(mu, logvar), ref, rtol=1e-5, atol=1e-5)
    assert metrics.gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def gaussian_setup(dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g) * 0.8
    std = torch.rand(dim, generator=g) * 0.5 + 0.5
    q = torch.distributions.Independent(torch.distributions.Normal(mu, std), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(dim), torch.ones(dim)), 1)
    true_kl = float(torch.distributions.kl_divergence(q, p))
    return q, p, true_kl


def test_dual_kl_at_optimal_critic_equals_closed_form():
    # nu*(z) = log q(z) - log p(z) is the maximiser of Eq. (9); with it the estimate is unbiased.
    q, p, true_kl = gaussian_setup()
    torch.manual_seed(1)
    zq, zp = q.sample((200_000,)), p.sample((200_000,))
    nu_q = (q.log_prob(zq) - p.log_prob(zq)).double()
    nu_p = (q.log_prob(zp) - p.log_prob(zp)).double()
    est = float(metrics.dual_kl(nu_q, nu_p))
    se = math.sqrt(float(nu_q.var()) / len(nu_q) + float(nu_p.exp().var()) / len(nu_p))
    assert 1.0 < true_kl < 5.0 and se < 0.05
    assert abs(est - true_kl) < 4 * se, (est, true_kl, se)
    # Without the "+1" (Eq. 7 as printed) the value would be KL - 1: far outside the error bars.
    assert abs((est - 1) - true_kl) > 10 * se


def test_dual_kl_is_lower_bound_for_a_wrong_critic_with_enough_samples():
    # For nu = nu* + c: E_q[nu* + c] - e^c E_p[q/p] + 1 = KL + c + 1 - e^c < KL for c != 0.
    q, p, true_kl = gaussian_setup(seed=3)
    torch.manual_seed(2)
    zq, zp = q.sample((200_000,)), p.sample((200_000,))
    for c in (-0.7, 0.5):
        nu_q = q.log_prob(zq) - p.log_prob(zq) + c
        nu_p = q.log_prob(zp) - p.log_prob(zp) + c
        est = float(metrics.dual_kl(nu_q, nu_p))
        expected = true_kl + c + 1 - math.exp(c)
        assert est < true_kl - 0.1
        assert abs(est - expected) < 0.1, (c, est, expected)


def test_dual_kl_shapes_and_dtype():
    nu_q = torch.zeros(5, 128, dtype=torch.bfloat16)
    nu_p = torch.zeros(5, 64, dtype=torch.bfloat16)
    out = metrics.dual_kl(nu_q, nu_p)
    assert out.shape == (5,) and out.dtype == torch.float32
    assert torch.all(out == 0)                           # nu = 0 everywhere: 0 - 1 + 1
    # exp(100) ~ 2.7e43 overflows float16 and bfloat16 (and float32's range ends at 3.4e38); computed in
    # float64 it is exact, and float64 inputs get a float64 result
    big = metrics.dual_kl(torch.zeros(3, dtype=torch.float64), torch.full((3,), 100.0, dtype=torch.float64))
    assert big.dtype == torch.float64 and float(big) == pytest.approx(1.0 - math.exp(100.0), rel=1e-12)


def test_trained_critic_gets_within_ten_percent():
    # A small nu MLP trained a few hundred steps by maximising Eq. (9) on fresh samples each step.
    torch.manual_seed(0)
    D = torch.distributions
    q = D.Independent(D.Normal(torch.tensor([1.5, -1.0]), torch.tensor([0.4, 0.7])), 1)
    p = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)
    true_kl = float(D.kl_divergence(q, p))                                    # 2.22 nats
    nu = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.LeakyReLU(), torch.nn.Linear(64, 64),
                             torch.nn.LeakyReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(nu.parameters(), lr=3e-3)
    for _ in range(300):
        zq, zp = q.sample((512,)), p.sample((512,))
        loss = -metrics.dual_kl(nu(zq).squeeze(-1), nu(zp).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        zq, zp = q.sample((100_000,)), p.sample((100_000,))
        est = float(metrics.dual_kl(nu(zq).squeeze(-1), nu(zp).squeeze(-1)))
    assert abs(est - true_kl) < 0.1 * true_kl, (est, true_kl)


def test_mutual_info_identity():
    assert metrics.mutual_info(torch.tensor([3.0, 5.0]), 1.5) == pytest.approx(2.5)
    assert metrics.mutual_info(4.0, 1.0) == pytest.approx(3.0)


# ----------------------------------------------------------------------------------------------------
# MI and AU on synthetic posteriors with known answers
# ----------------------------------------------------------------------------------------------------


def test_gaussian_mi_two_overlapping_posteriors_vs_numerical_integration():
    # x in {-1, +1} with equal probability, q(z|x) = N(x, 1) in one dimension.
    # I(x; z) = H(z) - H(z|x), H(z) of the mixture by numerical integration.
    grid = np.linspace(-12, 12, 200_001)
    dens = 0.5 * (np.exp(-0.5 * (grid - 1) ** 2) + np.exp(-0.5 * (grid + 1) ** 2)) / math.sqrt(2 * math.pi)
    h_z = -float(np.sum(dens * np.log(dens)) * (grid[1] - grid[0]))   # Riemann sum; tails are ~0
    h_z_given_x = 0.5 * math.log(2 * math.pi * math.e)
    true_mi = h_z - h_z_given_x                                   # ~0.34 nats
    mu = torch.tensor([[-1.0], [1.0]])
    logvar = torch.zeros(2, 1)
    torch.manual_seed(0)
    z = mu.unsqueeze(1) + torch.randn(2, 100_000, 1)              # (B=2, S, Z=1)
    est = metrics.gaussian_mi(mu, logvar, z)
    assert abs(est - true_mi) < 0.01, (est, true_mi)


def test_gaussian_mi_extremes():
    torch.manual_seed(0)
    # K well separated posteriors: I = log K.
    K, Z = 8, 3
    mu = torch.zeros(K, Z)
    mu[:, 0] = torch.arange(K) * 20.0
    logvar = torch.full((K, Z), -2.0)
    z = mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * torch.randn(K, 5000, Z)
    assert metrics.gaussian_mi(mu, logvar, z) == pytest.approx(math.log(K), abs=0.03)
    # Identical posteriors: q(z|x) = q(z), I = 0.
    mu0, lv0 = torch.zeros(16, Z), torch.zeros(16, Z)
    z0 = torch.randn(16, 5000, Z)
    assert metrics.gaussian_mi(mu0, lv0, z0) == pytest.approx(0.0, abs=0.02)


def test_gaussian_mi_standard_error_vs_repeated_draws():
    # The SE gaussian_mi reports with one z per sentence, against the spread of the estimate over 200
    # independent draws of z. Identical posteriors (no spread between sentences): the SE matches the spread;
    # posteriors of different widths: it is an upper bound on it, as its docstring says.
    torch.manual_seed(0)
    B, Z = 400, 4
    mu = 0.5 * torch.randn(B, Z)
    for logvar, check in ((torch.full((B, Z), -1.0), "match"), (torch.randn(B, Z), "bound")):
        draws = [metrics.gaussian_mi(mu, logvar, mu + (0.5 * logvar).exp() * torch.randn(B, Z), with_se=True)
                 for _ in range(200)]
        spread = float(np.std([m for m, _ in draws]))
        se = float(np.mean([s for _, s in draws]))
        if check == "match":
            assert 0.8 * spread < se < 1.25 * spread, (se, spread)
        else:
            assert se > 0.9 * spread, (se, spread)
    assert isinstance(metrics.gaussian_mi(mu, logvar, mu), float)               # the default: MI alone


def test_honest_notes_on_mi():
    row = {"rec": 80.0, "kl": 2.07, "mi": 2.13, "au": 5, "nelbo": 82.07, "ppl": 100.0, "log_n": math.log(3761)}
    notes = metrics.honest_notes({**row, "mi_se": 0.05})
    assert len(notes) == 1 and "exceeds the KL 2.07" in notes[0] and "1.2 standard errors" in notes[0], notes
    assert metrics.honest_notes({**row, "mi": 2.0, "mi_se": 0.05}) == []
    assert "? standard errors" in metrics.honest_notes({**row, "mi_se": 0.0})[0]           # no division by 0
    # the exact MI of separated posteriors reaches log N up to float rounding: no "artifact" note for that
    exact = {**row, "mi": 1.0, "mi_exact": math.log(3761) + 9e-16}
    assert metrics.honest_notes(exact) == []
    assert "estimator artifact" in metrics.honest_notes({**exact, "mi": 9.5})[0]


def test_honest_notes_name_the_estimator():
    """A row's KL is the critic's (the paper's dual) or, with --kl_estimator ac, adaptive contrast's: the
    notes say which, so an AC row's KL is not blamed on a critic."""
    row = {"rec": 80.0, "kl": 4.0, "mi": 1.0, "au": 5, "nelbo": 84.0, "ppl": 100.0, "kl_lower": 4.5,
           "kl_exact": 5.0, "nelbo_exact": 85.0}
    dual, ac = metrics.honest_notes(row), metrics.honest_notes({**row, "kl_ac": 4.0})
    assert dual[0].startswith("the critic's KL 4.00 is below") and "vs the critic's 4.00" in dual[1], dual
    assert ac[0].startswith("adaptive contrast's KL 4.00 is below") and "vs adaptive contrast's 4.00" in ac[1], ac


def test_active_units():
    torch.manual_seed(0)
    N = 5000
    means = torch.zeros(N, 5)
    means[:, 0] = torch.randn(N)                 # var ~1
    means[:, 1] = torch.randn(N) * 0.5           # var ~0.25
    means[:, 2] = torch.randn(N) * 0.15          # var ~0.0225 (> 0.01)
    means[:, 3] = 3.0 + torch.randn(N) * 0.05    # var ~0.0025 (< 0.01)
    means[:, 4] = -1.0                           # constant
    count, var = metrics.active_units(means)
    assert count == 3
    np.testing.assert_allclose(var.numpy(), means.numpy().astype(np.float64).var(0), rtol=1e-5)
    count_unbiased, var_u = metrics.active_units(means, unbiased=True)
    np.testing.assert_allclose(var_u.numpy(), means.numpy().astype(np.float64).var(0, ddof=1), rtol=1e-5)
    assert metrics.active_units(means, threshold=0.5)[0] == 1


# ----------------------------------------------------------------------------------------------------
# Likelihoods
# ----------------------------------------------------------------------------------------------------


def test_log_mean_exp_and_perplexity():
    x = torch.tensor([[1000.0, 1000.0], [0.0, math.log(3.0)]])
    np.testing.assert_allclose(metrics.log_mean_exp(x, dim=1).numpy(), [1000.0, math.log(2.0)], rtol=1e-6)
    y = torch.randn(4, 9, dtype=torch.float64)
    ref = torch.log(torch.exp(y).mean(0))
    torch.testing.assert_close(metrics.log_mean_exp(y, dim=0), ref)
    assert metrics.perplexity(100.0, 50) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_iw_nll_on_linear_gaussian_model():
    # p(z) = N(0, 1), p(x|z) = N(z, s^2)  =>  p(x) = N(0, 1 + s^2); exact posterior N(x/(1+s^2), s^2/(1+s^2)).
    s2 = 0.5
    x = torch.tensor([-1.5, 0.3, 2.0], dtype=torch.float64).unsqueeze(1)          # (B, 1)
    true_nll = -torch.distributions.Normal(0.0, math.sqrt(1 + s2)).log_prob(x.squeeze(1))
    prior = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)

    def log_joint(z):
        return torch.distributions.Normal(z, math.sqrt(s2)).log_prob(x) + prior.log_prob(z)

    # Exact posterior as proposal: every importance weight equals p(x), the bound is exact.
    post = torch.distributions.Normal(x / (1 + s2), math.sqrt(s2 / (1 + s2)))
    torch.manual_seed(0)
    z = post.sample((5,)).squeeze(-1).T                                             # (B, K=5)
    torch.testing.assert_close(metrics.iw_nll(log_joint(z), post.log_prob(z.T.unsqueeze(-1)).squeeze(-1).T),
                               true_nll)
    # Proposal fitted to samples of the posterior: close to exact with many samples.
    samples = post.sample((4000,)).permute(1, 0, 2)                                  # (B, S, 1)
    r = metrics.fit_gaussian_proposal(samples)
    zk = r.sample((2000,))                                                          # (K, B, 1)
    est = metrics.iw_nll(log_joint(zk.squeeze(-1).T), r.log_prob(zk).T)
    torch.testing.assert_close(est, true_nll, atol=5e-3, rtol=0)
    # K = 1 with a poor proposal (the prior) is a bound in expectation: above the truth on average.
    zp = prior.sample((3, 20000))
    one = metrics.iw_nll(log_joint(zp).reshape(3, 20000, 1), prior.log_prob(zp).reshape(3, 20000, 1))
    assert torch.all(one.mean(1) > true_nll + 0.05)


def test_fit_gaussian_proposal_recovers_moments():
    torch.manual_seed(0)
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0], dtype=torch.float64), cov)
    r = metrics.fit_gaussian_proposal(mvn.sample((3, 50_000)).permute(1, 0, 2).reshape(50_000, 3, 2)
                                      .permute(1, 0, 2))
    torch.testing.assert_close(r.mean, torch.tensor([[1.0, -2.0]] * 3, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(r.covariance_matrix, cov.expand(3, 2, 2), atol=0.05, rtol=0)
    d = metrics.fit_gaussian_proposal(mvn.sample((1, 50_000)), diagonal=True)
    torch.testing.assert_close(d.variance, torch.tensor([[2.0, 0.5]], dtype=torch.float64), atol=0.05, rtol=0)


# ----------------------------------------------------------------------------------------------------
# Text metrics
# ----------------------------------------------------------------------------------------------------

REF = "the cat sat on the mat".split()
HYP = "the cat sat on a mat".split()


def test_sentence_bleu_follows_nltk_method7_and_n():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    for n in (3, 4):
        ref = sentence_bleu([REF], HYP, weights=(1 / n,) * n, smoothing_function=SmoothingFunction().method7)
        assert metrics.sentence_bleu(REF, HYP, n=n) == pytest.approx(ref, abs=1e-12)
    assert metrics.sentence_bleu(REF, HYP, 3) != pytest.approx(metrics.sentence_bleu(REF, HYP, 4))
    assert metrics.sentence_bleu(REF, [], 3) == 0.0
    assert metrics.sentence_bleu(REF, ["dog"], 3) == 0.0


def test_sentence_bleu_method7_hand_computed_now_and_as_nltk_3_4():
    # "a b x y" against "a b c d": precisions 2/4, 1/3, 0/2 (and 0/1 for 4-grams, which method5 reads); BP = 1.
    ref, hyp = "a b c d".split(), "a b x y".split()

    def method7(p3):                               # method5 averages each precision with its neighbours
        p1 = (1 + 1 / 2 + 1 / 2 + 1 / 3) / 3       # m[-1] = p1 + 1
        p2 = (p1 + 1 / 3 + p3) / 3
        return (p1 * p2 * ((p2 + p3 + 0) / 3)) ** (1 / 3)
    # method4 on the unmatched trigrams: nltk >= 3.6 ln|hyp| / (5 * 2^1) / 2 trigrams; nltk 3.4.5 1 / (2 + 5 / ln|hyp|)
    assert metrics.sentence_bleu(ref, hyp, 3) == pytest.approx(method7(math.log(4) / 10 / 2), abs=1e-12)
    assert metrics.sentence_bleu(ref, hyp, 3, nltk34=True) == pytest.approx(method7(1 / (2 + 5 / math.log(4))),
                                                                              abs=1e-12)
    assert metrics.sentence_bleu(ref, hyp, 3, nltk34=True) > metrics.sentence_bleu(ref, hyp, 3) + 0.04


def test_corpus_bleu_hand_computed():
    # Clipped precisions of HYP vs REF: 1-grams 5/6, 2-grams 3/5, 3-grams 2/4; equal lengths, BP = 1.
    assert metrics.corpus_bleu([[REF]], [HYP], n=3) == pytest.approx((5 / 6 * 3 / 5 * 2 / 4) ** (1 / 3))
    # Brevity penalty: a 3-word hypothesis that matches REF's first 3 words exactly.
    assert metrics.corpus_bleu([[REF]], [REF[:3]], n=2) == pytest.approx(math.exp(1 - 6 / 3))


def test_bleu_recall_precision_aggregation():
    hyps = [[HYP, REF[:3], ["dog"]], [REF, HYP]]
    refs = [REF, REF]
    s = [[metrics.sentence_bleu(REF, h) for h in hs] for hs in hyps]
    r = (max(s[0]) + max(s[1])) / 2
    p = (sum(s[0]) / 3 + sum(s[1]) / 2) / 2
    out = metrics.bleu_recall_precision(hyps, refs)
    assert out["bleu_r"] == pytest.approx(r) and out["bleu_p"] == pytest.approx(p)
    assert out["bleu_f1"] == pytest.approx(2 * p * r / (p + r))
    assert out["bleu_r"] > out["bleu_p"]
    with pytest.raises(ValueError):
        metrics.bleu_recall_precision(hyps, refs[:1])


def test_distinct_hand_examples():
    hyps = [["a", "b", "a", "b"], ["a", "c"], ["z"]]
    # intra-1: 2/4, 2/2, 1/1 ; intra-2: {ab, ba}/3, {ac}/1, none -> 0
    assert metrics.distinct_intra(hyps, 1) == pytest.approx((0.5 + 1 + 1) / 3)
    assert metrics.distinct_intra(hyps, 2) == pytest.approx((2 / 3 + 1 + 0) / 3)
    # inter-1: {a, b, c, z} / 7 unigrams ; inter-2: {ab, ba, ac} / 4 bigrams
    assert metrics.distinct_inter(hyps, 1) == pytest.approx(4 / 7)
    assert metrics.distinct_inter(hyps, 2) == pytest.approx(3 / 4)
    assert metrics.distinct_inter([["x"]], 2) == 0.0


def test_bow_hand_examples(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("a 1 0\nb 0 1\nc 1 1\nd -2 0.5\n")
    vec = metrics.load_word_vectors(str(path))
    assert set(vec) == {"a", "b", "c", "d"} and vec["d"].tolist() == [-2.0, 0.5]
    assert set(metrics.load_word_vectors(str(path), words=["a", "zz"])) == {"a"}
    assert metrics.bow_similarity(["a"], ["b"], vec) == pytest.approx((0.0, 0.0, 0.0))
    avg, ext, greedy = metrics.bow_similarity(["a", "b"], ["c"], vec)
    assert avg == pytest.approx(1.0) and ext == pytest.approx(1.0) and greedy == pytest.approx(1 / math.sqrt(2))
    # extrema keeps the value of largest magnitude per dimension: hyp (a, d) -> (-2, 0.5)
    _, ext, _ = metrics.bow_similarity(["a", "d"], ["d"], vec)
    assert ext == pytest.approx(1.0)
    # greedy is symmetric: hyp->ref = mean(1, 1/sqrt2), ref->hyp = 1
    _, _, greedy = metrics.bow_similarity(["a", "c"], ["a"], vec)
    assert greedy == pytest.approx(0.5 * ((1 + 1 / math.sqrt(2)) / 2 + 1))
    # unknown words are skipped, not given random vectors
    assert metrics.bow_similarity(["a", "zzz"], ["c"], vec) == pytest.approx(metrics.bow_similarity(["a"], ["c"], vec))
    assert metrics.bow_similarity(["zzz"], ["c"], vec) == (0.0, 0.0, 0.0)
    # Table 8: max over the samples of one context, mean over contexts
    out = metrics.bow_metrics([[["a"], ["c"]], [["b"]]], [["c"], ["a"]], vec)
    assert out["bow_a"] == pytest.approx((1.0 + 0.0) / 2)


def test_defensive_proposal_density_and_sampling():
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(torch.tensor([2.0, -1.0], dtype=torch.float64), cov)
    samples = mvn.sample((2, 20_000))                                            # (B=2, S, 2)
    r = metrics.defensive_proposal(samples, widen=1.5)
    # its density is the equal mixture of the fitted Gaussian and the widened diagonal one
    z = torch.randn(5, 2, 2, dtype=torch.float64)
    fitted = metrics.fit_gaussian_proposal(samples, shrinkage=2 / (20_000 + 2))
    wide = torch.distributions.Independent(torch.distributions.Normal(
        fitted.loc, 1.5 * torch.diagonal(fitted.covariance_matrix, dim1=1, dim2=2).sqrt()), 1)
    expected = torch.logsumexp(torch.stack([fitted.log_prob(z), wide.log_prob(z)]), 0) - math.log(2)
    torch.testing.assert_close(r.log_prob(z), expected)
    # generator-driven samples have the mixture's moments: mean m, covariance (C + 2.25 diag C) / 2
    g = torch.Generator().manual_seed(1)
    zk = metrics.sample_proposal(r, 100_000, g)                                  # (K, B, 2)
    assert zk.shape == (100_000, 2, 2)
    torch.testing.assert_close(zk.mean(0), fitted.loc, atol=0.02, rtol=0)
    mix_cov = (fitted.covariance_matrix[0] + 2.25 * torch.diag(torch.diagonal(fitted.covariance_matrix[0]))) / 2
    torch.testing.assert_close(torch.cov(zk[:, 0].T), mix_cov, atol=0.03, rtol=0)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    torch.testing.assert_close(metrics.sample_proposal(r, 10, g1), metrics.sample_proposal(r, 10, g2))
    # a plain Gaussian is sampled the same way
    plain = metrics.sample_proposal(fitted, 50_000, torch.Generator().manual_seed(2))
    torch.testing.assert_close(torch.cov(plain[:, 1].T), fitted.covariance_matrix[1], atol=0.03, rtol=0)


def test_collapse_warning_is_loud_and_says_what_triggered_it(capsys):
    row = {"rec": 80.0, "kl": 0.02, "mi": 0.0, "au": 0, "nelbo": 80.02, "ppl": 100.0, "log_n": math.log(3761)}
    assert metrics.warn_collapse(row, 32) is True
    out = capsys.readouterr().out
    assert "POSTERIOR COLLAPSE" in out and "KL = 0.020 nats (closed form) is below 0.1" in out
    assert metrics.warn_collapse({**row, "kl": 5.0, "au": 12}, 32) is False
    assert capsys.readouterr().out == ""
    assert metrics.warn_collapse({**row, "kl": 1.34, "au": 3}, 32) is True     # our PTB VAE: 3 of 32 active
    assert "PARTIAL POSTERIOR COLLAPSE: AU = 3/32" in capsys.readouterr().out
    assert metrics.warn_collapse({**row, "kl": 1.34, "au": 4}, 32) is False
    # issue 31: the affine iVAE's KL of 72 nats with AU = 0 is no collapse: the posterior ignores x
    ivae_row = {**row, "kl": 5.1, "kl_agg": 4.0, "kl_lower": 60.3, "kl_exact": 72.245, "au": 0}
    assert metrics.warn_collapse(ivae_row, 32) is True
    out = capsys.readouterr().out
    assert "COLLAPSE" not in out and "72.245 nats, exact KL" in out
    assert "no unit varies across sentences although KL is large" in out and "the posterior ignores x" in out
    # without the exact KL, the lower bound (above the critic's 5.1) is the KL judged
    no_exact = {k: v for k, v in ivae_row.items() if k != "kl_exact"}
    assert metrics.warn_collapse(no_exact, 32) is True
    assert "60.300 nats, lower bound; the critic says 5.100" in capsys.readouterr().out


def test_format_row_labels_the_papers_estimates_apart_from_the_true_values():
    vae_row = {"rec": 80.0, "kl": 1.34, "mi": 1.2, "mi_se": 0.05, "au": 3, "nelbo": 81.34, "ppl": 100.0}
    assert metrics.format_row("test", vae_row) == ("test | the paper's way (closed-form KL): rec 80.00 | KL 1.34 | "
                                                   "MI 1.20 | AU 3 | -ELBO 81.34 | PPL 100.00")   # nothing else
    paper, true = metrics.format_row("test", {**vae_row, "iw_nll": 79.5, "iw_ppl": 95.0}).split("\n")
    assert paper.startswith("test | the paper's way (closed-form KL):") and "IW" not in paper
    assert true.startswith("test | true values and bounds (exact, lower bound, IW):") and true.endswith("IW-PPL 95.00")
    # the line: the critic's -ELBO 137.4 / PPL 627 beside IW-NLL 193.6, now on separate, labelled lines
    ivae_row = {"rec": 80.0, "kl": 57.4, "mi": 3.2, "au": 0, "nelbo": 137.4, "ppl": 627.0, "kl_agg": 54.2,
                "kl_lower": 55.1, "iw_nll": 193.6, "iw_ppl": 1234.5, "iw_samples": 500, "log_n": math.log(3761),
                "kl_exact": 72.245, "nelbo_exact": 152.245, "ppl_exact": 900.0}
    paper, true = metrics.format_row("valid @ step 9", ivae_row).split("\n")
    assert paper.startswith("valid @ step 9 | the paper's way (critic estimates):")
    assert "-ELBO 137.40 | PPL 627.00" in paper and "193" not in paper
    assert paper.index("rec 80.00") == true.index("exact KL 72.25")                    # the columns line up
    for part in ("exact KL 72.25", "exact -ELBO 152.25 (PPL 900.00)", "KL >= 55.10 (lower bound)",
                 "IW-NLL 193.60 >= -log p(x) (K 500)", "MI <= log N 8.23"):
        assert part in true, part
    notes = metrics.honest_notes(ivae_row)
    assert any("-ELBO 137.40 is below IW-NLL 193.60" in n and "no bound" in n for n in notes), notes
    assert not any("IW-NLL" in n for n in metrics.honest_notes({**vae_row, "iw_nll": 79.5, "iw_ppl": 95.0}))


# ----------------------------------------------------------------------------------------------------
# Exact diagnostics of the affine encoder, q(z|x) = N(m, W W^T), and the KL lower bound (in expectation)
# ----------------------------------------------------------------------------------------------------


def affine_case(Z=32, E=32, N=5, s_min=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(Z, E, generator=g, dtype=torch.float64) * 0.3
    if s_min is not None:                                            # one tiny singular value
        u, s, vt = torch.linalg.svd(w, full_matrices=False)
        s[-1] = s_min
        w = (u * s) @ vt
    m = torch.randn(N, Z, generator=g, dtype=torch.float64)
    return m, w, g


@pytest.mark.parametrize("s_min", [None, 1e-2, 1e-5])
def test_affine_kl_in_float64_matches_torch_distributions(s_min):
    m, w, _ = affine_case(s_min=s_min)
    q = torch.distributions.MultivariateNormal(m, scale_tril=torch.linalg.cholesky(w @ w.T))
    p = torch.distributions.MultivariateNormal(torch.zeros(32, dtype=torch.float64), torch.eye(32, dtype=torch.float64))
    ref = torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(metrics.affine_posterior_kl(m, w), ref, rtol=1e-9, atol=1e-5)
    # Given float32 weights (as the model holds them) the value is still the float64 one of those weights.
    torch.testing.assert_close(metrics.affine_posterior_kl(m.float(), w.float()),
                               metrics.affine_posterior_kl(m.float().double(), w.float().double()))


def test_affine_kl_of_a_rank_deficient_w_is_infinite_not_an_exception():
    m, w, _ = affine_case(E=16)                                      # noise_dim 16 < latent 32
    assert torch.isinf(metrics.affine_posterior_kl(m, w)).all()
    m, w, _ = affine_case(s_min=0.0)
    assert torch.isinf(metrics.affine_posterior_kl(m, w)).all()


def test_affine_densities_match_torch_distributions():
    m, w, g = affine_case(Z=6, E=8, N=4)
    post = metrics.AffinePosteriors(m, w)
    q = torch.distributions.MultivariateNormal(m, covariance_matrix=w @ w.T)
    z = post.sample(3, g)                                            # (4, 3, 6)
    torch.testing.assert_close(post.log_prob_own(z), q.log_prob(z.transpose(0, 1)).T)
    flat = z.reshape(-1, 6)
    torch.testing.assert_close(post.log_prob_all(flat), q.log_prob(flat.unsqueeze(1)))


def test_aggregate_mi_of_a_2d_mixture_vs_grid_integration():
    # Three 2-D Gaussians with one shared, correlated covariance. On a grid:
    # I = (1/N) sum_n int q_n log(q_n / q),  KL(q(z) || p) = int q log(q / p).
    w = torch.tensor([[0.8, 0.3], [-0.2, 0.6]], dtype=torch.float64)
    m = torch.tensor([[-1.0, 0.5], [0.7, 0.0], [0.2, -1.2]], dtype=torch.float64)
    post = metrics.AffinePosteriors(m, w)
    ax = torch.linspace(-9, 9, 1201, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)
    cell = float(ax[1] - ax[0]) ** 2
    log_qn = post.log_prob_all(grid)                                 # (G, 3)
    log_q = torch.logsumexp(log_qn, 1) - math.log(3)
    true_mi = float((log_qn.exp() * (log_qn - log_q.unsqueeze(1))).sum() * cell / 3)
    true_kl_agg = float((log_q.exp() * (log_q - metrics.standard_normal_logpdf(grid))).sum() * cell)
    kl_cond = metrics.affine_posterior_kl(m, w)
    agg = metrics.aggregate_kl_mi(post, kl_cond, samples_per_x=20_000, generator=torch.Generator().manual_seed(1))
    assert 0.3 < true_mi < math.log(3)
    assert abs(agg["mi"] - true_mi) < 4 * agg["mi_se"] + 1e-3, (agg, true_mi)
    assert abs(agg["kl_agg"] - true_kl_agg) < 4 * agg["mi_se"] + 1e-3, (agg, true_kl_agg)
    assert agg["log_n"] == pytest.approx(math.log(3))


def test_exact_mi_never_exceeds_log_n():
    # Far-apart posteriors: I(x; z) -> log N from below, and every Monte-Carlo term is <= log N.
    N, Z = 50, 4
    m = torch.zeros(N, Z, dtype=torch.float64)
    m[:, 0] = torch.arange(N, dtype=torch.float64) * 100.0
    w = torch.eye(Z, dtype=torch.float64) * 0.1
    post = metrics.AffinePosteriors(m, w)
    agg = metrics.aggregate_kl_mi(post, metrics.affine_posterior_kl(m, w), samples_per_x=200,
                                  generator=torch.Generator().manual_seed(0))
    assert agg["mi"] <= agg["log_n"] + 1e-12
    assert agg["mi"] == pytest.approx(math.log(N), abs=1e-6)


def test_kl_lower_bound_is_below_the_exact_kl_and_above_an_untrained_critic():
    m, w, g = affine_case(Z=16, E=16, N=6, seed=3)
    post = metrics.AffinePosteriors(m, w)
    exact = metrics.affine_posterior_kl(m, w)                        # ~15-30 nats each
    lower = metrics.kl_lower_bound(post.sample(2048, g), post.sample(4096, g))
    se = 0.5                                                         # MC error of 4,096 samples, generous
    assert (lower <= exact + se).all(), (lower, exact)
    assert (lower >= exact - 1.0).all(), (lower, exact)              # tight: q is Gaussian, r fits it
    # A critic nu(z) = MLP at initialisation knows nothing: its dual estimate is near 0.
    torch.manual_seed(0)
    nu = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.LeakyReLU(), torch.nn.Linear(64, 1)).double()
    with torch.no_grad():
        zq = post.sample(128, g)
        critic = metrics.dual_kl(nu(zq).squeeze(-1), nu(torch.randn(zq.shape, generator=g, dtype=torch.float64)).squeeze(-1))
    assert (lower > critic + 10).all(), (lower, critic)
    # Non-Gaussian q (a mixture of two Gaussians per example): still below its KL, which we get by MC.
    mix = torch.cat([post.sample(2048, g), post.sample(2048, g) + 3.0], 1)   # equal mixture, shifted copy
    fit, ev = mix[:, ::2], mix[:, 1::2]
    lower_mix = metrics.kl_lower_bound(fit, ev)
    comp = post.log_prob_own(ev)
    comp2 = post.log_prob_own(ev - 3.0)
    true_mix = (torch.logaddexp(comp, comp2) - math.log(2) - metrics.standard_normal_logpdf(ev)).mean(1)
    assert (lower_mix <= true_mix + se).all(), (lower_mix, true_mix)


def test_dual_kl_accumulator_pools_like_dual_kl():
    g = torch.Generator().manual_seed(0)
    nu_q, nu_p = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    acc = metrics.DualKL()
    for a, b in zip(nu_q.split(3), nu_p.split(3)):
        acc.add(a, b)
    assert acc.value() == pytest.approx(float(metrics.dual_kl(nu_q.reshape(-1).double(), nu_p.reshape(-1).double())))
    zero = metrics.DualKL()
    zero.add(torch.zeros(4), torch.zeros(4))
    assert zero.value() == 0.0                                       # nu = 0: 0 - 1 + 1 (the "+1")


def test_active_units_subtract_the_sampling_noise_of_sample_means():
    # 4 dimensions, none informative, posterior variance 1: sample means of S = 8 have variance 1/8
    # across x, above 0.01, so raw sample means count every unit as active.
    torch.manual_seed(0)
    z = torch.randn(2000, 8, 4)
    means, noise = z.mean(1), z.var(1) / 8
    assert metrics.active_units(means)[0] == 4
    assert metrics.active_units(means, mean_noise_var=noise)[0] == 0


def test_dual_kl_with_few_prior_samples_is_not_a_lower_bound():
    # KL ~ 25 nats >> log 128: none of 128 prior samples lands where q lives, so E_p[exp nu] is seen
    # as ~e^c * (tiny) and a critic log q/p + c is reported as about KL + 1 + c: an overshoot, not a bound.
    Z = 32
    g = torch.Generator().manual_seed(0)
    mu = torch.full((Z,), 0.9, dtype=torch.float64)
    std = torch.full((Z,), 0.5, dtype=torch.float64)
    q = torch.distributions.Independent(torch.distributions.Normal(mu, std), 1)
    p = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(Z, dtype=torch.float64),
                                                                   torch.ones(Z, dtype=torch.float64)), 1)
    true_kl = float(torch.distributions.kl_divergence(q, p))
    zq = mu + std * torch.randn(200, 128, Z, generator=g, dtype=torch.float64)   # 200 sentences x 128
    zp = torch.randn(200, 128, Z, generator=g, dtype=torch.float64)
    c = 5.0
    est = metrics.dual_kl(q.log_prob(zq) - p.log_prob(zq) + c, q.log_prob(zp) - p.log_prob(zp) + c)
    assert 20 < true_kl < 30
    assert float(est.mean()) > true_kl + 0.8 * c, (float(est.mean()), true_kl)


def test_format_row_labels_an_adaptive_contrast_row_as_its_own_estimate():
    # ivae.py --kl_estimator ac: the row's kl is kl_ac, not a critic's estimate of the paper's kind.
    row = {"rec": 80.0, "kl": 5.0, "kl_ac": 5.0, "kl_agg": 0.2, "kl_lower": 4.9, "mi": 4.8, "au": 30,
           "nelbo": 85.0, "ppl": 100.0, "log_n": 8.0}
    first = metrics.format_row("test", row).splitlines()[0]
    assert first.startswith("test | " + metrics.AC_LABEL) and "the paper's way" not in first


def test_decode_greedy_stops_and_restores_mode():
    """metrics.decode: greedy picks the argmax, stops once every row has said </s> or at max_len, samples
    reproducibly with a generator, and leaves the decoder in the mode it found."""
    class Counter(torch.nn.Module):                  # logits favour token (previous + 1) mod 5; row 1 shifted by z
        def forward(self, token, z, state):
            nxt = (token[:, -1] + 1 + z[:, 0].long()) % 5
            return torch.nn.functional.one_hot(nxt, 5).float().unsqueeze(1) * 10, state
    dec, z = Counter().train(), torch.tensor([[0.0], [1.0]])
    out = metrics.decode(dec, z, max_len=10, bos=0, eos=3)
    assert out == [[1, 2, 3, 4], [2, 4, 1, 3]]       # ends when the last row says </s> (3); the words after a
    assert dec.training                              # row's </s> are cut by Vocab.decode
    assert metrics.decode(dec, z[:1], max_len=2, bos=0, eos=3) == [[1, 2]]       # or at max_len
    g = lambda: torch.Generator().manual_seed(0)     # noqa: E731
    assert metrics.decode(dec, z, 6, 0, 3, temperature=1.0, gen=g()) == metrics.decode(dec, z, 6, 0, 3, 1.0, g())


def test_plot_curves_writes_a_panel_per_key_and_nothing_without_rows(tmp_path):
    """plot_curves draws the rows it gets; with no rows (--eval_only beside no log.csv) it writes no file."""
    metrics.plot_curves([{"step": "1", "rec": "3.0"}, {"step": "2", "rec": ""}], ["rec", "kl"], str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").stat().st_size > 0
    metrics.plot_curves([], ["rec"], str(tmp_path / "b.png"))
    assert not (tmp_path / "b.png").exists()

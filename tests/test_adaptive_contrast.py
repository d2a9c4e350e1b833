"""Adaptive contrast (Mescheder et al. 2017, AVB §3.3; issue 29) in metrics.py against references: Monte
Carlo for the Wishart bias and the whitening artifact, torch.distributions for the Gaussian KL, its gradient
and the whitening, metrics.affine_posterior_kl for the affine G_phi, and Monte-Carlo truth for
two-component Gaussian mixtures. `pytest -q -m slow` runs the two that train a critic."""
import math

import pytest
import torch

import metrics

D = torch.distributions


def mvn_kl_to_standard(mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """The reference: torch.distributions' KL(N(mean, cov) || N(0, I)), float64. (..., Z), (..., Z, Z)."""
    Z = mean.shape[-1]
    p = D.MultivariateNormal(torch.zeros(Z, dtype=torch.float64), torch.eye(Z, dtype=torch.float64))
    return D.kl_divergence(D.MultivariateNormal(mean.double(), covariance_matrix=cov.double()), p)


def random_w(Z: int, E: int, s_min: float, g: torch.Generator) -> torch.Tensor:
    """W (Z, E) = U diag(s) V^T with singular values spread over [0.3, 1.5] and the smallest set to s_min."""
    U = torch.linalg.qr(torch.randn(Z, Z, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(E, Z, generator=g, dtype=torch.float64))[0]        # (E, Z)
    s = torch.rand(Z, generator=g, dtype=torch.float64) * 1.2 + 0.3
    s[-1] = s_min
    return (U * s) @ V.T


class MLPCritic(torch.nn.Module):
    """nu(x, u): an MLP on cat(u, cond) (cond: one-hot sentence id, (B, 1, B)), LeakyReLU, scalar out."""

    def __init__(self, latent: int, cond_dim: int, width: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(latent + cond_dim, width), torch.nn.LeakyReLU(),
                                       torch.nn.Linear(width, width), torch.nn.LeakyReLU(),
                                       torch.nn.Linear(width, 1))

    def forward(self, u: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([u, cond.expand(*u.shape[:-1], cond.shape[-1])], -1)).squeeze(-1)


# ----------------------------------------------------------------------------------------------------
# The Gaussian term: the Wishart bias, unbiasedness, the affine G_phi, the gradient
# ----------------------------------------------------------------------------------------------------


def test_logdet_bias_matches_monte_carlo():
    # E[log det Sigma_hat] - log det Sigma over 4,000 draws of S = 64 Gaussian samples in Z = 32.
    g = torch.Generator().manual_seed(0)
    S, Z, N = 64, 32, 4000
    w = random_w(Z, Z, 0.1, g)
    z = torch.randn(N, S, Z, generator=g, dtype=torch.float64) @ w.T               # (N, S, Z)
    c = z - z.mean(1, keepdim=True)
    diff = torch.linalg.slogdet(c.transpose(1, 2) @ c / (S - 1))[1] - torch.linalg.slogdet(w @ w.T)[1]
    se = float(diff.std()) / math.sqrt(N)
    assert abs(metrics.logdet_bias(S, Z) - (-10.37)) < 0.01
    assert abs(float(diff.mean()) - metrics.logdet_bias(S, Z)) < 4 * se, (float(diff.mean()), se)


def test_gaussian_term_is_unbiased_where_the_biases_are_large():
    # S = 8 samples in Z = 4: the Wishart bias is +0.93 nats and |mu_hat|^2's + tr(Sigma)/(2S) ~ +0.8;
    # 20,000 independent fits of one Gaussian average to torch.distributions' KL within 4 standard errors.
    g = torch.Generator().manual_seed(1)
    S, Z, N = 8, 4, 20000
    mean = torch.randn(Z, generator=g, dtype=torch.float64)
    w = torch.randn(Z, Z, generator=g, dtype=torch.float64) * 1.2
    z = mean + torch.randn(N, S, Z, generator=g, dtype=torch.float64) @ w.T         # (N, S, Z)
    mu, L = metrics.fit_moments(z)
    est = metrics.gaussian_term(mu, L, S)                                           # (N,)
    raw = metrics.gaussian_term(mu, L, S, unbiased=False)
    truth = float(mvn_kl_to_standard(mean, w @ w.T))
    se = float(est.std()) / math.sqrt(N)
    assert abs(float(est.mean()) - truth) < 4 * se, (float(est.mean()), truth, se)
    # The uncorrected value is off by the two biases: the test can fail.
    bias = 0.5 * float((w ** 2).sum()) / S - 0.5 * metrics.logdet_bias(S, Z)
    assert abs(float(raw.mean()) - truth - bias) < 4 * se and bias > 40 * se


@pytest.mark.parametrize("noise_dim", [32, 48])
def test_gaussian_term_matches_affine_posterior_kl(noise_dim):
    # The affine G_phi of ivae.py --encoder_layers 0, z = A h + c + W eps, in float32 as the model runs it,
    # with a W whose smallest singular value is 1e-5 (an eigenvalue of 1e-10 in Sigma: +11.5 nats of KL).
    # S = 64 samples per sentence, Z = 32: the Gaussian term alone is within 2% of the exact KL.
    g = torch.Generator().manual_seed(2)
    B, H, Z, S = 32, 16, 32, 64
    w = random_w(Z, noise_dim, 1e-5, g)
    g_phi = torch.nn.Linear(H + noise_dim, Z)
    with torch.no_grad():
        g_phi.weight.copy_(torch.cat([torch.randn(Z, H, generator=g, dtype=torch.float64) * 0.3, w], 1))
        g_phi.bias.copy_(torch.randn(Z, generator=g) * 0.5)
    h = torch.randn(B, H, generator=g)
    eps = torch.randn(B, S, noise_dim, generator=g)
    with torch.no_grad():
        z = g_phi(torch.cat([h.unsqueeze(1).expand(B, S, H), eps], -1))           # (B, S, Z) float32
        mean = g_phi(torch.cat([h, h.new_zeros(B, noise_dim)], -1))                  # (B, Z)
        exact = metrics.affine_posterior_kl(mean, g_phi.weight[:, H:])              # (B,) float64
    mu, L = metrics.fit_moments(z)
    est = metrics.gaussian_term(mu, L, S)
    assert torch.isfinite(est).all() and 30 < float(exact.mean()) < 200
    assert abs(float(est.mean() / exact.mean()) - 1) < 0.02, (float(est.mean()), float(exact.mean()))
    # Per sentence the sd is ~0.8 nats: every sentence within 4 nats.
    assert float((est - exact).abs().max()) < 4
    # Without the Wishart correction the same fit reads > 2% high: the 2% test has teeth.
    raw = metrics.gaussian_term(mu, L, S, unbiased=False)
    assert float(raw.mean() / exact.mean()) - 1 > 0.025


def test_fit_moments_adds_jitter_only_where_needed():
    # Sentence 0: a full-rank Gaussian (its factor must be exact); sentence 1: samples on a subspace
    # (the last coordinate constant; KL = +inf in truth): jitter there only, a finite but huge KL.
    g = torch.Generator().manual_seed(3)
    S, Z = 64, 8
    z = torch.randn(2, S, Z, generator=g, dtype=torch.float64)
    z[1, :, -1] = 0.7
    mu, L = metrics.fit_moments(z)
    c = z - z.mean(1, keepdim=True)
    cov = c.transpose(1, 2) @ c / (S - 1)
    torch.testing.assert_close(L[0] @ L[0].T, cov[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L[1, :-1, :-1] @ L[1, :-1, :-1].T, cov[1, :-1, :-1], rtol=1e-8, atol=1e-8)
    kl = metrics.gaussian_term(mu, L, S)
    assert torch.isfinite(kl).all() and float(kl[1]) > float(kl[0]) + 10


def test_gradient_reaches_the_generator_through_mu_and_sigma():
    # (1) With the noise fixed the estimate is a smooth function of G_phi's parameters (c, W): autograd
    # through the mean, the covariance and the Cholesky factor agrees with finite differences.
    g = torch.Generator().manual_seed(4)
    S, Z, E, B = 9, 3, 4, 2
    c = torch.randn(Z, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(Z, E, generator=g, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(B, S, E, generator=g, dtype=torch.float64)

    def estimate(c, w):
        mu, L = metrics.fit_moments(c + eps @ w.T)                                  # (B, S, Z) samples
        return metrics.gaussian_term(mu, L, S)

    assert torch.autograd.gradcheck(estimate, (c, w))
    # (2) The gradient is unbiased: averaged over 20,000 fits of S = 8 samples it matches the gradient of
    # torch.distributions' exact KL(N(c, W W^T) || N(0, I)), within 5 standard errors (20 groups).
    S, Z, E, N = 8, 4, 4, 20000
    c = torch.randn(Z, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.eye(Z, dtype=torch.float64) + 0.3 * torch.randn(Z, E, generator=g, dtype=torch.float64)
    w.requires_grad_()
    groups = []
    for eps in torch.randn(20, N // 20, S, E, generator=g, dtype=torch.float64):
        mu, L = metrics.fit_moments(c + eps @ w.T)
        gc, gw = torch.autograd.grad(metrics.gaussian_term(mu, L, S).mean(), (c, w))
        groups.append(torch.cat([gc, gw.reshape(-1)]))
    groups = torch.stack(groups)                                                    # (20, Z + Z E)
    ref = torch.cat([x.reshape(-1) for x in torch.autograd.grad(mvn_kl_to_standard(c, w @ w.T), (c, w))])
    se = groups.std(0) / math.sqrt(groups.shape[0])
    assert float(ref.abs().max()) > 0.5
    assert float(((groups.mean(0) - ref).abs() / (se + 1e-12)).max()) < 5, (groups.mean(0), ref, se)


# ----------------------------------------------------------------------------------------------------
# Whitening, its artifact, and the composed estimate at the exact critic
# ----------------------------------------------------------------------------------------------------


def test_whiten_matches_multivariate_normal_and_is_exact_in_sample():
    g = torch.Generator().manual_seed(5)
    B, S, Z = 3, 200, 6
    mean = torch.randn(B, Z, generator=g, dtype=torch.float64)
    w = torch.randn(B, Z, Z, generator=g, dtype=torch.float64)
    z = mean.unsqueeze(1) + torch.randn(B, S, Z, generator=g, dtype=torch.float64) @ w.transpose(1, 2)
    mu, L = metrics.fit_moments(z)
    # Any samples: log N(z; mu, L L^T) = -|u|^2 / 2 - sum log L_ii - Z/2 log 2 pi, u = whiten(z).
    z_new = torch.randn(B, 50, Z, generator=g, dtype=torch.float64) * 2
    u = metrics.whiten(z_new, mu, L)                                                # (B, 50, Z)
    ref = D.MultivariateNormal(mu.unsqueeze(1), scale_tril=L.unsqueeze(1)).log_prob(z_new)
    mine = (-0.5 * u.pow(2).sum(-1) - torch.diagonal(L, dim1=1, dim2=2).log().sum(-1, keepdim=True)
            - 0.5 * Z * math.log(2 * math.pi))
    torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-10)
    # The samples that fitted mu, L: mean exactly 0, covariance exactly I.
    u_in = metrics.whiten(z, mu, L)                                                 # (B, S, Z)
    eye = torch.eye(Z, dtype=torch.float64).expand(B, Z, Z)
    torch.testing.assert_close(u_in.mean(1), torch.zeros(B, Z, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(u_in.transpose(1, 2) @ u_in / (S - 1), eye, rtol=0, atol=1e-10)
    # float32 in, float32 out (the critic's dtype).
    assert metrics.whiten(z.float(), mu, L).dtype == torch.float32


def test_whitening_artifact_matches_monte_carlo():
    # The trap of issue 29: a Gaussian q whitened with a fit on S OTHER samples is N(d, M) per sentence; its
    # KL from N(0, I), averaged over N fits, is whitening_artifact(S, Z) (12.9 nats at S = 64, Z = 32,
    # three times the first-order Z(Z+1)/(4(S-1)) = 4.2; 0.29 at S = 1,024).
    g = torch.Generator().manual_seed(6)
    Z = 32
    for S, N, expect in ((64, 2000, 12.94), (1024, 400, 0.289)):
        z = torch.randn(N, S, Z, generator=g, dtype=torch.float64)                 # q = N(0, I): no loss
        mu, L = metrics.fit_moments(z)
        # the whitened law of fresh samples: u = L^-1 (z - mu) ~ N(-L^-1 mu, L^-1 L^-T)
        linv = torch.linalg.inv(L)
        kl = mvn_kl_to_standard(-(linv @ mu.unsqueeze(-1)).squeeze(-1), linv @ linv.transpose(1, 2))
        se = float(kl.std()) / math.sqrt(N)
        assert abs(metrics.whitening_artifact(S, Z) - expect) < 0.01 * expect
        assert abs(float(kl.mean()) - metrics.whitening_artifact(S, Z)) < 4 * se, (S, float(kl.mean()), se)


def mixture(B: int, Z: int, seps, seed: int):
    """B two-component Gaussian mixtures with known moments: z = m_b + A_b y, where y is N(0, I) except
    along a unit vector v_b, where it is 1/2 N(+a, 1 - a^2) + 1/2 N(-a, 1 - a^2), components seps[b]
    standard deviations from the centre (a = sep / sqrt(1 + sep^2)): E y = 0, Cov y = I, so q_b has
    mean m_b and covariance A_b A_b^T (singular values in [0.4, 1.4]: far from whitened), and
    KL(q_b || r_b) = KL(law of y || N(0, I)) grows with sep. Returns sample_fn(n, generator) -> (B, n, Z),
    log_q(z) -> (B, n), the mean (B, Z) and the covariance (B, Z, Z), all float64."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(B, Z, generator=g, dtype=torch.float64) * 0.8
    U = torch.linalg.qr(torch.randn(B, Z, Z, generator=g, dtype=torch.float64))[0]
    A = U * (torch.rand(B, 1, Z, generator=g, dtype=torch.float64) + 0.4)            # (B, Z, Z)
    v = torch.nn.functional.normalize(torch.randn(B, Z, generator=g, dtype=torch.float64), dim=-1)
    sep = torch.tensor(seps, dtype=torch.float64)
    a = (sep / (1 + sep ** 2).sqrt()).view(B, 1, 1)
    shift = (A @ v.unsqueeze(-1)).squeeze(-1) * a.view(B, 1)                        # (B, Z): A a v
    vv = v.unsqueeze(-1) * v.unsqueeze(-2)                                          # (B, Z, Z)
    comp_cov = A @ (torch.eye(Z, dtype=torch.float64) - a ** 2 * vv) @ A.transpose(1, 2)

    def sample_fn(n: int, generator=None) -> torch.Tensor:
        sign = torch.randint(0, 2, (B, n, 1), generator=generator, dtype=torch.float64) * 2 - 1
        y = torch.randn(B, n, Z, generator=generator, dtype=torch.float64)         # (B, n, Z)
        along = (y @ v.unsqueeze(-1)) * v.unsqueeze(1)                              # y's part along v
        y = y - along + along * (1 - a ** 2).sqrt() + sign * a * v.unsqueeze(1)
        return m.unsqueeze(1) + y @ A.transpose(1, 2)

    comps = [D.MultivariateNormal(m + sgn * shift, covariance_matrix=comp_cov) for sgn in (1, -1)]

    def log_q(z: torch.Tensor) -> torch.Tensor:
        zt = z.transpose(0, 1)                                                      # (n, B, Z)
        return (torch.logsumexp(torch.stack([c.log_prob(zt) for c in comps]), 0) - math.log(2)).T

    return sample_fn, log_q, m, A @ A.transpose(1, 2)


def test_ac_kl_at_the_exact_critic_equals_the_mixture_kl():
    # KL(q || p) = E_q[log r - log p] + KL(q || r), r = N(mean, cov) of q's own moments. With the exact
    # moments and the exact critic nu*(u) = log q_u(u) - log N(u; 0, I) (q_u the law of whitened z),
    # ac_kl(gaussian term, nu*(whitened q samples), nu*(N(0, I) samples)) is the Monte-Carlo truth.
    B, Z, n = 3, 3, 200_000
    sample_fn, log_q, mean, cov = mixture(B, Z, (2.0, 3.0, 4.0), seed=7)
    g = torch.Generator().manual_seed(8)
    z = sample_fn(n, g)                                                             # (B, n, Z)
    terms = log_q(z) - metrics.standard_normal_logpdf(z)                            # (B, n)
    truth, se = terms.mean(1), terms.std(1) / math.sqrt(n)
    L = torch.linalg.cholesky(cov)
    gauss = mvn_kl_to_standard(mean, cov)                                           # exact moments
    log_det_l = torch.diagonal(L, dim1=1, dim2=2).log().sum(-1, keepdim=True)     # (B, 1)

    def nu_star(u):                                                                 # (B, n, Z) -> (B, n)
        # q_u(u) = q(mean + L u) |det L|: the density of u = L^-1 (z - mean)
        z_u = mean.unsqueeze(1) + (L.unsqueeze(1) @ u.unsqueeze(-1)).squeeze(-1)
        return log_q(z_u) + log_det_l - metrics.standard_normal_logpdf(u)

    u_q = metrics.whiten(z, mean, L)
    u_p = torch.randn(B, n, Z, generator=g, dtype=torch.float64)
    est = metrics.ac_kl(gauss, nu_star(u_q), nu_star(u_p))                           # (B,)
    residual = truth - gauss
    assert bool((residual > 0.15 * truth).all()), (residual, truth)                 # the residual matters
    assert float(((est - truth).abs() / (4 * se + 0.01)).max()) < 1, (est, truth, se)


# ----------------------------------------------------------------------------------------------------
# A fresh critic: the Gaussian control (Z = 32) and the mixtures with a trained residual critic (slow)
# ----------------------------------------------------------------------------------------------------


def test_residual_check_runs_without_a_condition():
    # The plumbing in a few updates: an unconditional critic nu(u), shapes, dtype, the trace, bad arguments.
    g = torch.Generator().manual_seed(13)
    torch.manual_seed(13)
    kl, trace = metrics.residual_check(lambda n: torch.randn(2, n, 3, generator=g) * 3 + 1,
                                       lambda: torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(-2)),
                                       steps=20, n_fit=64, n_critic=16, eval_rounds=2, generator=g)
    assert kl.shape == (2,) and kl.dtype == torch.float64 and torch.isfinite(kl).all() and len(trace) == 10
    with pytest.raises(ValueError):
        metrics.residual_check(lambda n: torch.randn(2, n, 3), lambda: None, steps=5, n_fit=8, n_critic=16)


@pytest.mark.slow
def test_residual_check_gaussian_control_reads_nothing():
    # q(z|x_b) = N(m_b, W_b W_b^T), Z = 32, 8 sentences: KL(q || r) = 0. A fresh critic, 1,500 updates on
    # in-sample-whitened batches of fits on 1,024 fresh samples, must read <= 0.05 nats (issue 29, item 4).
    torch.manual_seed(9)
    g = torch.Generator().manual_seed(9)
    B, Z = 8, 32
    mean = torch.randn(B, Z, generator=g) * 2
    w = torch.randn(B, Z, Z, generator=g) / math.sqrt(Z) * (torch.rand(B, 1, Z, generator=g) * 2 + 0.1)

    def sample_fn(n: int) -> torch.Tensor:
        return mean.unsqueeze(1) + torch.randn(B, n, Z, generator=g) @ w.transpose(1, 2)

    kl, trace = metrics.residual_check(sample_fn, lambda: MLPCritic(Z, B, 128), torch.eye(B).unsqueeze(1),
                                       steps=1500, n_fit=1024, n_critic=64, generator=g)
    assert kl.shape == (B,) and kl.dtype == torch.float64 and len(trace) == 10
    assert float(kl.mean()) <= 0.05 and float(kl.max()) <= 0.05, kl
    assert float(kl.min()) > -0.05, kl                                              # and no nonsense below


@pytest.mark.slow
def test_ac_estimate_with_a_trained_residual_critic_on_mixtures():
    # Four mixtures in Z = 4 whose residual KL(q || r) is 10-36% of the KL (Monte-Carlo truth 2.0-3.2
    # nats): Gaussian term (fit on 16,384 samples) + residual_check's fresh critic within 10% of the truth.
    B, Z = 4, 4
    sample_fn, log_q, mean, cov = mixture(B, Z, (3.5, 2.5, 3.0, 4.0), seed=10)
    g = torch.Generator().manual_seed(11)
    z = sample_fn(200_000, g)
    terms = log_q(z) - metrics.standard_normal_logpdf(z)
    truth = terms.mean(1)                                                           # (B,), se < 0.01
    gauss_exact = mvn_kl_to_standard(mean, cov)
    assert bool(((truth - gauss_exact) / truth > 0.08).all())                       # the residual matters
    mu, L = metrics.fit_moments(sample_fn(16384, g))
    gauss = metrics.gaussian_term(mu, L, 16384)
    torch.manual_seed(12)
    resid, trace = metrics.residual_check(lambda n: sample_fn(n, g).float(), lambda: MLPCritic(Z, B, 128),
                                          torch.eye(B).unsqueeze(1), steps=2000, n_fit=1024, n_critic=64,
                                          generator=g)
    est = gauss + resid
    rel = (est - truth) / truth
    assert float(rel.abs().max()) < 0.10, (est, truth, gauss, resid)


def test_fit_moments_names_non_finite_samples():
    # A diverged model's NaN samples: a FloatingPointError (one line via data.run_script), not a jitter loop.
    z = torch.randn(2, 40, 4)
    z[1, 3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        metrics.fit_moments(z)

"""Autograder of assignment 6. Run: pytest assignments/06_critic_vs_exact_kl"""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grading import call, student_fixture  # noqa: E402

D = torch.distributions
Z = 32                                                   # the authors' latent size (and noise size E)

student = student_fixture(__file__)              # student.py, or the file(s) in STUDENT_FILE


def authors_q(seed=0):
    """q(z|x) of one sentence under the authors' affine encoder at initialisation: W (the noise columns of
    G's weight) uniform in [-0.1, 0.1], the mean A h + c drawn as 0.5 * N(0, I). Float32, as in a model."""
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(Z, Z, generator=g, dtype=torch.float64) * 0.2 - 0.1
    mean = 0.5 * torch.randn(Z, generator=g, dtype=torch.float64)
    return mean.float(), W.float()


def critic(width=128):
    """nu(z): an MLP Z -> 128 -> 128 -> 128 -> 1 with LeakyReLU, the same initial weights for everyone."""
    torch.manual_seed(0)
    L, A = torch.nn.Linear, torch.nn.LeakyReLU
    return torch.nn.Sequential(L(Z, width), A(), L(width, width), A(), L(width, width), A(), L(width, 1))


def reference_kl(mean, W):
    """KL(N(mean, W W^T) || N(0, I)) for a square W, in float64, without an SVD: log det(W W^T) = 2 log|det W|."""
    mean, W = mean.double(), W.double()
    return 0.5 * (W.pow(2).sum() + mean.pow(2).sum(-1) - W.shape[0] - 2 * torch.linalg.slogdet(W)[1])


# ----------------------------------------------------------------------------------------------------
# (a) the exact KL and the ideal critic
# ----------------------------------------------------------------------------------------------------


def test_exact_kl_matches_torch_distributions(student):
    torch.manual_seed(0)
    W = torch.randn(4, 6)                                # Z = 4 latent, E = 6 noise dimensions
    mean = torch.randn(3, 4)                             # three sentences
    q = D.MultivariateNormal(mean.double(), covariance_matrix=(W.double() @ W.double().T))
    want = D.kl_divergence(q, D.MultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)))
    got = torch.as_tensor(call(student, "exact_kl", mean, W))
    assert tuple(got.shape) == (3,), f"one KL per mean: shape (3,), got {tuple(got.shape)}"
    torch.testing.assert_close(got.double(), want, msg=lambda m: f"KL(N(m, W W^T) || N(0, I)) is wrong: {m}")


def test_exact_kl_in_float64_for_a_nearly_singular_W(student):
    # singular values from 1e-4 to 2: W W^T has eigenvalues down to 1e-8, below float32's resolution next to 4
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(Z, Z, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(Z, Z, generator=g, dtype=torch.float64))[0]
    W = (U @ torch.diag(torch.logspace(-4, math.log10(2), Z, dtype=torch.float64)) @ V.T).float()
    mean = torch.full((Z,), 0.3)
    got = torch.as_tensor(call(student, "exact_kl", mean, W))
    assert got.dtype == torch.float64, f"return the KL in float64, got {got.dtype}"
    want = float(reference_kl(mean, W))
    assert float(got) == pytest.approx(want, rel=1e-6), (
        f"KL = {float(got):.4f}, should be {want:.4f}: compute log det from W's singular values in float64, "
        "not from a float32 covariance W W^T")


def test_log_ratio_is_the_ideal_critic(student):
    torch.manual_seed(0)
    W, mean = torch.randn(5, 7), torch.randn(5)          # Z = 5, E = 7
    z = torch.randn(10, 5) * 2
    q = D.MultivariateNormal(mean.double(), covariance_matrix=W.double() @ W.double().T)
    want = q.log_prob(z.double()) - D.Normal(0.0, 1.0).log_prob(z.double()).sum(-1)
    got = torch.as_tensor(call(student, "log_ratio", z, mean, W))
    assert got.dtype == torch.float64, f"return nu*(z) in float64, got {got.dtype}"
    torch.testing.assert_close(got, want, msg=lambda m: f"nu*(z) = log q(z) - log p(z) is wrong: {m}")


def test_dual_estimate(student):
    for c in (0.0, 1.0, -2.0):
        got = float(call(student, "dual_estimate", torch.full((10,), c), torch.full((7,), c)))
        assert got == pytest.approx(c - math.exp(c) + 1, abs=1e-6), f"nu = {c} everywhere should give c - e^c + 1"
    got = float(call(student, "dual_estimate", torch.zeros(4), torch.full((4,), 100.0)))
    assert math.isfinite(got) and got == pytest.approx(1 - math.exp(100), rel=1e-9), (
        "exp(100) overflows float32: compute exp in float64")


# ----------------------------------------------------------------------------------------------------
# (b) the critic, trained as the authors train it, against the exact KL
# ----------------------------------------------------------------------------------------------------


def test_train_critic_follows_the_authors_recipe(student):
    torch.manual_seed(0)
    sizes = []

    def sample_q(n):
        sizes.append(n)
        return torch.randn(n, Z) * 0.3 + 1.0

    nu = critic()
    before = [p.detach().clone() for p in nu.parameters()]
    call(student, "train_critic", sample_q, lambda n: torch.randn(n, Z), nu, 3)      # default lr, updates, batch
    assert sizes == [32] * 15, (f"3 steps of the authors' recipe are 5 updates each on fresh batches of 32 "
                                f"samples: 15 draws of 32, got {len(sizes)} draws of sizes {sorted(set(sizes))}")
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(nu.parameters(), before))
    assert 1e-6 < moved < 5e-4, f"after 15 Adam updates at lr 1e-5 a weight moves by about 1e-4; the largest moved {moved:.2e}"


def test_train_critic_learns_a_small_kl(student):
    # Z = 2, KL = 2.2: with a larger lr and batch the same trainer gets within 10%
    torch.manual_seed(0)
    q = D.Independent(D.Normal(torch.tensor([1.5, -1.0]), torch.tensor([0.4, 0.7])), 1)
    p = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)
    kl = float(D.kl_divergence(q, p))
    L, A = torch.nn.Linear, torch.nn.LeakyReLU
    nu = torch.nn.Sequential(L(2, 64), A(), L(64, 64), A(), L(64, 1))
    call(student, "train_critic", lambda n: q.sample((n,)), lambda n: p.sample((n,)), nu, 400, lr=3e-3, updates=1, batch=512)
    with torch.no_grad():
        est = float(call(student, "dual_estimate", nu(q.sample((100_000,))).squeeze(-1), nu(p.sample((100_000,))).squeeze(-1)))
    assert abs(est - kl) < 0.1 * kl, f"the trained critic estimates {est:.3f}, the true KL is {kl:.3f}"


def test_measure_the_critic_against_the_exact_kl(student):
    mean, W = authors_q()
    kl = float(reference_kl(mean, W))                    # 43.48 nats
    nu = critic()
    before = [p.detach().clone() for p in nu.parameters()]
    r = call(student, "measure", mean, W, nu, steps=300, c=5.0, n_eval=128, seed=0)
    assert not all(torch.equal(p.detach(), b) for p, b in zip(nu.parameters(), before)), "measure must train the critic"
    assert r["exact"] == pytest.approx(kl, rel=1e-6), f"the exact KL of this q is {kl:.3f}, got {r['exact']:.3f}"
    # measured with the reference solution: trained 3.3 (7.5% of the KL), ideal 43.8, ideal + 5: 48.8
    assert r["trained"] < 0.25 * kl, (f"after 300 steps of the authors' recipe the critic should report a small "
                                      f"fraction of the KL {kl:.1f}; it reports {r['trained']:.2f}")
    assert abs(r["ideal"] - kl) < 0.1 * kl, f"the ideal critic with 128 + 128 samples reports {r['ideal']:.2f}, the KL is {kl:.2f}"
    assert r["ideal_mean_exp_p"] < 1e-3, (f"128 prior samples almost never land where q lives: the sampled "
                                          f"E_p[exp nu*] should be ~0 (its true value is 1), got {r['ideal_mean_exp_p']:.3g}")
    assert r["ideal_plus_c"] - r["ideal"] == pytest.approx(5.0, abs=0.01), (
        "nu* + c should be reported as (ideal estimate) + c: E_p[exp(nu* + c)] is still sampled as ~0")
    assert r["ideal_plus_c"] > kl + 4.5, "so the estimate overshoots the KL: with finite samples it is no lower bound"

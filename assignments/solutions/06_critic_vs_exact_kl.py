r"""Reference solution of assignment 6: the critic vs the exact KL, with the affine encoder.

The authors' encoder z = A h + c + W eps, eps ~ N(0, I_E), makes q(z|x) = N(m, W W^T), m = A h + c: its KL
to p = N(0, I_Z) is known in closed form. Here that exact KL is the ground truth for the Fenchel-dual
estimate of Eq. (7)/(9), with the critic trained as the authors train it, and with the ideal critic.
Written out in full, without the repository's code.
"""
import math

import torch


def exact_kl(mean, W):
    r"""KL(N(mean, W W^T) || N(0, I)) in float64, from W's singular values s_1..s_Z:

        KL = 1/2 ( tr(W W^T) + |m|^2 - Z - log det(W W^T) ),   tr(W W^T) = sum s_i^2,  log det = 2 sum log s_i

    No covariance matrix is formed: W W^T squares W's condition number, and its smallest eigenvalues
    (s_min^2, around 1e-6 at the authors' initialisation) sink below float32's resolution."""
    mean, W = mean.double(), W.double()                 # (..., Z), (Z, E)
    Z = W.shape[0]
    s = torch.linalg.svdvals(W)                         # (min(Z, E),)
    if s.shape[0] < Z or bool((s == 0).any()):          # E < Z or rank-deficient: q has no density, KL = inf
        return torch.full(mean.shape[:-1], math.inf, dtype=torch.float64)
    trace = s.pow(2).sum()
    log_det = 2.0 * s.log().sum()
    return 0.5 * (trace + mean.pow(2).sum(-1) - Z - log_det)          # (...)


def log_ratio(z, mean, W):
    r"""The ideal critic nu*(z) = log q(z) - log p(z), q = N(mean, W W^T), p = N(0, I), in float64.

    With W = U S V^T (thin SVD), W W^T = U S^2 U^T, so (z - m)^T (W W^T)^{-1} (z - m) = |S^{-1} U^T (z - m)|^2
    and log det(W W^T) = 2 sum log S; the (2 pi)^{Z/2} of both densities cancels."""
    z, mean, W = z.double(), mean.double(), W.double()                # (N, Z), (Z,), (Z, E)
    U, S, _ = torch.linalg.svd(W, full_matrices=False)                # U (Z, Z), S (Z,) when E >= Z
    white = ((z - mean) @ U) / S                                       # (N, Z): S^{-1} U^T (z - m)
    log_q = -0.5 * white.pow(2).sum(-1) - S.log().sum()               # + const
    log_p = -0.5 * z.pow(2).sum(-1)                                   # + the same const
    return log_q - log_p                                               # (N,)


def dual_estimate(nu_q, nu_p):
    # Eq. (7) with the "+1": E_q[nu] - E_p[exp(nu)] + 1, in float64 (exp(nu) overflows float32 at nu > 88)
    return nu_q.double().mean() - nu_p.double().exp().mean() + 1.0


def train_critic(sample_q, sample_p, critic, steps, lr=1e-5, updates=5, batch=32):
    # The authors' recipe: Adam, lr 1e-5, 5 critic updates per training step, batches of 32, fresh samples
    # of q and of p for every update; the critic maximises the estimate (Eq. 9), so minimise its negative.
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        for _ in range(updates):
            z_q, z_p = sample_q(batch), sample_p(batch)                # (batch, Z) each
            loss = -dual_estimate(critic(z_q).squeeze(-1), critic(z_p).squeeze(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return critic


def measure(mean, W, critic, steps=300, c=5.0, n_eval=128, seed=0):
    """Train `critic` on q = N(mean, W W^T) vs p = N(0, I) with the authors' recipe, then evaluate as the
    authors do (n_eval samples of q and n_eval of p): the trained critic, the ideal one, the ideal one + c."""
    gen = torch.Generator().manual_seed(seed)
    Z, E = W.shape
    mean64, W64 = mean.double(), W.double()

    def sample_q(n):                                    # z = m + W eps: how the affine encoder samples
        return (mean64 + torch.randn(n, E, generator=gen, dtype=torch.float64) @ W64.T).float()

    def sample_p(n):
        return torch.randn(n, Z, generator=gen)

    train_critic(sample_q, sample_p, critic, steps)
    z_q, z_p = sample_q(n_eval), sample_p(n_eval)       # the same evaluation samples for every critic
    with torch.no_grad():
        trained = dual_estimate(critic(z_q).squeeze(-1), critic(z_p).squeeze(-1))
    ideal_q, ideal_p = log_ratio(z_q, mean, W), log_ratio(z_p, mean, W)
    return {
        "exact": float(exact_kl(mean, W)),
        "trained": float(trained),
        "ideal": float(dual_estimate(ideal_q, ideal_p)),
        "ideal_plus_c": float(dual_estimate(ideal_q + c, ideal_p + c)),
        # the sampled E_p[exp(nu*)], whose true value is exactly 1 (the integral of q)
        "ideal_mean_exp_p": float(ideal_p.exp().mean()),
    }

r"""Metrics shared by every script: latent-variable diagnostics, perplexities and text metrics.

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
Each function states its formula and where the formula comes from. Nothing here trains a model.

Paper section -> code
    Eq. (3), Gaussian baselines (§5.1)        -> gaussian_kl, gaussian_mi
    Eq. (7)-(9), the dual form of the KL      -> dual_kl, DualKL (pooled over a split)
    §3.2 / §5.1: MI, active units, perplexity -> mutual_info, active_units, perplexity, log_mean_exp
    honest bounds (importance sampling)       -> fit_gaussian_proposal, defensive_proposal, iw_nll, iw_bound
    exact diagnostics of the affine encoder   -> affine_posterior_kl, AffinePosteriors, aggregate_kl_mi
    a KL lower bound in expectation (any q)   -> kl_lower_bound
    (beyond the paper) adaptive contrast      -> fit_moments, logdet_bias, gaussian_term, whitening_artifact,
                                                 whiten, ac_kl, residual_check
    §5.2-§5.3, Tables 7-8 (BLEU, BOW, Dist.)  -> sentence_bleu, bleu_recall_precision, corpus_bleu,
                                                 bow_similarity, bow_metrics, distinct_intra, distinct_inter
    Table 5 forward / reverse PPL, style RPPL -> NGramLM (5-gram modified Kneser-Ney), forward_reverse_ppl, rppl_authors
    dialog: is the prior any use (§5.3)       -> two_sample_accuracy
    §5.1 evaluation of an LM VAE over a split -> LMEvaluation, chunked_nll, EVAL_TOKENS
    Tables 4, 5: decoding a trained model     -> decode, lm_samples, write_interpolation, prior_forward_reverse
    (reporting)                               -> format_row, honest_notes, warn_collapse, plot_run

Shapes: B examples, S samples per example, Z latent dimensions. KLs are summed over latent dimensions, per example."""
import math
import os
from collections import Counter, defaultdict
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# KL divergences: closed form (Gaussian) and the Fenchel dual (implicit posteriors)
# ----------------------------------------------------------------------------------------------------

def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""KL(N(mu, diag(exp(logvar))) || N(0, I)) = 1/2 sum_d (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1) per
    example (Kingma & Welling 2014, App. B). mu, logvar: (..., Z) -> (...)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


def dual_kl(nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    r"""The Fenchel-dual estimate of KL(q || p) from a critic nu on samples of q and of p (Eq. 7-9):
        KL(q || p) = max_nu  E_q[nu(z)] - E_p[exp(nu(z))] + 1,      optimum nu*(z) = log q(z) / p(z)

    nu_q (..., S) on z ~ q, nu_p (..., S') on z ~ p. Maximised: the critic's objective (Eq. 9). The "+1":
    f(t) = t log t has the conjugate f*(u) = exp(u - 1) (Nguyen, Wainwright & Jordan 2010), so KL = max_T E_q[T] -
    E_p[exp(T - 1)], T = nu + 1; the paper's Eq. (7) omits it (its maximum is KL - 1), the authors' evaluation code
    adds it back, as we do. With exact expectations it is a lower bound for every nu; with S prior samples it is NOT:
    once KL >> log S no prior sample falls where q lives, and nu* + c reads about KL + 1 + c (tests/test_metrics.py:
    true KL 23.1, S = 128: nu* 24.2, nu* + 5 29.2). Jointly trained critics err low in practice (0-7 nats where the
    exact KL is 40-220; docs/honest_evaluation.md). exp(nu) in float64; returns float32 or the inputs' wider dtype."""
    out_dtype = torch.promote_types(nu_q.dtype, torch.float32)
    nu_q, nu_p = nu_q.double(), nu_p.double()
    return (nu_q.mean(-1) - nu_p.exp().mean(-1) + 1.0).to(out_dtype)


def mutual_info(kl_cond, kl_agg):
    r"""I(x; z) under q(x, z) = p_data(x) q(z|x), from the identity (Hoffman & Johnson 2016; Eq. 11):
        E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z))   =>   I = E_x KL(q(z|x)||p) - KL(q(z)||p)

    kl_cond: per-example KLs or their mean; q(z) = E_x q(z|x). It inherits dual estimates' errors (it can be < 0). On
    N sentences I(x; z) <= H(x) = log N: more (the paper's PTB 12.2 > ln 42,068 = 10.65) is an estimator artifact."""
    kl_cond = kl_cond.float().mean() if isinstance(kl_cond, torch.Tensor) else kl_cond
    return kl_cond - kl_agg


def gaussian_mi(mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor, with_se: bool = False):
    r"""He et al. (2019)'s Monte-Carlo estimate of I(x; z) for Gaussian posteriors q(z|x) = N(mu, sigma^2)
    (He, Spokoyny, Neubig, Berg-Kirkpatrick, "Lagging inference networks", ICLR 2019, calc_mi):
        I = E_x E_{q(z|x)} [log q(z|x)] - E_{q(x,z)} [log q(z)]
        E_{q(z|x)} log q(z|x) = -Z/2 log(2 pi) - 1/2 sum_d (1 + logvar_d)       (minus the entropy)
        log q(z) ~= log (1/B) sum_i q(z | x_i)                                   (the batch as q(x))

    mu, logvar: (B, Z); z: (B, Z) or (B, S, Z) samples of q(z|x_b). Biased for small B (at most about
    log B). with_se=True returns (MI, SE), SE = std(log q(z)) / sqrt(B*S), with one sample per sentence an
    upper bound on the Monte-Carlo error (the spread between sentences enters it)."""
    mu, logvar, z = mu.double(), logvar.double(), z.double()
    if z.dim() == 2:
        z = z.unsqueeze(1)                                               # (B, S, Z)
    B, S, Z = z.shape
    neg_entropy = (-0.5 * Z * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    # log q(z_bs | x_i) for every sample (b, s) and posterior i, in chunks so that test sets fit: (chunk, B)
    flat = z.reshape(B * S, 1, Z)
    inv_var = (-logvar).exp().unsqueeze(0)                               # (1, B, Z)
    log_norm = -0.5 * (Z * math.log(2 * math.pi) + logvar.sum(-1)).unsqueeze(0)   # (1, B)
    chunk = max(1, 2 ** 22 // max(1, B * Z))
    log_qz = torch.cat([torch.logsumexp(-0.5 * ((zz - mu.unsqueeze(0)) ** 2 * inv_var).sum(-1) + log_norm, dim=1)
                        for zz in flat.split(chunk)]) - math.log(B)     # (B*S,)
    mi = float(neg_entropy - log_qz.mean())
    if not with_se:
        return mi
    return mi, (float(log_qz.std() / math.sqrt(log_qz.numel())) if log_qz.numel() > 1 else float("nan"))


def active_units(means: torch.Tensor, threshold: float = 0.01, unbiased: bool = False,
                 mean_noise_var: Optional[torch.Tensor] = None):
    r"""Active units (Burda et al. 2016): AU = #{d : Var_x(E_{q(z|x)}[z_d]) >= threshold}, delta = 0.01.

    means (N, Z): exact for a Gaussian q, else the mean of S samples, whose variance over x adds E_x[Var(z_d|x)] / S
    of noise, subtracted given mean_noise_var (N, Z) = each sample variance / S. -> (count, per-dimension
    variance (Z,)); the variance divides by N as the authors' code, or by N - 1 as He et al. (2019) (unbiased=True)."""
    var = means.double().var(dim=0, unbiased=unbiased)
    if mean_noise_var is not None:
        var = var - mean_noise_var.double().mean(0)
    return int((var >= threshold).sum()), var.float()


# ----------------------------------------------------------------------------------------------------
# Likelihoods and perplexity
# ----------------------------------------------------------------------------------------------------

def log_mean_exp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""log (1/n) sum_i exp(x_i) along `dim`, stable (logsumexp), computed in float32 or wider."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def perplexity(nll_sum: float, n_words: int) -> float:
    r"""PPL = exp( sum of per-sentence negative log-likelihoods (nats) / number of words ).

    `n_words` counts every word and one </s> per sentence, not <s> (the authors' code, He et al. 2019, Kim
    et al. 2018): sum(length - 1) for data.py's <s> w_1 .. w_n </s>. For a VAE, nll_sum sums -ELBO or IW bounds."""
    if n_words <= 0:
        raise ValueError("perplexity needs at least one word")
    return math.exp(nll_sum / n_words)


def fit_gaussian_proposal(samples: torch.Tensor, jitter: float = 1e-4, diagonal: bool = False,
                          shrinkage: float = 0.0) -> torch.distributions.Distribution:
    r"""The proposal of an IW bound: per sentence, a Gaussian with the mean and covariance of posterior samples
    (B, S, Z), the covariance shrunk towards its diagonal by `shrinkage` (noisy from S samples in Z dimensions,
    singular when S <= Z), + jitter * I. Any proposal gives a valid bound (iw_nll); the closer to q, the tighter."""
    samples = samples.double()
    mean = samples.mean(1)                                               # (B, Z)
    centred = samples - mean.unsqueeze(1)                                # (B, S, Z)
    if diagonal:
        std = (centred.pow(2).mean(1) + jitter).sqrt()
        return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)
    cov = centred.transpose(1, 2) @ centred / samples.shape[1]           # (B, Z, Z)
    cov = (1 - shrinkage) * cov + shrinkage * torch.diag_embed(torch.diagonal(cov, dim1=1, dim2=2))
    cov = cov + jitter * torch.eye(samples.shape[-1], dtype=cov.dtype, device=cov.device)
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)


def defensive_proposal(samples: torch.Tensor, widen: float = 1.5,
                       jitter: float = 1e-4) -> torch.distributions.MixtureSameFamily:
    r"""Defensive importance sampling (Hesterberg 1995), the implicit models' IW proposal, from samples (B, S, Z):
        r(z) = 1/2 N(z; m, C) + 1/2 N(z; m, widen^2 diag(C)),   C shrunk towards its diagonal by Z / (S + Z)

    m, C: the samples' moments. The first follows q's correlations, the wider second covers its tails (a proposal
    narrower than the target gives rare, huge weights); r >= r_i / 2 caps every weight at 2x either component's."""
    S, Z = samples.shape[1], samples.shape[2]
    full = fit_gaussian_proposal(samples, jitter, shrinkage=Z / (S + Z))
    wide = torch.diag_embed(widen ** 2 * torch.diagonal(full.covariance_matrix, dim1=1, dim2=2))
    loc = torch.stack([full.loc, full.loc], 1)                           # (B, 2, Z)
    cov = torch.stack([full.covariance_matrix, wide], 1)                 # (B, 2, Z, Z)
    mix = torch.distributions.Categorical(probs=torch.full(loc.shape[:2], 0.5, dtype=loc.dtype,
                                                           device=loc.device))
    return torch.distributions.MixtureSameFamily(mix, torch.distributions.MultivariateNormal(loc,
                                                                                            covariance_matrix=cov))


def sample_proposal(r: torch.distributions.Distribution, K: int, generator=None) -> torch.Tensor:
    r"""K samples (K, B, Z) of a batch of Gaussians or of a defensive_proposal, drawn from `generator`
    (torch.distributions samplers only use the global generator)."""
    if isinstance(r, torch.distributions.MixtureSameFamily):
        comp = r.component_distribution
        B, C, Z = comp.loc.shape
        idx = torch.multinomial(r.mixture_distribution.probs, K, replacement=True, generator=generator).T  # (K, B)
        rows = torch.arange(B, device=idx.device).unsqueeze(0)
        loc, tril = comp.loc[rows, idx], comp.scale_tril[rows, idx]      # (K, B, Z), (K, B, Z, Z)
    else:
        loc, tril = r.loc.expand(K, *r.loc.shape), r.scale_tril
    eps = torch.randn(loc.shape, dtype=loc.dtype, device=loc.device, generator=generator)
    return loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)


def iw_nll(log_joint: torch.Tensor, log_proposal: torch.Tensor) -> torch.Tensor:
    r"""Importance-weighted upper bound on -log p(x) (Burda et al. 2016), per example:
        -log p(x) <= -log (1/K) sum_k p(x, z_k) / r(z_k),     z_k ~ r(z | x)

    log_joint, log_proposal: (B, K). Holds in expectation for any r with the right support, tightens with K,
    needs no critic. Its slack is unknown: a lower IW-NLL is a better guarantee, not a better likelihood."""
    return -log_mean_exp(log_joint.double() - log_proposal.double(), dim=-1)


def standard_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    r"""log N(z; 0, I) summed over the last dimension, the prior of every model here. (..., Z) -> (...)."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def iw_bound(log_lik: torch.Tensor, z: torch.Tensor, log_proposal: torch.Tensor) -> torch.Tensor:
    r"""iw_nll with the prior N(0, I): log_lik (B, K) = log p(x|z_k) from the decoder, z (B, K, Z) the
    samples, log_proposal (B, K) = log r(z_k|x). Returns (B,) in float64."""
    return iw_nll(log_lik.double() + standard_normal_logpdf(z.double()), log_proposal)


class DualKL:
    r"""dual_kl pooled over a whole split, batch by batch: mean over all q samples of nu - mean over all p
    samples of exp(nu) + 1. For nu(z), whose q is the aggregated posterior q(z) (all sentences' samples)."""

    def __init__(self):
        self.sum_q, self.n_q, self.sum_exp_p, self.n_p = 0.0, 0, 0.0, 0

    def add(self, nu_q: torch.Tensor, nu_p: torch.Tensor) -> None:
        self.sum_q += float(nu_q.double().sum())
        self.n_q += nu_q.numel()
        self.sum_exp_p += float(nu_p.double().exp().sum())
        self.n_p += nu_p.numel()

    def value(self) -> float:
        return self.sum_q / self.n_q - self.sum_exp_p / self.n_p + 1.0


# ----------------------------------------------------------------------------------------------------
# Exact diagnostics where q(z|x) is Gaussian, and a lower bound (in expectation) where it is implicit
# ----------------------------------------------------------------------------------------------------

def affine_posterior_kl(mean: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r"""KL( N(m, W W^T) || N(0, I) ) per example, exactly, in float64: the affine encoder's posterior z = m(x) + W eps,
    eps ~ N(0, I_E) (W: (Z, E), shared by all x; m: (B, Z)):
        KL = 1/2 ( ||W||_F^2 + |m|^2 - Z - log det(W W^T) ),   log det(W W^T) = 2 sum_i log s_i(W)

    A float32 W W^T loses the small eigenvalues that dominate log det (s_min = 1e-5: 56.8 for a true 58.5, or no
    Cholesky). A rank-deficient W puts q on a subspace, where the KL is infinite: returns +inf (the caller says so)."""
    w, mean = w.double(), mean.double()
    Z = w.shape[0]
    s = torch.linalg.svdvals(w)                                          # (min(Z, E),)
    if s.numel() < Z or float(s.min()) <= float(s.max()) * Z * torch.finfo(torch.float64).eps:
        return torch.full(mean.shape[:-1], math.inf, dtype=torch.float64, device=mean.device)
    return 0.5 * (w.pow(2).sum() + mean.pow(2).sum(-1) - Z - 2 * s.log().sum())


class AffinePosteriors:
    r"""N Gaussian posteriors with one shared covariance, q(z|x_n) = N(m_n, W W^T): the affine encoder
    over a split. Whitening with W = U diag(s) V^T turns every Mahalanobis distance into a Euclidean
    one, y = diag(1/s) U^T z, so all N densities at a sample cost one matrix product (float64)."""

    def __init__(self, means: torch.Tensor, w: torch.Tensor):
        self.means, self.w = means.double(), w.double()                  # (N, Z), (Z, E)
        u, s, _ = torch.linalg.svd(self.w, full_matrices=False)          # (Z, Z), (Z,)
        self.proj = u / s                                                # z @ proj = whitened y (Z, Z)
        Z = self.means.shape[1]
        self.log_norm = -0.5 * Z * math.log(2 * math.pi) - float(s.log().sum())   # -1/2 log det(2 pi C)
        self.my = self.means @ self.proj                                 # (N, Z) whitened means

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """n samples of every posterior: (N, n, Z), z = m + W eps."""
        eps = torch.randn(self.means.shape[0], n, self.w.shape[1], dtype=torch.float64,
                          device=self.means.device, generator=generator)
        return self.means.unsqueeze(1) + eps @ self.w.T

    def log_prob_own(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_ns | x_n) of samples z (N, S, Z) under their own posterior -> (N, S)."""
        d = z.double() @ self.proj - self.my.unsqueeze(1)
        return self.log_norm - 0.5 * d.pow(2).sum(-1)

    def log_prob_all(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_m | x_n) of samples z (M, Z) under every posterior n -> (M, N)."""
        y = z.double() @ self.proj                                       # (M, Z)
        # Direct differences, not |y|^2 + |m|^2 - 2 y.m: whitened coordinates reach 1e5 when W has a tiny
        # singular value, and that expansion would cancel catastrophically.
        d = torch.cdist(y, self.my, compute_mode="donot_use_mm_for_euclid_dist")   # (M, N)
        return self.log_norm - 0.5 * d.pow(2)


def aggregate_kl_mi(post: AffinePosteriors, kl_cond: torch.Tensor, samples_per_x: int = 4,
                    generator=None, chunk: int = 2048) -> dict:
    r"""Exact KL(q(z) || p) and I(x; z) of the aggregated posterior q(z) = (1/N) sum_n q(z|x_n) over the N sentences,
    Monte-Carlo over z only (every density in it is exact):
        I(x; z)        = E_n E_{z ~ q(z|x_n)} [ log q(z|x_n) - log q(z) ],
        log q(z)       = logsumexp_i log q(z|x_i) - log N                      (all N Gaussians)
        KL(q(z) || p)  = E_x KL(q(z|x) || p) - I(x; z)                         (Hoffman & Johnson 2016)

    kl_cond: (N,) exact KLs (affine_posterior_kl). Each term is <= log N (q(z) >= q(z|x_n) / N), so the MI never
    exceeds log N. Returns the MI, KL(q(z)||p), their standard error (the same) and log N."""
    N = post.means.shape[0]
    z = post.sample(samples_per_x, generator)                            # (N, S, Z)
    own = post.log_prob_own(z).reshape(-1)                               # (N*S,)
    flat = z.reshape(-1, z.shape[-1])
    log_qz = torch.cat([torch.logsumexp(post.log_prob_all(c), 1) for c in flat.split(chunk)]) - math.log(N)
    terms = own - log_qz                                                 # (N*S,), each <= log N
    mi = float(terms.mean())
    se = float(terms.std() / math.sqrt(terms.numel())) if terms.numel() > 1 else float("nan")
    return {"mi": mi, "kl_agg": float(kl_cond.double().mean()) - mi, "mi_se": se, "log_n": math.log(N)}


def kl_lower_bound(fit_samples: torch.Tensor, eval_samples: torch.Tensor) -> torch.Tensor:
    r"""A lower bound, in expectation, on KL(q(z|x) || N(0, I)) for ANY posterior we can sample, per example:
        KL(q || p) = E_q[log r - log p] + KL(q || r)  >=  E_q[log r - log p]      for every density r

    r: a Gaussian fitted to `fit_samples` (B, S1, Z); the average runs over `eval_samples` (B, S2, Z), drawn
    apart from the fit, so it is unbiased (exact when q is Gaussian and r fits it): unlike the critic's
    estimate, its expectation cannot exceed the KL (one reading can, by its Monte-Carlo error). (B,) float64."""
    r = fit_gaussian_proposal(fit_samples, jitter=1e-8)            # S1 >> Z: no shrinkage needed
    z = eval_samples.double().transpose(0, 1)                            # (S2, B, Z): batch dim last-but-one
    return (r.log_prob(z) - standard_normal_logpdf(z)).mean(0)


# ----------------------------------------------------------------------------------------------------
# Adaptive contrast (Mescheder et al. 2017, AVB §3.3): KL(q || p) = E_q[log r - log p] + KL(q || r), r =
# N(mu, Sigma) with q(z|x)'s moments: the first term in closed form (gaussian_term), the second, small when q
# is near Gaussian, by a critic on whitened samples (whiten, ac_kl), checked by a fresh one (residual_check)
# ----------------------------------------------------------------------------------------------------

def fit_moments(z: torch.Tensor, max_tries: int = 6) -> tuple:
    r"""The r of adaptive contrast, per sentence: mean and Cholesky factor of the sample covariance of S samples, with
    gradients through both (Mescheder et al. 2017, §3.3):
        mu_hat = 1/S sum_s z_s,    Sigma_hat = 1/(S-1) sum_s (z_s - mu_hat)(z_s - mu_hat)^T = L L^T

    z (B, S, Z) -> mu (B, Z), L (B, Z, Z) in float64 (a singular value of 1e-5 in W is an eigenvalue of 1e-10, lost
    in float32). S >= Z + 1 makes Sigma_hat positive definite almost surely; a sentence whose Cholesky fails anyway
    gets jitter * mean(diag Sigma_hat) * I, jitter = 1e-12, 1e-10, ... The check is a device sync (no CUDA graph)."""
    zd = z.double()
    S, Z = zd.shape[1], zd.shape[2]
    mu = zd.mean(1)                                                      # (B, Z)
    centred = zd - mu.unsqueeze(1)                                       # (B, S, Z)
    cov = centred.transpose(1, 2) @ centred / (S - 1)                    # (B, Z, Z), unbiased
    if not bool(torch.isfinite(cov).all()):                              # no jitter mends a NaN: say so
        raise FloatingPointError("fit_moments: non-finite posterior samples (the model diverged)")
    L, info = torch.linalg.cholesky_ex(cov)
    eye = torch.eye(Z, dtype=cov.dtype, device=cov.device)
    scale = torch.diagonal(cov, dim1=1, dim2=2).mean(-1).detach().clamp_min(torch.finfo(cov.dtype).tiny)
    jitter = torch.zeros_like(scale)                                     # (B,): 0 where the factor worked
    for k in range(max_tries):
        if not bool((info > 0).any()):
            break
        jitter = torch.where(info > 0, 10.0 ** (-12 + 2 * k) * scale, jitter)
        L, info = torch.linalg.cholesky_ex(cov + jitter[:, None, None] * eye)
    if bool((info > 0).any()):
        raise ValueError(f"fit_moments: no Cholesky factor for {int((info > 0).sum())} sentence(s), "
                         f"even with jitter 1e{-12 + 2 * (max_tries - 1)} x mean variance")
    return mu, L


def logdet_bias(n_samples: int, latent: int) -> float:
    r"""E[log det Sigma_hat] - log det Sigma for the unbiased sample covariance of S = n_samples Gaussian
    samples in Z = latent dimensions ((S-1) Sigma_hat ~ Wishart_Z(Sigma, S-1); Bishop 2006, "Pattern
    Recognition and Machine Learning", Eq. B.81; psi the digamma function):
        E[log det Sigma_hat] = log det Sigma + sum_{i=1..Z} psi((S - i) / 2) + Z log(2 / (S - 1))

    Negative (log det is concave): -10.37 at S = 64, Z = 32; -0.52 at S = 1024. Needs S > Z. Checked by
    Monte Carlo in tests/test_adaptive_contrast.py."""
    i = torch.arange(1, latent + 1, dtype=torch.float64)
    return float(torch.special.digamma((n_samples - i) / 2).sum()) + latent * math.log(2 / (n_samples - 1))


def gaussian_term(mu: torch.Tensor, L: torch.Tensor, n_samples: int, unbiased: bool = True) -> torch.Tensor:
    r"""The closed-form term of adaptive contrast, per sentence (Mescheder et al. 2017, §3.3). For r = N(mu, Sigma)
    with q's own moments, E_q[(z - mu)^T Sigma^-1 (z - mu)] = Z, so (Kingma & Welling 2014, App. B):
        E_q[log r(z) - log p(z)] = KL(N(mu, Sigma) || N(0, I)) = 1/2 (tr Sigma + |mu|^2 - Z - log det Sigma)

    tr Sigma = |L|_F^2, log det Sigma = 2 sum_i log L_ii; mu, L from fit_moments (S = n_samples) -> (B,) float64.
    unbiased=True removes two finite-sample biases (tr Sigma_hat has none; numbers at S = 64, Z = 32): log det
    Sigma_hat's, logdet_bias(S, Z) (uncorrected: +5.2 nats, 4% of a KL of 125; exact for a Gaussian q, else its
    fourth moments add to it), and |mu_hat|^2's, tr(Sigma) / S for any q (uncorrected: + tr(Sigma) / (2S) nats, 0.25
    at Sigma = I). For a Gaussian q result and gradient are then unbiased; per-sentence sd ~0.8 nats."""
    Z = mu.shape[-1]
    trace = L.pow(2).sum((-2, -1))                                       # (B,) tr(L L^T)
    logdet = 2 * torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)       # (B,) log det(L L^T)
    mean_sq = mu.pow(2).sum(-1)                                          # (B,)
    if unbiased:
        # E|mu_hat|^2 = |mu|^2 + tr(Sigma) / S
        mean_sq = mean_sq - trace / n_samples
        logdet = logdet - logdet_bias(n_samples, Z)
    return 0.5 * (trace + mean_sq - Z - logdet)


def whitening_artifact(n_fit: int, latent: int) -> float:
    r"""The KL that whitening alone makes, in expectation, when a Gaussian q is whitened with mu, L fitted on S = n_fit
    OTHER samples (whiten's trap): u ~ N(d, M), M = L^-1 Sigma L^-T, d = L^-1 (mu - mu_hat); with
    E[Sigma_hat^-1] = (S-1) Sigma^-1 / (S-Z-2) (inverse Wishart) and logdet_bias, for Z = latent,
        E KL(N(d, M) || N(0, I)) = 1/2 ( Z (S-1)(S+1) / (S (S-Z-2)) - Z + logdet_bias(S, Z) )
                                 ~ Z (Z+1) / (4 (S-1)) + Z / (2S)        for S >> Z

    12.9 nats at S = 64, Z = 32 (issue 29's first-order 4.2 holds for S >> Z only); 1.37 at S = 256; 0.29 at
    S = 1024. Needs S > Z + 2. Checked by Monte Carlo in the tests."""
    S, Z = n_fit, latent
    return 0.5 * (Z * (S - 1) * (S + 1) / (S * (S - Z - 2)) - Z + logdet_bias(S, Z))


def whiten(z: torch.Tensor, mu: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    r"""u = L^-1 (z - mu): z (B, S', Z) in the coordinates where r = N(mu, L L^T) is N(0, I). KL is invariant under
    invertible affine maps: KL(q || r) = KL(law of u || N(0, I)), which a critic nu(x, u) against N(0, I) samples
    estimates (ac_kl).

    The trap (issue 29): mu, L come from S samples, so even a Gaussian q is whitened only roughly.
      * Samples APART from the fit (held fixed): whitening_artifact(S, Z) nats in expectation (12.9 at S = 64, Z = 32),
        which a critic can learn as residual.
      * The SAME samples (in-sample): mean exactly 0, covariance exactly I, and a fit that changes every batch leaves
        nothing per sentence to learn. Left is their radius, S |u_s|^2 / (S-1)^2 ~ Beta(Z/2, (S-Z-1)/2) (Gnanadesikan &
        Kettenring 1972), lighter-tailed than chi^2_Z: a KL (Z = 32) of 0.11 nats at S = 64, 0.021 at 128, 0.0047 at
        256, 0.0003 at 1,024 (the directions may add a little), which a fresh 2 x 128 critic (1,500 updates) did not
        find (-0.001 to 0.000).
    So whiten the samples that fitted mu, L, afresh for every critic batch, S large beside Z (residual_check does).
    Gradients reach G_phi through mu, L and u. Returns z's dtype (>= float32); solves in float64."""
    centred = z.double() - mu.double().unsqueeze(1)                      # (B, S', Z)
    # u^T = L^-1 (z - mu)^T: one triangular solve per sentence
    u = torch.linalg.solve_triangular(L.double(), centred.transpose(1, 2), upper=False).transpose(1, 2)
    return u.to(torch.promote_types(z.dtype, torch.float32))          # (B, S', Z)


def ac_kl(gauss: torch.Tensor, nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    r"""The adaptive-contrast estimate of KL(q(z|x) || N(0, I)) per sentence (Mescheder et al. 2017, §3.3):
        KL(q || p) = E_q[log r - log p]  +  KL(q || r)
                   ~ gaussian_term       +  dual_kl(nu(x, u), nu(x, u')),   u = whiten(z), u' ~ N(0, I)

    gauss (B,); nu_q (B, S), nu_p (B, S'). The dual sees only the residual, small when q is near Gaussian,
    where its need for ~e^KL samples (McAllester & Stratos 2020) does not bite. Returns gauss's dtype."""
    return gauss + dual_kl(nu_q, nu_p).to(gauss.dtype)


def residual_check(sample_fn: Callable[[int], torch.Tensor], make_critic: Callable[[], torch.nn.Module],
                   cond: Optional[torch.Tensor] = None, steps: int = 1500, n_fit: int = 1024,
                   n_critic: int = 64, lr: float = 1e-3, eval_rounds: int = 8,
                   generator: Optional[torch.Generator] = None) -> tuple:
    r"""KL(q(z|x) || r(z|x)), the residual of adaptive contrast, measured by a FRESH critic that trusts no jointly
    trained one (issue 29, item 4), trained on the dual (Nguyen et al. 2010):
        KL(q || r) = KL(law of u || N(0, I)) = max_nu  E_u[nu(x, u)] - E_{u' ~ N(0, I)}[exp nu(x, u')] + 1

    sample_fn(n) -> (B, n, Z) fresh samples of q(z|x_b) (called under no_grad); make_critic() -> a new module mapping
    u (B, n, Z), or (u, cond) with cond passed unchanged (e.g. h_x (B, 1, H)), to (B, n). Each update fits mu, L on
    n_fit fresh samples and whitens n_critic of them (in-sample; see whiten) against n_critic N(0, I) samples from
    `generator`; Adam at lr, cosine-decayed to 0. Then the dual is pooled over eval_rounds draws of n_fit samples.
    Returns (kl (B,) float64, trace: the mean training estimate in 10 windows, flat at the end when converged).
    Controls: a Gaussian q, Z = 32, reads <= 0.05 (tests/test_adaptive_contrast.py; 0.04-0.09 with one fit held
    fixed, n_fit = 1,024). A reading is a lower bound in practice: a bimodal residual of 0.60 nats in Z = 32 read
    0.01 with a 2 x 128 critic (1,500 updates), 0.48 with ivae.py's 3 x 512 (3,000 updates, n_critic = 256, ~4 min on
    one thread); in Z = 4 a 2 x 128 critic found 87-92% of 0.32-0.72 nats."""
    if steps < 1 or not n_critic <= n_fit:
        raise ValueError(f"residual_check needs steps >= 1 and n_critic <= n_fit, got {steps}, {n_critic}, {n_fit}")
    critic = None
    opt = None
    window, trace, running = max(1, steps // 10), [], []
    for t in range(steps):
        with torch.no_grad():
            z = sample_fn(n_fit)                                         # (B, n_fit, Z)
            mu, L = fit_moments(z)
            u = whiten(z[:, :n_critic], mu, L).float()                   # (B, n_critic, Z), in-sample
        u_p = torch.randn(u.shape, generator=generator, device=u.device)  # (B, n_critic, Z) ~ N(0, I)
        if critic is None:
            critic = make_critic().to(u.device)
            opt = torch.optim.Adam(critic.parameters(), lr=lr)
        args = () if cond is None else (cond,)
        est = dual_kl(critic(u, *args), critic(u_p, *args))              # (B,)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / steps))
        opt.zero_grad(set_to_none=True)
        (-est.mean()).backward()                                         # ascend the dual
        opt.step()
        running.append(float(est.detach().mean()))
        if len(running) == window:
            trace.append(sum(running) / window)
            running = []
    sum_q, sum_exp_p = 0.0, 0.0
    critic.eval()
    with torch.no_grad():
        for _ in range(eval_rounds):
            z = sample_fn(n_fit)                                         # (B, n_fit, Z)
            mu, L = fit_moments(z)
            u = whiten(z, mu, L).float()                                 # (B, n_fit, Z), in-sample
            u_p = torch.randn(u.shape, generator=generator, device=u.device)
            args = () if cond is None else (cond,)
            sum_q = sum_q + critic(u, *args).double().mean(-1)           # (B,)
            sum_exp_p = sum_exp_p + critic(u_p, *args).double().exp().mean(-1)
    return sum_q / eval_rounds - sum_exp_p / eval_rounds + 1.0, trace


# ----------------------------------------------------------------------------------------------------
# Text metrics for dialog (Table 8) and style transfer (Table 7)
# ----------------------------------------------------------------------------------------------------

def sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str], n: int = 3, nltk34: bool = False) -> float:
    r"""Sentence BLEU of one hypothesis against one reference (Papineni et al. 2002):
        BLEU = BP * exp( sum_{k=1..n} (1/n) log p_k ),  BP = min(1, exp(1 - |ref| / |hyp|))

    p_k the clipped k-gram precision, smoothed with nltk's method7 (Chen & Cherry 2014), n = 3 as the authors' dialog
    and style code (the paper says 4-gram: n=4). method7 includes method5, which averages each precision with its
    neighbours, so a score can exceed 1 (a six-word sentence against itself: 1.154); so do the published numbers.
    nltk34: as nltk 3.2.2-3.4.5 (released 2017-01 to 2019-08, DialogWAE's and the paper's time), whose method4 set an
    unmatched k-gram order's precision to 1 / (k - 1 + 5 / ln|hyp|): 0.23 for an 8-token response's trigrams (nltk
    >= 3.6: ln|hyp| / (5 * 2^m) / #k-grams for the m-th unmatched order, 0.035 there)."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu
    if not hypothesis or not reference:
        return 0.0
    smooth = SmoothingFunction()
    if nltk34:                                     # nltk 3.4.5 bleu_score.py:577; method7 = method5(method4(p_n))
        smooth.method4 = lambda p_n, refs, hyp, hyp_len, *args, **kwargs: [
            1 / (i + smooth.k / math.log(hyp_len)) if p.numerator == 0 and hyp_len > 1 else p  # |hyp| 1: 3.4.5 / 0
            for i, p in enumerate(p_n)]                                  # i = k - 1; smooth.k = 5
    return float(nltk_sentence_bleu([list(reference)], list(hypothesis), weights=(1.0 / n,) * n,
                                    smoothing_function=smooth.method7))


def bleu_recall_precision(hyps_per_context: Sequence[Sequence[Sequence[str]]],
                          references: Sequence[Sequence[str]], n: int = 3, nltk34: bool = False) -> dict:
    r"""Dialog BLEU of Zhao et al. (2017) / Gu et al. (2018), for K sampled responses per context:
        BLEU-R = mean over contexts of max_k BLEU(ref, hyp_k)      (recall: is some sample close?)
        BLEU-P = mean over contexts of mean_k BLEU(ref, hyp_k)     (precision: are samples close?)
        BLEU-F1 = 2 P R / (P + R)      (of the averaged P and R, as DialogWAE computes it)

    Table 8's tokens (DialogWAE's and the authors' indexes2sent; dialog.py) drop `<s>` and keep the first `</s>`, a
    word that raises the scores (issue 16: 3-gram R/P/F1 0.177/0.095/0.123 without it vs 0.209/0.132/0.162 with it)."""
    if len(hyps_per_context) != len(references) or not references:
        raise ValueError("need one list of hypotheses per reference, and at least one reference")
    recall, precision = [], []
    for hyps, ref in zip(hyps_per_context, references):
        scores = [sentence_bleu(ref, h, n, nltk34) for h in hyps]
        recall.append(max(scores))
        precision.append(sum(scores) / len(scores))
    r, p = float(np.mean(recall)), float(np.mean(precision))
    return {"bleu_r": r, "bleu_p": p, "bleu_f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]],
                n: int = 4) -> float:
    r"""Corpus BLEU (Papineni et al. 2002): k-gram counts pooled over all sentences before the precisions
    and brevity penalty, no smoothing. references: one list of references (token lists) per hypothesis."""
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
    return float(nltk_corpus_bleu([[list(r) for r in refs] for refs in references],
                                  [list(h) for h in hypotheses], weights=(1.0 / n,) * n))


def load_word_vectors(path: str, words: Optional[Iterable[str]] = None) -> dict:
    r"""A GloVe/word2vec text file (`word v_1 ... v_d` per line) -> {word: float64 vector}, only `words` if given."""
    keep = set(words) if words is not None else None
    vectors = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip().split(" ")
            if len(parts) < 3 or (keep is not None and parts[0] not in keep):
                continue
            vectors[parts[0]] = np.asarray(parts[1:], dtype=np.float64)
    return vectors


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 0.0


def bow_similarity(hypothesis: Sequence[str], reference: Sequence[str], vectors: dict) -> tuple:
    r"""Embedding similarities of Liu et al. (2016) between two sentences, as (average, extrema, greedy):
        average: cos( mean_w e_w(hyp), mean_w e_w(ref) )
        extrema: cos( ext(hyp), ext(ref) ), ext_d = the e_{w,d} of largest |.| (Forgues et al. 2014)
        greedy:  1/2 [ mean_{w in hyp} max_{v in ref} cos(e_w, e_v) + mean_{v in ref} max_{w in hyp} cos ]
                 (Rus & Lintean 2012)

    Only words with a vector count (none: 0, 0, 0). DialogWAE (the paper's Table 8) embeds padded index
    matrices, so its greedy averages over padding, its extrema takes the max over padding zeros and the min
    over padding + 1, and unknown words get random vectors; here only the real words count."""
    h = np.array([vectors[w] for w in hypothesis if w in vectors])
    r = np.array([vectors[w] for w in reference if w in vectors])
    if len(h) == 0 or len(r) == 0:
        return 0.0, 0.0, 0.0
    average = _cosine(h.mean(0), r.mean(0))

    def extrema(e):
        hi, lo = e.max(0), e.min(0)
        return np.where(hi >= np.abs(lo), hi, lo)

    extreme = _cosine(extrema(h), extrema(r))
    hn = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    rn = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    cos = hn @ rn.T                                                       # (|hyp|, |ref|)
    greedy = 0.5 * (cos.max(1).mean() + cos.max(0).mean())
    return float(average), float(extreme), float(greedy)


def bow_metrics(hyps_per_context, references, vectors: dict) -> dict:
    r"""BOW-A / BOW-E / BOW-G of Table 8: for each context, the max over its sampled responses of each
    bow_similarity score with the reference; then the mean over contexts (DialogWAE's sim_bow)."""
    a, e, g = [], [], []
    for hyps, ref in zip(hyps_per_context, references):
        scores = np.array([bow_similarity(h, ref, vectors) for h in hyps])  # (K, 3)
        best = scores.max(0)
        a.append(best[0])
        e.append(best[1])
        g.append(best[2])
    return {"bow_a": float(np.mean(a)), "bow_e": float(np.mean(e)), "bow_g": float(np.mean(g))}


def _ngrams(tokens: Sequence[str], n: int) -> list:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_intra(hyps: Sequence[Sequence[str]], n: int) -> float:
    r"""intra-dist-n (Li et al. 2016; Gu et al. 2018): for each response, #distinct n-grams / #n-grams; averaged over
    responses. A response shorter than n has no n-gram and counts as 0 (DialogWAE's epsilons give it ~1e-7)."""
    ratios = []
    for h in hyps:
        grams = _ngrams(h, n)
        ratios.append(len(set(grams)) / len(grams) if grams else 0.0)
    return float(np.mean(ratios)) if ratios else 0.0


def distinct_inter(hyps: Sequence[Sequence[str]], n: int) -> float:
    r"""inter-dist-n (Gu et al. 2018): #distinct n-grams / #n-grams, pooled over the given responses
    (in Table 8: the K responses sampled for one context; average the result over contexts)."""
    grams = [g for h in hyps for g in _ngrams(h, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def two_sample_accuracy(a: torch.Tensor, b: torch.Tensor, hidden: int = 64, steps: int = 200, lr: float = 1e-2,
                        weight_decay: float = 1e-2, seed: int = 0) -> float:
    r"""Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): held-out accuracy of a FRESH classifier at telling
    rows of `a` (N, D) from rows of `b` (M, D); 0.5: no difference found, 1: apart. (dialog.py: cat(z, c), z ~ p(z|c)
    vs z ~ q(z|x,c).) With n = min(N, M) // 2, rows [0, n) of each train and rows [n, 2n) score (a pairing by row
    never crosses the split). Input [u, u^2 - 1], u standardised by the training rows (scale shows as easily as
    location). Seen: 4,000 + 4,000 rows of N(0, I_500): 0.51; b scaled by 1.2: 0.996; rows (z, c), z = c W + noise
    (Z 200, 300-d c), 8,000 + 8,000, b's z shuffled across rows: 0.958. CPU, float32, own seed; global RNG untouched."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    n = min(len(a), len(b)) // 2
    if n < 1:
        return float("nan")
    x_fit, x_score = torch.cat([a[:n], b[:n]]), torch.cat([a[n:2 * n], b[n:2 * n]])    # (2n, D) each
    y = torch.cat([torch.ones(n), torch.zeros(n)])                                     # 1: a row of a
    mean, std = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)
    features = lambda x: (lambda u: torch.cat([u, u * u - 1], -1))((x - mean) / std)   # (2n, 2D)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(2 * a.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        f_fit = features(x_fit)
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(f_fit).squeeze(-1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            right = (net(features(x_score)).squeeze(-1) > 0) == y.bool()
    return float(right.float().mean())


# ----------------------------------------------------------------------------------------------------
# Table 5 forward / reverse PPL and the style RPPL: a 5-gram interpolated modified Kneser-Ney LM (Chen &
# Goodman 1998, TR-10-98; Heafield et al. 2013, ACL), in pure Python, the model of the authors' KenLM lmplz
# ----------------------------------------------------------------------------------------------------

BOS, EOS, UNK = "<s>", "</s>", "<unk>"  # sentence start / end and the unknown word: as KenLM and data.py
# Discounts (D1, D2, D3+) used for an order whose closed-form discounts fail: the defaults of KenLM's
# `lmplz --discount_fallback` (lm/builder/lmplz_main.cc).
KN_FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


class NGramLM:
    r"""Interpolated modified Kneser-Ney n-gram LM, estimated as KenLM's `lmplz` does. A metric (reverse perplexity fits
    it on generated text), hence exact, normalised and fast: PTB train (~1M tokens, order 5) in seconds on one core.
    Usage: lm = NGramLM(5).fit(sentences); lm.logprob("sat", ["<s>", "the", "cat"]); lm.perplexity(sentences).

    Adjusted counts a(.)  (Kneser & Ney 1995; Chen & Goodman 1998; Heafield et al. 2013 Sec. 3)
        order N:      a(g) = c(g), the raw count in `<s> w1 ... wn </s>` (see fit)
        order n < N:  a(g) = N1+(. g) = |{v : c(v g) > 0}|; n-grams starting with `<s>` keep c(g) (KenLM)
    Discounts per order (Chen & Goodman eq. 26), t_k = #{n-grams with a(g) = k}:
        Y = t1 / (t1 + 2 t2),  D1 = 1 - 2 Y t2/t1,  D2 = 2 - 3 Y t3/t2,  D3+ = 3 - 4 Y t4/t3;  D(0) = 0
        If t1, t2 or t3 is 0 or some D_k is outside [0, k], the order uses `discount_fallback`, as `lmplz
        --discount_fallback` does (plain lmplz stops); such orders are listed in `self.fallback_orders`.
    Probabilities (Chen & Goodman 1998 Sec. 3), h a context of n-1 words, h' = h without its first word:
        p(w | h) = max(a(h w) - D(a(h w)), 0) / sum_x a(h x)  +  gamma(h) p(w | h')
        gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / sum_x a(h x),     N_k(h) = #{x : a(h x) = k}
        p(w | h) = p(w | h') where h never occurred as a context; p(w) interpolates with 1 / |V|
    V = training words + `</s>` + `<unk>` (never `<s>`), so p sums to 1 over V for every context (D_k <= k keeps the max
    inactive). A `<unk>` never seen in training gets only the uniform share gamma / |V| (as KenLM). A word to predict
    outside V (`<s>` included) and unknown context tokens are scored as `<unk>`.

    Differences from KenLM (lmplz + query) that we know of
      * A literal `<unk>` in training: lmplz refuses it (with --skip_symbols deletes it, joining its neighbours); here
        it is an ordinary word, as in PTB. Literal `<s>`/`</s>` in training raise ValueError (lmplz refuses them too).
      * lmplz (lm/builder/adjust_counts.cc, the final flush loop of AdjustCounts::Run) puts the RAW count of the few
        lower-order n-grams pending at the end of its stream (at most one per order) in t_k; we use the textbook t_k. On
        PTB this moves only the unigram D3+ (1.2623 vs lmplz's 1.2649; test perplexity 141.19 vs 141.186); on toy
        corpora it can decide a fallback. Given lmplz's discounts, our probabilities match its ARPA to ~5e-6 in log10.
      * No pruning or count cutoffs (lmplz's default too); float64 and natural logs (lmplz: float32, log10); one
        `<s>` of left context, as KenLM's `query` by default."""

    def __init__(self, order: int = 5, discount_fallback=KN_FALLBACK_DISCOUNTS):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if len(discount_fallback) != 3 or not all(0 <= d <= k for k, d in zip((1, 2, 3), discount_fallback)):
            # D_k <= k keeps every discounted count >= 0, which is what makes p sum to 1.
            raise ValueError(f"discount_fallback must be (D1, D2, D3+) with 0 <= D_k <= k, got {discount_fallback}")
        self.order = order
        self.discount_fallback = tuple(float(d) for d in discount_fallback)
        self.counts = None          # counts[n] (n = 1..order, fit() fills them): n-gram -> adjusted count a(.)
        self.context_stats = None   # context_stats[n]: (n-1)-gram context h -> (sum_x a(h x), gamma(h))
        self.discounts = None       # discounts[n] = (0, D1, D2, D3+), indexed by min(a, 3)
        self.fallback_orders = None # orders n whose discounts came from `discount_fallback`
        self._vocab = None

    # PLUMBING: accept "w1 w2 w3" or ["w1", "w2", "w3"].
    @staticmethod
    def _tokens(sentence):
        return sentence.split() if isinstance(sentence, str) else list(sentence)

    def _check_fitted(self):
        if self._vocab is None:
            raise RuntimeError("NGramLM: call fit() first")

    @property
    def vocab(self):
        """The predictable tokens V: training words + `</s>` + `<unk>` (never `<s>`)."""
        self._check_fitted()
        return self._vocab

    # PAPER: estimation (counts -> adjusted counts -> discounts -> per-context normalisers) -----------

    def fit(self, sentences) -> "NGramLM":
        """Estimate the model from an iterable of sentences (token lists or whitespace-split strings)."""
        N = self.order

        # 1) Raw counts c(g) of every n-gram, n = 1..N, inside `<s> w1 ... wn </s>` (one of each, as KenLM).
        #       padded:   <s>  the  cat  sat  </s>
        #       2-grams:  (<s>,the) (the,cat) (cat,sat) (sat,</s>)
        #       1-grams:        the   cat   sat   </s>     (no unigram <s>: nothing predicts <s>)
        raw = [None] + [Counter() for _ in range(N)]
        words = set()
        for sentence in sentences:
            toks = self._tokens(sentence)
            if BOS in toks or EOS in toks:
                raise ValueError(f"training sentences must not contain {BOS} or {EOS}: {toks}")
            words.update(toks)
            padded = [BOS] + toks + [EOS]
            raw[1].update(zip(padded[1:]))  # 1-tuples, skipping the leading <s>
            for n in range(2, N + 1):
                # zip(p, p[1:], ..., p[n-1:]) yields every n-gram of `padded` (none if it is too short)
                raw[n].update(zip(*(padded[i:] for i in range(n))))
        self._vocab = frozenset(words | {EOS, UNK})

        # 2) Adjusted counts: raw at the highest order, below it a(g) = |{v : c(v g) > 0}| ...
        counts = [None] * (N + 1)
        counts[N] = raw[N]
        for n in range(N - 1, 0, -1):
            adjusted = Counter(g[1:] for g in raw[n + 1])
            # ... except n-grams that start with <s> (never a g[1:] above): no left extension, raw count.
            for g, c in raw[n].items():
                if g[0] == BOS:
                    adjusted[g] = c
            counts[n] = adjusted
            if n + 1 < N:
                raw[n + 1] = None  # PLUMBING: free memory early; counts[N] *is* raw[N]
        del raw

        # 3) Discounts per order from the count-of-counts t_k of the adjusted counts.
        self.discounts = [None] * (N + 1)
        self.fallback_orders = []
        for n in range(1, N + 1):
            t = Counter(counts[n].values())
            D = self._closed_form_discounts(t[1], t[2], t[3], t[4])
            if D is None:
                D = self.discount_fallback
                self.fallback_orders.append(n)
            self.discounts[n] = (0.0,) + D  # index by min(a, 3); D(0) = 0

        # 4) Cached per context (a query costs O(order) look-ups): total(h), gamma(h) = sum_x D(a(h x)) / total(h)
        self.context_stats = [None] * (N + 1)
        for n in range(1, N + 1):
            D = self.discounts[n]
            total = defaultdict(int)
            gamma_num = defaultdict(float)
            for g, a in counts[n].items():
                h = g[:-1]
                total[h] += a
                gamma_num[h] += D[a if a < 3 else 3]
            self.context_stats[n] = {h: (total[h], gamma_num[h] / total[h]) for h in total}
        self.counts = counts
        return self

    @staticmethod
    def _closed_form_discounts(t1, t2, t3, t4):
        """Chen & Goodman eq. (26); None where KenLM would fail (a t_k = 0, or D_k outside [0, k])."""
        if t1 == 0 or t2 == 0 or t3 == 0:
            return None
        # Eq. (26): Y = t1 / (t1 + 2 t2);  D_k = k - (k + 1) Y t_{k+1} / t_k
        Y = t1 / (t1 + 2 * t2)
        D = (1 - 2 * Y * t2 / t1, 2 - 3 * Y * t3 / t2, 3 - 4 * Y * t4 / t3)
        if any(not 0.0 <= d <= k for k, d in zip((1, 2, 3), D)):
            return None
        return D

    # PAPER: querying p(w | h), bottom-up through the interpolation recursion ---------------------------

    def _prob(self, word, context):
        """p(word | context); `word` in V, `context` a tuple of known tokens, at most order-1 long."""
        # From the uniform distribution climb n = 1, 2, ...:  p_n(w | h) = max(a(h w) - D(a(h w)), 0) / total(h)
        # + gamma(h) p_{n-1}(w | h'). Once a context is unseen, so are the longer ones: stop (full back-off).
        p = 1.0 / len(self._vocab)
        L = len(context)
        for n in range(1, L + 2):
            h = context[L - (n - 1):]  # the last n-1 context words; () for n = 1
            stats = self.context_stats[n].get(h)
            if stats is None:
                break
            total, gamma = stats
            a = self.counts[n].get(h + (word,), 0)
            p = max(a - self.discounts[n][a if a < 3 else 3], 0.0) / total + gamma * p
        return p

    def _map_word(self, word):
        return word if word in self._vocab else UNK

    def _map_context(self, context):
        # Only the last order-1 tokens can matter; `<s>` is a valid context token, unknown ones -> <unk>.
        ctx = list(context)[-(self.order - 1):] if self.order > 1 else []
        return tuple(w if (w in self._vocab or w == BOS) else UNK for w in ctx)

    def logprob(self, word: str, context=()) -> float:
        """Natural log p(word | context), context the previous tokens (may start with `<s>`; only the last
        order-1 matter). A `word` outside `vocab` (`<s>` included) and unknown context tokens read as `<unk>`."""
        self._check_fitted()
        if isinstance(context, str):
            context = context.split()
        return math.log(self._prob(self._map_word(word), self._map_context(context)))

    def sentence_logprob(self, tokens) -> float:
        """log p(w1 ... wn </s> | <s>) = sum_i log p(w_i | <s> w1 ... w_{i-1}), one `<s>` of context."""
        self._check_fitted()
        toks = [self._map_word(w) for w in self._tokens(tokens)] + [EOS]
        history = (BOS,) + tuple(toks)
        k = self.order - 1
        total = 0.0
        for i, w in enumerate(toks):
            total += math.log(self._prob(w, history[max(0, i + 1 - k):i + 1] if k else ()))
        return total

    def perplexity(self, sentences) -> float:
        """exp(-sum log p / N), N = #tokens + one `</s>` per sentence (OOVs included, scored as `<unk>`)."""
        log_total, n_tokens = 0.0, 0
        for sentence in sentences:
            toks = self._tokens(sentence)
            log_total += self.sentence_logprob(toks)
            n_tokens += len(toks) + 1
        if n_tokens == 0:
            raise ValueError("perplexity of an empty set of sentences")
        return math.exp(-log_total / n_tokens)


def forward_reverse_ppl(samples: Sequence[Sequence[str]], train_text: Sequence[Sequence[str]],
                        test_text: Sequence[Sequence[str]], vocabulary: Iterable[str], order: int = 5) -> dict:
    r"""Forward and reverse perplexity of generated text (Table 5; Zhao et al. 2018, "ARAE"):
        forward PPL = PPL of the samples under an LM fitted on real text (train_text): are they fluent?
        reverse PPL = PPL of real text under an LM fitted on the samples: do they cover its variety?

    NGramLM(order), as the authors' KenLM; as theirs, the reverse LM also sees each vocabulary word as a sentence and
    scores the training split (`rev_ppl`); we add the test split (`rev_ppl_test`). Token lists, no <s>, </s>."""
    samples = [list(s) for s in samples]
    forward = NGramLM(order).fit(train_text).perplexity(samples)
    reverse_lm = NGramLM(order).fit([[w] for w in vocabulary] + samples)
    return {"fwd_ppl": forward, "rev_ppl": reverse_lm.perplexity(train_text),
            "rev_ppl_test": reverse_lm.perplexity(test_text), "fwd_rev_samples": len(samples)}


def ppl_without_eos(lm: NGramLM, sentences: Sequence[Sequence[str]]) -> float:
    r"""Perplexity as the authors' style code reads it from KenLM (`lm.score(s, bos=True, eos=False)`,
    transfer_yelp/utils_yelp.py get_ppl); `</s>` is neither scored nor counted, OOVs are scored as `<unk>`:
        PPL = exp( - sum_s sum_{i=1..n_s} log p(w_i | <s> w_1 .. w_{i-1}) / sum_s n_s )"""
    log_total, n_words = 0.0, 0
    for sentence in sentences:
        words = list(sentence)
        for i, w in enumerate(words):
            log_total += lm.logprob(w, [BOS] + words[:i])
        n_words += len(words)
    if n_words == 0:
        raise ValueError("perplexity of an empty set of sentences")
    return math.exp(-log_total / n_words)


def rppl_authors(sources: Sequence[Sequence[str]], transfers: Sequence[Sequence[str]],
                 directions: Sequence[int], order: int = 5) -> dict:
    r"""Reverse perplexity of style transfer as the authors' code (transfer_yelp/train_yelp.py, evaluate_autoencoder;
    KenLM `lmplz -o 5 --skip_symbols "<unk>" --discount_fallback`): for each target sentiment d, LM_d = NGramLM(order)
    on the transfers of direction d with `<unk>` deleted:
        RPPL_d = ppl_without_eos(LM_d, the sources of direction d),    RPPL = mean_d RPPL_d

    Returns {"rppl": RPPL, "rppl_d": RPPL_d for each d}. Token lists carry no <s>, </s>."""
    out = {}
    for d in sorted(set(directions)):
        train = [[w for w in t if w != UNK] for t, dd in zip(transfers, directions) if dd == d]
        lm = NGramLM(order).fit(train)
        out[f"rppl_{d}"] = ppl_without_eos(lm, [s for s, dd in zip(sources, directions) if dd == d])
    out["rppl"] = sum(out.values()) / len(out)
    return out


def residual_check_row(encode: Callable[[], torch.Tensor], posterior, joint_critic, make_critic,
                       steps: int, seed: int, device) -> dict:
    """The residual check of a validation or test row: h = encode() (b, H) of a few sentences; residual_check with a
    fresh make_critic() on samples posterior(h, n) -> (b, n, Z), and the joint critic joint_critic(u, h) on 1,024
    whitened samples of the same sentences. Its own random stream (seed), apart from training's."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        h = encode()                                                     # (b, H)
        with torch.enable_grad():
            check, _ = residual_check(lambda n: posterior(h, n), make_critic, cond=h.unsqueeze(1), steps=steps)
        z = posterior(h, 1024)                                           # (b, 1024, Z)
        mu, L = fit_moments(z)
        u = whiten(z, mu, L).float()
        joint = dual_kl(joint_critic(u, h.unsqueeze(1)), joint_critic(torch.randn_like(u), h.unsqueeze(1)))
    return {"kl_resid_check": float(check.mean()), "kl_resid_joint": float(joint.mean()),
            "resid_check_sentences": len(h)}


# ----------------------------------------------------------------------------------------------------
# Evaluating a language VAE (§5.1) over a split, given the model's pieces as callables
# ----------------------------------------------------------------------------------------------------

# Decoder tokens per forward pass at evaluation (its logits: tokens x V floats). 2,048 ran 15-20% faster
# than 32,768 on the 2-core CPU (results/bench/README.md).
EVAL_TOKENS = {"cpu": 2048, "cuda": 32768}


def chunked_nll(nll, x: torch.Tensor, z: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """-log p(x|z_s) for S samples of each sentence, `nll(x (N, T), z (N, Z)) -> (N,)` called on chunks of
    at most max_tokens decoder tokens. x (B, T), z (B, S, Z) -> (B, S)."""
    B, S, Z = z.shape
    rows = max(1, max_tokens // x.shape[1])
    xs = x.unsqueeze(1).expand(B, S, x.shape[1]).reshape(B * S, -1)     # (B*S, T)
    zs = z.reshape(B * S, Z)                                             # (B*S, Z)
    return torch.cat([nll(xs[i:i + rows], zs[i:i + rows]) for i in range(0, B * S, rows)]).view(B, S)


class LMEvaluation:
    r"""The §5.1 metrics of one split, summed batch by batch (its own generator, seed, keeps evaluation off training's
    random stream); each script's evaluate() calls the methods that apply to its posterior, then row():
        rec       mean_x mean_s -log p(x | z_s), z_s ~ q(z|x)                         (add_rec)
        kl, kl_agg the critics' dual estimates, Eq. (7) per sentence, Eq. (13) pooled   (add_critics)
        mi        kl - kl_agg;  nelbo = rec + kl;  ppl = exp(sum_x nelbo / #words)      (row)
        kl_lower  a lower bound on E_x KL(q(z|x) || p) (kl_lower_bound)                 (add_kl_lower)
        iw_nll    an IW upper bound on -log p(x), proposal q(z|x) (add_affine, add_gaussian) or fitted_proposal (add_iw)
        kl_exact, kl_agg_exact, mi_exact  exact, where q(z|x) is Gaussian                (add_affine, row)
        au, log_n active units (He et al. 2019), from exact means or sample means less their noise; log N"""

    def __init__(self, device, seed: int, n_samples: int):
        self.device, self.gen = device, torch.Generator(device=device).manual_seed(seed)
        self.tot = defaultdict(float)
        self.dual_agg, self.means, self.noise, self.kl_exact, self.kept = DualKL(), [], [], [], []
        self.mus, self.logvars, self.z1 = [], [], []
        self.n, self.words, self.w, self.S, self.K = 0, 0, None, n_samples, 0

    def add_batch(self, lengths: torch.Tensor) -> None:
        """Count a batch's sentences and words (+ </s>, not <s>: metrics.perplexity)."""
        self.n += len(lengths)
        self.words += int((lengths - 1).sum())

    def add_rec(self, nll: torch.Tensor) -> None:
        """nll (B, S): -log p(x|z_s) of each sample."""
        self.tot["rec"] += float(nll.double().mean(1).sum())

    def add_critics(self, nu_xz, nu_z, z: torch.Tensor, h: torch.Tensor) -> None:
        """The paper's KL columns: nu(x, z) per sentence (none: nu_xz None), nu(z) pooled, on z (B, S, Z)
        and S fresh prior samples per sentence. h (B, H) conditions nu(x, z)."""
        hs = h.unsqueeze(1)                                              # (B, 1, H)
        z_prior = torch.randn(z.shape, device=z.device, generator=self.gen)
        if nu_xz is not None:
            self.tot["kl"] += float(dual_kl(nu_xz(z, hs), nu_xz(z_prior, hs)).sum())
        self.dual_agg.add(nu_z(z), nu_z(z_prior))

    def add_ac(self, fit: torch.Tensor, resid_critic) -> None:
        """Adaptive contrast (ivae.py --kl_estimator ac; ac_kl) on samples `fit` (B, F, Z): gaussian_term of their
        moments + resid_critic's dual on them whitened vs N(0, I); kl = kl_ac = kl_gauss + kl_resid, as trained."""
        mu, L = fit_moments(fit)
        u = whiten(fit, mu, L).float()                                   # (B, F, Z)
        u_p = torch.randn(u.shape, device=u.device, generator=self.gen)
        kl_gauss = gaussian_term(mu, L, fit.shape[1])                    # (B,)
        resid = dual_kl(resid_critic(u), resid_critic(u_p))              # (B,)
        self.tot["kl_gauss"] += float(kl_gauss.sum())
        self.tot["kl_resid"] += float(resid.sum())
        self.tot["kl"] += float(kl_gauss.sum()) + float(resid.sum())
        self.ac = True

    def add_kl_lower(self, fit: torch.Tensor, z: torch.Tensor) -> None:
        """kl_lower_bound with a Gaussian fitted on `fit` (B, F, Z), evaluated on z (B, S, Z)."""
        self.tot["kl_lower"] += float(kl_lower_bound(fit, z).sum())

    def add_affine(self, mean: torch.Tensor, w: torch.Tensor, log_lik: torch.Tensor, z: torch.Tensor) -> None:
        """q(z|x) = N(mean, w w^T) exactly: its KL, its mean for AU, and the IW bound with q as the proposal
        on z (B, K, Z), log p(x|z) = log_lik (B, K)."""
        self.w = w
        self.kl_exact.append(affine_posterior_kl(mean, w).cpu())
        self.means.append(mean.double().cpu())
        if z.shape[1]:
            self.K = z.shape[1]
            log_q = AffinePosteriors(mean, w).log_prob_own(z)             # (B, K)
            self.tot["iw"] += float(iw_bound(log_lik, z, log_q).sum())

    def add_gaussian(self, mu: torch.Tensor, logvar: torch.Tensor, log_lik: torch.Tensor, z: torch.Tensor) -> None:
        """q(z|x) = N(mu, diag exp(logvar)) (vae.py): closed-form KL, the IW bound with q as the proposal on the
        first K samples of z (B, S', Z) (log_lik (B, K); K = 0: none), the first sample for gaussian_mi."""
        self.tot["kl"] += float(gaussian_kl(mu, logvar).sum())
        if log_lik.shape[1]:
            self.K = log_lik.shape[1]
            zk = z[:, :self.K]                                           # (B, K, Z)
            zd, mud, lvd = zk.double(), mu.double().unsqueeze(1), logvar.double().unsqueeze(1)
            log_q = -0.5 * ((zd - mud).pow(2) / lvd.exp() + lvd + math.log(2 * math.pi)).sum(-1)   # (B, K)
            self.tot["iw"] += float(iw_bound(log_lik, zk, log_q).sum())
        self.mus.append(mu.cpu())
        self.logvars.append(logvar.cpu())
        self.z1.append(z[:, 0].cpu())

    def add_sample_means(self, z: torch.Tensor) -> None:
        """An implicit q(z|x): the mean of its S samples z (B, S, Z) for AU, and that mean's noise."""
        self.means.append(z.double().mean(1).cpu())
        self.noise.append(z.double().var(1).cpu() / z.shape[1])          # variance of each sample mean

    def fitted_proposal(self, fit: torch.Tensor, K: int):
        """The IW proposal of an implicit q(z|x): defensive_proposal fitted on `fit` (B, F, Z) (samples apart
        from those scored), and K samples of it. Returns (z (B, K, Z) float64, log r(z) (B, K))."""
        r = defensive_proposal(fit)
        zk = sample_proposal(r, K, self.gen)                             # (K, B, Z)
        return zk.transpose(0, 1), r.log_prob(zk).T

    def add_iw(self, log_lik: torch.Tensor, z: torch.Tensor, log_proposal: torch.Tensor) -> None:
        self.K = z.shape[1]
        self.tot["iw"] += float(iw_bound(log_lik, z, log_proposal).sum())

    def keep(self, z: torch.Tensor, k: int) -> None:
        """Keep the samples z (B, S, Z) of the first k sentences (the PCA picture)."""
        if len(self.kept) < k:
            self.kept += list(z[:k - len(self.kept)].cpu())

    def row(self):
        """(the row of metrics, per-dimension variance of the means for AU, kept samples)."""
        n, words, tot = self.n, self.words, self.tot
        row = {"n_sentences": n, "n_words": words, "eval_samples": self.S, "rec": tot["rec"] / n,
               "kl": tot["kl"] / n}
        if getattr(self, "ac", False):
            row.update(kl_ac=tot["kl"] / n, kl_gauss=tot["kl_gauss"] / n, kl_resid=tot["kl_resid"] / n)
        if self.mus:                                                     # Gaussian q (vae.py): exact MI
            mu_all = torch.cat(self.mus)
            au, au_var = active_units(mu_all)
            mi, mi_se = gaussian_mi(mu_all, torch.cat(self.logvars), torch.cat(self.z1), with_se=True)
            row.update(mi=mi, mi_se=mi_se)
        else:
            means = torch.cat(self.means)
            au, au_var = active_units(means, mean_noise_var=torch.cat(self.noise) if self.noise else None)
            row.update(kl_agg=self.dual_agg.value())
            row.update(mi=mutual_info(row["kl"], row["kl_agg"]))
        row.update(nelbo=row["rec"] + row["kl"], ppl=perplexity(tot["rec"] + tot["kl"], words), au=au,
                   log_n=math.log(n))
        if not self.mus:
            row["kl_lower"] = tot["kl_lower"] / n
        if self.K:
            row.update(iw_nll=tot["iw"] / n, iw_ppl=perplexity(tot["iw"], words), iw_samples=self.K)
        if self.kl_exact:
            kl_exact = torch.cat(self.kl_exact)
            row.update(kl_exact=float(kl_exact.mean()), nelbo_exact=row["rec"] + float(kl_exact.mean()),
                       ppl_exact=perplexity(tot["rec"] + float(kl_exact.sum()), words))
            if math.isfinite(row["kl_exact"]):
                agg = aggregate_kl_mi(AffinePosteriors(torch.cat(self.means).to(self.device), self.w),
                                      kl_exact.to(self.device), generator=self.gen)
                row.update(kl_agg_exact=agg["kl_agg"], mi_exact=agg["mi"], mi_exact_se=agg["mi_se"])
        return row, au_var, (torch.stack(self.kept) if self.kept else None)


# ----------------------------------------------------------------------------------------------------
# Decoding a trained LM VAE (Tables 4, 5), given its decode(z (N, Z), temperature, generator) -> token ids
# and to_words(ids) -> words. Seeds give each use its own stream, apart from training's.
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def decode(decoder, z: torch.Tensor, max_len: int, bos: int, eos: int, temperature: float = 0.0, gen=None) -> list:
    """Token ids from latent codes z (N, Z), greedy (temperature 0) or sampled, until every row has said </s> (eos)
    or max_len. decoder(token (N, 1), z, state) -> (logits (N, 1, V), state) runs in eval mode; its mode is restored."""
    was_training = decoder.training
    decoder.eval()
    token = torch.full((z.shape[0], 1), bos, dtype=torch.long, device=z.device)
    state, out = None, []
    done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    for _ in range(max_len):
        logits, state = decoder(token, z, state)                         # (N, 1, V)
        logits = logits[:, -1].float()
        if temperature > 0:
            token = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=gen)
        else:
            token = logits.argmax(-1, keepdim=True)
        out.append(token)
        done |= token.squeeze(1) == eos
        if bool(done.all()):
            break
    decoder.train(was_training)
    return torch.cat(out, 1).tolist()


def lm_samples(decode, vocab, examples: dict, cfg, device, specials: tuple, code_of=None) -> dict:
    """After an LM script's test: samples.txt (cfg.num_samples prior codes, greedy and at cfg.temperature); with
    cfg.fwd_rev_ppl, Table 5's forward / reverse PPL of cfg.fwd_rev_samples greedy prior samples
    (fwd_rev_samples.txt) against the train / test examples, returned; with cfg.interpolate, Table 4
    (interpolation.txt) between its two sentences' codes code_of(x (1, T)) -> (1, Z). Each has its own seed."""
    to_words = vocab.decode
    texts = {s: [to_words(e) for e in examples[s]] for s in ("train", "test")} if cfg.fwd_rev_ppl else {}
    vocabulary = [w for w in vocab.itos if w not in specials]
    result = {}
    if cfg.fwd_rev_ppl:
        result = prior_forward_reverse(decode, to_words, cfg.latent, cfg.fwd_rev_samples, cfg.seed + 4242, device,
                                       os.path.join(cfg.out_dir, "fwd_rev_samples.txt"), texts["train"],
                                       texts["test"], vocabulary)
        print(f"forward PPL {result['fwd_ppl']:.1f} | reverse PPL {result['rev_ppl']:.1f} (train, as the "
              f"authors) {result['rev_ppl_test']:.1f} (test) | {cfg.fwd_rev_samples} greedy prior samples")
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 777)
    z = torch.randn(cfg.num_samples, cfg.latent, device=device, generator=gen)     # (num_samples, Z)
    lines = [f"# {cfg.num_samples} prior samples z ~ N(0, I); greedy, then temperature {cfg.temperature}"]
    lines += ["greedy\t" + " ".join(to_words(ids)) for ids in decode(z, 0.0, None)]
    lines += [f"T={cfg.temperature}\t" + " ".join(to_words(ids)) for ids in decode(z, cfg.temperature, gen)]
    with open(os.path.join(cfg.out_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for line in lines[:4]:
        print("sample:", line)
    if cfg.interpolate:
        with torch.no_grad():
            z_a, z_b = (code_of(torch.tensor([vocab.encode(s.lower().split())], device=device))
                        for s in cfg.interpolate)                        # (1, Z) each
        write_interpolation(decode, to_words, z_a, z_b, os.path.join(cfg.out_dir, "interpolation.txt"))
    return result


def write_interpolation(decode, to_words, z_a: torch.Tensor, z_b: torch.Tensor, path: str) -> None:
    """Table 4: interpolation(...) written to `path` and printed."""
    lines = interpolation(decode, to_words, z_a, z_b)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def interpolation(decode, to_words, z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 10) -> list:
    """Table 4: greedy decodes of z_t = (1 - t) z_a + t z_b, t = 0, 1/steps, ..., 1; z_a, z_b: (1, Z)."""
    ts = [i / steps for i in range(steps + 1)]
    z = torch.cat([(1 - t) * z_a + t * z_b for t in ts])                 # (steps + 1, Z)
    return [f"{t:.1f}\t" + " ".join(to_words(ids)) for t, ids in zip(ts, decode(z, 0.0, None))]


def prior_forward_reverse(decode, to_words, latent: int, n: int, seed: int, device, path: str,
                          train_text, test_text, vocabulary) -> dict:
    """Table 5: greedy decodes of n codes z ~ N(0, I) (in chunks of 256), written to `path`, scored by
    forward_reverse_ppl against the training and test text."""
    gen = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn(n, latent, device=device, generator=gen)
    samples = [to_words(ids) for chunk in z.split(256) for ids in decode(chunk, 0.0, None)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(" ".join(s) for s in samples) + "\n")
    return forward_reverse_ppl(samples, train_text, test_text, vocabulary)


# ----------------------------------------------------------------------------------------------------
# Reporting an evaluation (the paper's columns and the true ones, labelled; the loud warnings)
# ----------------------------------------------------------------------------------------------------

COLLAPSE_KL = 0.1  # nats: an average KL below this means q(z|x) is (almost) the prior: the decoder ignores z
PAPER_LABEL = {True: "the paper's way (critic estimates)", False: "the paper's way (closed-form KL)"}
TRUE_LABEL = "true values and bounds (exact, lower bound, IW)"
AC_LABEL = "adaptive contrast (Gaussian fit + critic residual)"


def format_row(tag: str, r: dict) -> str:
    """An evaluation row as two labelled lines, so that no estimate passes for a bound:
        test | the paper's way (critic estimates):            rec .. | KL .. | MI .. | AU .. | -ELBO .. | PPL ..
        test | true values and bounds (exact, lower bound, IW): KL >= .. (lower bound) | IW-NLL .. >= -log p(x) | ...

    The first holds the paper's columns (for an implicit q its KL and MI are critic estimates and its -ELBO
    is no bound; vae.py's KL is closed form). The second holds what is true: the exact KL, -ELBO and MI where
    q is known, the KL's lower bound, the IW bound, log N; it is left out when the row has none of them."""
    critic = "kl_agg" in r or "kl_lower" in r                       # an implicit posterior: the critics' KL
    label = AC_LABEL if "kl_ac" in r else PAPER_LABEL[critic]           # ivae.py --kl_estimator ac: its own KL
    paper = (f"rec {r['rec']:.2f} | KL {r['kl']:.2f} | MI {r['mi']:.2f} | AU {r['au']} | "
             f"-ELBO {r['nelbo']:.2f} | PPL {r['ppl']:.2f}")
    true = []
    if "kl_exact" in r:
        true.append(f"exact KL {r['kl_exact']:.2f}")
        if "nelbo_exact" in r:
            ppl = f" (PPL {r['ppl_exact']:.2f})" if "ppl_exact" in r else ""
            true.append(f"exact -ELBO {r['nelbo_exact']:.2f}{ppl}")
    if "kl_lower" in r:
        true.append(f"KL >= {r['kl_lower']:.2f} (lower bound)")
    if "mi_exact" in r:
        true.append(f"exact MI {r['mi_exact']:.2f}")
    if "iw_nll" in r:
        true.append(f"IW-NLL {r['iw_nll']:.2f} >= -log p(x)" + (f" (K {r['iw_samples']})" if "iw_samples" in r else "")
                    + f" | IW-PPL {r['iw_ppl']:.2f}")
    if "log_n" in r:
        true.append(f"MI <= log N {r['log_n']:.2f}")
    if not true:
        return f"{tag} | {label}: {paper}"
    width = max(len(label), len(TRUE_LABEL)) + 1                        # the two lines' numbers line up
    return (f"{tag} | {label + ':':<{width}} {paper}\n"
            f"{tag} | {TRUE_LABEL + ':':<{width}} {' | '.join(true)}")


def honest_notes(r: dict) -> list:
    """Plain-words notes on an evaluation row where an estimate contradicts a bound or a fact."""
    notes, whose = [], "adaptive contrast's" if "kl_ac" in r else "the critic's"   # kl_ac: Gaussian fit + residual
    if "kl_lower" in r and r["kl"] < r["kl_lower"]:
        notes.append(f"{whose} KL {r['kl']:.2f} is below the lower bound {r['kl_lower']:.2f}: "
                     f"it underestimates the true KL by at least {r['kl_lower'] - r['kl']:.2f} nats")
    if ("kl_agg" in r or "kl_lower" in r) and "iw_nll" in r and r["nelbo"] < r["iw_nll"]:
        notes.append(f"the paper's -ELBO {r['nelbo']:.2f} is below IW-NLL {r['iw_nll']:.2f}: with the critic's KL it "
                     "is no bound (a true -ELBO is never below -log p(x)); IW-NLL is the number that bounds "
                     "the model's -log p(x) from above")
    if "kl_exact" in r and math.isfinite(r["kl_exact"]):
        notes.append(f"exact KL {r['kl_exact']:.2f} vs {whose} {r['kl']:.2f}: -ELBO "
                     f"{r['nelbo_exact']:.2f} exact vs {r['nelbo']:.2f} the paper's way")
    elif "kl_exact" in r:
        notes.append("the affine encoder's W is rank-deficient: q(z|x) lives on a subspace and its exact "
                     "KL is infinite")
    for key in ("mi", "mi_exact"):                 # (1e-9: mi_exact reaches log N up to float rounding)
        if key in r and "log_n" in r and r[key] > r["log_n"] + 1e-9:
            notes.append(f"{key} {r[key]:.2f} exceeds log N = {r['log_n']:.2f}, the most that N sentences "
                         "allow: an estimator artifact")
    if "mi_se" in r and r["mi"] > r["kl"]:         # Gaussian q: KL - MI = KL(q(z) || p) >= 0
        excess = r["mi"] - r["kl"]
        in_se = f"{excess / r['mi_se']:.1f}" if r["mi_se"] > 0 else "?"
        notes.append(f"the MI estimate {r['mi']:.2f} exceeds the KL {r['kl']:.2f}, which the true MI cannot: "
                     f"by {excess:.2f} nats, {in_se} standard errors of its Monte-Carlo part (SE {r['mi_se']:.2f})")
    return notes


def warn_collapse(r: dict, latent: int) -> bool:
    """Print a loud warning when z is (partly) unused; True if it did. The KL judged: the exact one where known, else
    the larger of the critic's and the lower bound (a critic can only make it look smaller), else vae.py's closed form.
      * KL < COLLAPSE_KL: collapse; AU <= a tenth of the units (the paper's VAE: 2 of 32) and KL <= log N: partial.
      * as few units but KL > log N: not a collapse. MI <= log N, so >= KL - log N nats are KL(q(z) || p): the
        posterior sits away from the prior in the same place for every x."""
    if "kl_exact" in r:
        kl, which = r["kl_exact"], "exact KL"
    elif r.get("kl_lower", -math.inf) > r["kl"]:
        kl, which = r["kl_lower"], f"lower bound; the critic says {r['kl']:.3f}"
    else:
        kl, which = r["kl"], ("the critic's estimate" if "kl_agg" in r or "kl_lower" in r else "closed form")
    au, few, log_n = r["au"], latent // 10, r.get("log_n", math.inf)
    if kl < COLLAPSE_KL:
        msg = (f"WARNING: POSTERIOR COLLAPSE: KL = {kl:.3f} nats ({which}) is below {COLLAPSE_KL} nats, "
               f"AU = {au}/{latent}: q(z|x) is (almost) the prior for every sentence, the decoder ignores z")
    elif au <= few and kl <= log_n:
        msg = (f"WARNING: PARTIAL POSTERIOR COLLAPSE: AU = {au}/{latent} (at most {few} active units), "
               f"KL = {kl:.3f} nats ({which}): the other units are the prior, the decoder uses little of z")
    elif au <= few:
        msg = (f"WARNING: AU = {au}/{latent}: no unit varies across sentences although KL is large "
               f"({kl:.3f} nats, {which}; above log N = {log_n:.2f}, the most information N sentences can "
               "carry): the posterior ignores x. Not a collapse: q(z|x) is far from the prior, in the same "
               "place for every sentence")
    else:
        return False
    print(msg, flush=True)
    return True


# ----------------------------------------------------------------------------------------------------
# Pictures of the metrics (PNG files under a run's out_dir)
# ----------------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_curves(rows: list, keys: Sequence[str], path: str, x: str = "step") -> None:
    """One panel per key of the evaluation rows (dicts, e.g. log.csv), against `x`; missing values skipped.
    No rows (--eval_only in a folder without log.csv), no file: an empty picture would say nothing."""
    if not rows:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(float(r[x]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3)
        ax.set(title=key, xlabel=x)
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_critic_vs_exact(rows: list, path: str, title: str = "", x: str = "step") -> None:
    """The KL of q(z|x) three ways over training (rows of log.csv): the critic's estimate (the paper's
    number), the lower bound, and the exact value (affine encoder); MI beside log N."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    kl = [("kl_exact", "exact KL(q(z|x) || p)", "tab:green"), ("kl_lower", "lower bound (kl_lower)", "tab:blue"),
          ("kl", "critic nu(x, z) (the paper's KL)", "tab:red")]
    mi = [("mi_exact", "exact MI", "tab:green"), ("mi", "critic MI (the paper's)", "tab:red"),
          ("log_n", "log N (the most N sentences allow)", "gray")]
    for ax, series in zip(axes, (kl, mi)):
        for key, label, color in series:
            pts = [(float(r[x]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if pts:
                ax.plot(*zip(*pts), marker=None if key == "log_n" else "o", ms=3, label=label, color=color,
                        ls="--" if key == "log_n" else "-")
    axes[0].set(ylabel="nats per sentence", title="KL term of the ELBO")
    axes[1].set_title("mutual information I(x; z)")
    for ax in axes:
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)


def plot_run(rows: list, keys: Sequence[str], out_dir: str, au_var=None, kept=None, critic_title: str = "") -> None:
    """An LM script's pictures in out_dir: curves.png (`keys` of the validation rows), with critic_title
    critic_vs_exact.png, and from the test active_units.png (au_var) and posterior_pca.png (kept)."""
    plot_curves(rows, keys, os.path.join(out_dir, "curves.png"))
    if critic_title:
        plot_critic_vs_exact(rows, os.path.join(out_dir, "critic_vs_exact.png"), critic_title)
    if au_var is not None:
        plot_active_units(au_var, 0.01, os.path.join(out_dir, "active_units.png"))
    if kept is not None:
        plot_latent_pca(kept, os.path.join(out_dir, "posterior_pca.png"), prior=torch.randn(500, kept.shape[-1]))


def plot_active_units(variance: torch.Tensor, threshold: float, path: str) -> None:
    """Cov_x(E[z_d|x]) per latent dimension, log scale, with the active-unit threshold."""
    plt = _pyplot()
    v = variance.double().clamp_min(1e-12).cpu().numpy()
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(np.arange(len(v)), v, color=["tab:blue" if x >= threshold else "tab:gray" for x in v])
    ax.axhline(threshold, color="tab:red", ls="--", label=f"threshold {threshold}")
    ax.set(yscale="log", xlabel="latent dimension", ylabel="Var_x E[z_d | x]",
           title=f"active units: {int((v >= threshold).sum())} / {len(v)}")
    ax.legend()
    _save(fig, path)


def plot_latent_pca(samples: torch.Tensor, path: str, prior: Optional[torch.Tensor] = None) -> None:
    """Posterior samples of a few sentences, (N, S, Z), projected on the 2 principal axes of all of them,
    one colour per sentence; prior samples (M, Z), if given, in grey behind (Figure 1, for text)."""
    plt = _pyplot()
    N, S, Z = samples.shape
    flat = samples.reshape(N * S, Z).double().cpu()
    centre = flat.mean(0)
    _, _, v = torch.linalg.svd(flat - centre, full_matrices=False)
    axes = v[:2].T                                                       # (Z, 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    if prior is not None:
        p = (prior.double().cpu() - centre) @ axes
        ax.scatter(p[:, 0], p[:, 1], s=3, c="lightgray", label="prior")
    proj = ((flat - centre) @ axes).reshape(N, S, 2)
    for i in range(N):
        ax.scatter(proj[i, :, 0], proj[i, :, 1], s=5, label=f"sentence {i}")
    ax.set_title("posterior samples, first two principal axes")
    ax.legend(fontsize=6, loc="best")
    _save(fig, path)

r"""Metrics shared by every script: latent-variable diagnostics, perplexities and text metrics.

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
Each function states its formula and where the formula comes from. Nothing here trains a model.

Paper section -> code
    Eq. (3), Gaussian baselines (§5.1)        -> gaussian_kl, gaussian_mi
    Eq. (7)-(9), the dual form of the KL      -> dual_kl
    §3.2 / §5.1, mutual information           -> mutual_info
    §5.1 active units, perplexity             -> active_units, perplexity, log_mean_exp
    honest bounds (importance sampling)       -> fit_gaussian_proposal, iw_nll
    §5.2-§5.3, Tables 7-8 (BLEU, BOW, Dist.)  -> sentence_bleu, bleu_recall_precision, corpus_bleu,
                                                 load_word_vectors, bow_similarity, bow_metrics,
                                                 distinct_intra, distinct_inter
    Table 5 forward / reverse PPL, style RPPL -> NGramLM (5-gram, interpolated modified Kneser-Ney)

Shapes: B examples, S samples per example, Z latent dimensions.
Reductions are written out: KLs are summed over latent dimensions and returned per example; callers
average over sentences themselves.
"""
import math
from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------
# KL divergences: closed form (Gaussian) and the Fenchel dual (implicit posteriors)
# ----------------------------------------------------------------------------------------------------


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, summed over the latent dimensions.

        KL = 1/2 * sum_d ( mu_d^2 + sigma_d^2 - log sigma_d^2 - 1 )

    (Kingma & Welling 2014, App. B). mu, logvar: (..., Z) -> (...)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


def dual_kl(nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    r"""The Fenchel-dual estimate of KL(q || p) from a critic nu evaluated on samples of q and of p.

        KL(q || p) = max_nu  E_q[nu(z)] - E_p[exp(nu(z))] + 1,      optimum nu*(z) = log q(z) / p(z)

    nu_q: (..., S) critic values on S samples z ~ q; nu_p: (..., S') on S' samples z ~ p. The means run
    over the last dimension, so the result has shape (...): one estimate per example for nu(x, z), or a
    scalar for nu(z). The same expression, maximised, is the critic's training objective (Eq. 9).

    Why "+1": the convex conjugate of f(t) = t log t is f*(u) = exp(u - 1) (Nguyen, Wainwright & Jordan
    2010), which gives KL = max_T E_q[T] - E_p[exp(T - 1)]. Writing T = nu + 1 gives the form above.
    Eq. (7) as printed in the paper, E_q[nu] - E_p[exp(nu)], has the same maximiser nu* = log q/p but its
    maximum is KL - 1; the authors' evaluation code adds the 1 back, and so do we.

    For any nu the value is a lower bound on the KL (in expectation): an undertrained critic
    underestimates the KL, so an ELBO built on this estimate is not a bound on log p(x).
    exp(nu) is computed in float64 (nu of a few tens overflows nothing there, and bf16/fp16 inputs are
    safe); the result is returned in float32 or the inputs' dtype if wider."""
    out_dtype = torch.promote_types(nu_q.dtype, torch.float32)
    nu_q, nu_p = nu_q.double(), nu_p.double()
    return (nu_q.mean(-1) - nu_p.exp().mean(-1) + 1.0).to(out_dtype)


def mutual_info(kl_cond, kl_agg):
    r"""I(x; z) under q(x, z) = p_data(x) q(z|x), from the identity (Hoffman & Johnson 2016; Eq. 11):

        E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z))   =>   I = E_x KL(q(z|x)||p) - KL(q(z)||p)

    kl_cond: per-example KL(q(z|x) || p) (any shape, averaged here) or its mean; kl_agg: KL(q(z) || p)
    of the aggregated posterior q(z) = E_x q(z|x). With dual estimates (nu(x, z) and nu(z)) the result
    inherits their errors and can even be negative, which the exact MI never is."""
    kl_cond = kl_cond.float().mean() if isinstance(kl_cond, torch.Tensor) else kl_cond
    return kl_cond - kl_agg


def gaussian_mi(mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor) -> float:
    r"""He et al. (2019)'s Monte-Carlo estimate of I(x; z) for Gaussian posteriors q(z|x) = N(mu, sigma^2).

        I = E_x E_{q(z|x)} [log q(z|x)] - E_{q(x,z)} [log q(z)]
        E_{q(z|x)} log q(z|x) = -Z/2 log(2 pi) - 1/2 sum_d (1 + logvar_d)       (minus the entropy)
        log q(z) ~= log (1/B) sum_i q(z | x_i)                                   (the batch as q(x))

    mu, logvar: (B, Z) for B sentences; z: (B, Z) or (B, S, Z), samples z ~ q(z|x_b).
    Source: He, Spokoyny, Neubig, Berg-Kirkpatrick, "Lagging inference networks", ICLR 2019
    (calc_mi). The log q(z) term uses the same batch, so the estimate is biased for small B: it cannot
    exceed log B (plus a small term), so use batches of hundreds or more."""
    mu, logvar, z = mu.double(), logvar.double(), z.double()
    if z.dim() == 2:
        z = z.unsqueeze(1)                                               # (B, S, Z)
    B, S, Z = z.shape
    neg_entropy = (-0.5 * Z * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    # log q(z_bs | x_i) for every sample (b, s) and every posterior i: (B*S, B)
    zz = z.reshape(B * S, 1, Z)
    var = logvar.exp().unsqueeze(0)                                      # (1, B, Z)
    log_density = -0.5 * (((zz - mu.unsqueeze(0)) ** 2) / var).sum(-1) \
        - 0.5 * (Z * math.log(2 * math.pi) + logvar.sum(-1).unsqueeze(0))
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(B)           # (B*S,)
    return float(neg_entropy - log_qz.mean())


def active_units(means: torch.Tensor, threshold: float = 0.01, unbiased: bool = False):
    r"""Active units (Burda et al. 2016): dimension d is active if Cov_x(E_{q(z|x)}[z_d]) > threshold.

        A_d = Var_x( E_{q(z|x)}[z_d] ),      AU = #{d : A_d >= threshold},   threshold delta = 0.01

    means: (N, Z) posterior means, one row per sentence (for implicit posteriors, the mean of the
    posterior samples). Returns (count, per-dimension variance (Z,)). The authors' code uses the biased
    variance (divide by N, our default); He et al. (2019) divide by N - 1 (`unbiased=True`).
    Both compare with `>=`."""
    var = means.double().var(dim=0, unbiased=unbiased)
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

    `n_words` counts every word and one </s> per sentence, not <s>: the convention of the authors' code,
    He et al. (2019) and Kim et al. (2018). With data.py's sentences (<s> w_1 .. w_n </s>, length n + 2)
    that is sum(length - 1). For a VAE, nll_sum is the sum of -ELBO (or of the IW bound) over sentences."""
    if n_words <= 0:
        raise ValueError("perplexity needs at least one word")
    return math.exp(nll_sum / n_words)


def fit_gaussian_proposal(samples: torch.Tensor, jitter: float = 1e-4,
                          diagonal: bool = False) -> torch.distributions.Distribution:
    r"""A Gaussian fitted to posterior samples: the proposal of an importance-weighted bound.

    samples: (B, S, Z), S samples of q(z|x_b) -> a batch of B Gaussians with the samples' mean and
    covariance (+ jitter * I so it stays positive definite). Any proposal gives a valid bound in
    iw_nll; a proposal close to the true posterior gives a tight one."""
    samples = samples.double()
    mean = samples.mean(1)                                               # (B, Z)
    centred = samples - mean.unsqueeze(1)                                # (B, S, Z)
    if diagonal:
        std = (centred.pow(2).mean(1) + jitter).sqrt()
        return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)
    cov = centred.transpose(1, 2) @ centred / samples.shape[1]           # (B, Z, Z)
    cov = cov + jitter * torch.eye(samples.shape[-1], dtype=cov.dtype)
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)


def iw_nll(log_joint: torch.Tensor, log_proposal: torch.Tensor) -> torch.Tensor:
    r"""Importance-weighted upper bound on -log p(x) (Burda et al. 2016), per example.

        -log p(x) <= -log (1/K) sum_k p(x, z_k) / r(z_k),     z_k ~ r(z | x)

    log_joint: (B, K) = log p(x|z_k) + log p(z_k); log_proposal: (B, K) = log r(z_k|x). The bound holds
    in expectation for any proposal r with the right support and tightens as K grows; it needs no
    critic, so it compares Gaussian and implicit posteriors on equal terms."""
    return -log_mean_exp(log_joint.double() - log_proposal.double(), dim=-1)


# ----------------------------------------------------------------------------------------------------
# Text metrics for dialog (Table 8) and style transfer (Table 7)
# ----------------------------------------------------------------------------------------------------


def sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str], n: int = 3) -> float:
    r"""Sentence BLEU of one hypothesis against one reference.

        BLEU = BP * exp( sum_{k=1..n} (1/n) log p_k ),  BP = min(1, exp(1 - |ref| / |hyp|))

    p_k the clipped k-gram precision (Papineni et al. 2002), smoothed with nltk's method7 (Chen & Cherry
    2014) as the authors' dialog and style code does. n = 3, uniform weights (1/3, 1/3, 1/3), is what
    their code runs; the paper's text says 4-gram: pass n=4 for that. An empty hypothesis or reference
    scores 0 (the authors' code catches nltk's exception and scores 0).

    Beware: method7 includes method5, which averages each precision with its neighbours (and, for the
    last order, with the 5-gram precision), so it changes non-zero precisions too and can exceed 1: a
    six-word sentence scored against itself gets 1.154. The published numbers carry this quirk."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu
    if not hypothesis or not reference:
        return 0.0
    return float(nltk_sentence_bleu([list(reference)], list(hypothesis), weights=(1.0 / n,) * n,
                                    smoothing_function=SmoothingFunction().method7))


def bleu_recall_precision(hyps_per_context: Sequence[Sequence[Sequence[str]]],
                          references: Sequence[Sequence[str]], n: int = 3) -> dict:
    r"""Dialog BLEU of Zhao et al. (2017) / Gu et al. (2018), for K sampled responses per context:

        BLEU-R = mean over contexts of max_k BLEU(ref, hyp_k)      (recall: is some sample close?)
        BLEU-P = mean over contexts of mean_k BLEU(ref, hyp_k)     (precision: are samples close?)
        BLEU-F1 = 2 P R / (P + R)      (of the averaged P and R, as DialogWAE computes it)"""
    if len(hyps_per_context) != len(references) or not references:
        raise ValueError("need one list of hypotheses per reference, and at least one reference")
    recall, precision = [], []
    for hyps, ref in zip(hyps_per_context, references):
        scores = [sentence_bleu(ref, h, n) for h in hyps]
        recall.append(max(scores))
        precision.append(sum(scores) / len(scores))
    r, p = float(np.mean(recall)), float(np.mean(precision))
    return {"bleu_r": r, "bleu_p": p, "bleu_f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]],
                n: int = 4) -> float:
    r"""Corpus BLEU (Papineni et al. 2002): k-gram counts pooled over all sentences before the
    precisions and the brevity penalty are taken; no smoothing. references: one list of references
    (each a token list) per hypothesis."""
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
    return float(nltk_corpus_bleu([[list(r) for r in refs] for refs in references],
                                  [list(h) for h in hypotheses], weights=(1.0 / n,) * n))


def load_word_vectors(path: str, words: Optional[Iterable[str]] = None) -> dict:
    r"""A GloVe/word2vec text file (`word v_1 ... v_d` per line) -> {word: float64 vector}.
    With `words`, only those words are kept (the file may be large)."""
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
        extrema: cos( ext(hyp), ext(ref) ), ext_d = the value of largest |.| among the words' e_{w,d}
                 (Forgues et al. 2014)
        greedy:  1/2 [ mean_{w in hyp} max_{v in ref} cos(e_w, e_v) + mean_{v in ref} max_{w in hyp} cos ]
                 (Rus & Lintean 2012)

    Only words with a vector count; a sentence with none scores 0 on all three. Differences from
    DialogWAE's implementation (which the paper's Table 8 used): it embeds padded index matrices, so its
    greedy score averages over padding positions, its extrema takes the max over padding zeros and the
    min over padding + 1, and words without a GloVe vector get random vectors. Here every sum runs over
    the real words only and unknown words are skipped, so a sentence's score does not depend on the
    length of the longest sentence in its batch."""
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
    r"""intra-dist-n (Li et al. 2016; Gu et al. 2018): for each response, #distinct n-grams / #n-grams;
    averaged over responses. A response shorter than n has no n-gram and counts as 0 (DialogWAE's
    epsilons give it ~1e-7)."""
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

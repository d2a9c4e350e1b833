"""Assignment 5: honest evaluation: an importance-weighted bound vs the ELBO. Fill in the three functions.

Shapes: B sentences, K samples per sentence, S posterior samples, Z latent.
log_joint[b, k] = log p(x_b | z_k) + log p(z_k); log_proposal[b, k] = log r(z_k | x_b), z_k ~ r(z | x_b).
"""
import torch


def iw_nll(log_joint: torch.Tensor, log_proposal: torch.Tensor) -> torch.Tensor:
    """-log (1/K) sum_k p(x, z_k) / r(z_k): the importance-weighted upper bound on -log p(x). -> (B,).
    Work in log space (logsumexp), in float64."""
    raise NotImplementedError


def negative_elbo(log_joint: torch.Tensor, log_proposal: torch.Tensor) -> torch.Tensor:
    """The same samples' Monte-Carlo -ELBO: -(1/K) sum_k [log p(x, z_k) - log r(z_k)]. -> (B,)"""
    raise NotImplementedError


def fit_gaussian(samples: torch.Tensor) -> tuple:
    """samples (B, S, Z) -> (mean (B, Z), covariance (B, Z, Z)), the biased covariance (divide by S)."""
    raise NotImplementedError

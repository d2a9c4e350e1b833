"""Assignment 2: implicit posteriors (Eq. 6) and active units (§5.1). Fill in the three pieces.

Shapes: B sentences, H encoder features, E noise dimensions, Z latent, S samples, N sentences.
"""
import torch
import torch.nn as nn


class Generator(nn.Module):
    """z = G_phi(h, eps), eps ~ N(0, I_E): an MLP on cat(h, eps) with `layers` hidden layers of `width`
    units and LeakyReLU between them; with layers = 0, a single nn.Linear (the authors' code)."""

    def __init__(self, hidden: int, noise_dim: int, latent: int, layers: int, width: int):
        super().__init__()
        raise NotImplementedError

    def forward(self, h: torch.Tensor, n_samples: int) -> torch.Tensor:
        """h (B, H) -> z (B, S, Z), with fresh noise for every sample."""
        raise NotImplementedError


def affine_covariance(linear: nn.Linear, noise_dim: int) -> torch.Tensor:
    """For z = linear(cat(h, eps)), eps ~ N(0, I), the covariance of z given h: (Z, Z). The last
    `noise_dim` input columns of the layer are eps's."""
    raise NotImplementedError


def active_units(means: torch.Tensor, threshold: float = 0.01):
    """means (N, Z): posterior means of N sentences. Returns (number of dimensions whose variance over
    the sentences is >= threshold, the per-dimension variance (Z,)). Use the biased variance (divide by N)."""
    raise NotImplementedError

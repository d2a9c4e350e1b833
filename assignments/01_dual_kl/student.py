"""Assignment 1: the dual form of the KL (Fang et al. 2019, Eq. 7 and 9). Fill in the three functions.

Shapes: S samples. nu_q holds the critic's values on S samples of q, nu_p on S samples of p.
"""
import torch


def dual_kl_estimate(nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    """The Fenchel-dual estimate of KL(q || p) from critic values: E_q[nu] - E_p[exp(nu)] + 1.
    nu_q: (S,), nu_p: (S',) -> a scalar tensor. Compute exp in float64."""
    raise NotImplementedError


def critic_loss(nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    """The loss an optimiser *minimises* to train the critic so that it maximises Eq. (9). -> scalar."""
    raise NotImplementedError


def train_critic(sample_q, sample_p, critic: torch.nn.Module, steps: int = 400, batch: int = 512,
                 lr: float = 3e-3) -> torch.nn.Module:
    """Train `critic` (maps (N, Z) -> (N, 1)) with Adam for `steps` steps on fresh samples each step:
    sample_q(n) and sample_p(n) return (n, Z) tensors. Return the trained critic."""
    raise NotImplementedError

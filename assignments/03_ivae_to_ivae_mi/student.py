"""Assignment 3: from iVAE to iVAE_MI (Eq. 10 and 14). Fill in the three functions.

nu_xz(z, h) -> (B,) is the critic of KL(q(z|x) || p); nu_z(z) -> (B,) the critic of KL(q(z) || p).
z: (B, Z) posterior samples (one per sentence, with gradients to the encoder); h: (B, H) encoder features.
"""
import torch


def regulariser(nu_xz, nu_z, z: torch.Tensor, h: torch.Tensor, objective: str) -> torch.Tensor:
    """The KL term the encoder/decoder minimise (the E_p[exp nu] term is dropped: it has no phi in it).
    objective "ivae": Eq. (10), the mean of nu(x, z) over the batch, with h entering the critic detached;
    objective "ivae_mi": Eq. (14), the mean of nu(z). -> scalar."""
    raise NotImplementedError


def critic_loss(nu_xz, nu_z, z: torch.Tensor, h: torch.Tensor, z_prior: torch.Tensor) -> torch.Tensor:
    """The loss whose minimisation trains *both* critics on the same samples (Eq. 9 and 13): the sum of the
    two negative dual estimates E_q nu - E_p exp(nu) + 1. No gradient may reach z or h. -> scalar."""
    raise NotImplementedError


def mutual_info(kl_cond: float, kl_agg: float) -> float:
    """I(x; z) from E_x KL(q(z|x) || p) and KL(q(z) || p) (the identity behind Eq. 11)."""
    raise NotImplementedError

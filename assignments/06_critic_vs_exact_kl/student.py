r"""Assignment 6: the critic vs the exact KL, with the affine encoder. Fill in the five functions.

q(z|x) = N(m, W W^T): m = A h + c (Z,), W (Z, E) the noise columns of the affine G. p = N(0, I_Z).
Shapes: Z latent, E noise dimensions (E >= Z), N samples. Use PyTorch and the standard library only.
"""
import torch


def exact_kl(mean: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    r"""KL(N(mean, W W^T) || N(0, I)) = 1/2 (tr(W W^T) + |mean|^2 - Z - log det(W W^T)), in float64, from W's
    singular values (do not form W W^T in float32). mean (..., Z), W (Z, E) -> (...), float64."""
    raise NotImplementedError


def log_ratio(z: torch.Tensor, mean: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The ideal critic nu*(z) = log q(z) - log p(z) for q = N(mean, W W^T), p = N(0, I), in float64.
    z (N, Z), mean (Z,), W (Z, E) -> (N,), float64."""
    raise NotImplementedError


def dual_estimate(nu_q: torch.Tensor, nu_p: torch.Tensor) -> torch.Tensor:
    """E_q[nu] - E_p[exp(nu)] + 1 from the critic's values on samples of q (S,) and of p (S',), exp in
    float64. -> a scalar tensor."""
    raise NotImplementedError


def train_critic(sample_q, sample_p, critic: torch.nn.Module, steps: int, lr: float = 1e-5, updates: int = 5,
                 batch: int = 32) -> torch.nn.Module:
    """The authors' recipe: Adam with learning rate `lr`; each of the `steps` training steps makes `updates`
    updates of the critic, each on fresh samples sample_q(batch) and sample_p(batch) ((batch, Z) tensors),
    maximising dual_estimate. critic maps (N, Z) -> (N, 1). Return the critic."""
    raise NotImplementedError


def measure(mean: torch.Tensor, W: torch.Tensor, critic: torch.nn.Module, steps: int = 300, c: float = 5.0,
            n_eval: int = 128, seed: int = 0) -> dict:
    """The experiment. With a torch.Generator seeded by `seed` for every sample, sample q as the affine
    encoder does (z = mean + W eps, eps ~ N(0, I_E)) and p = N(0, I); train `critic` with train_critic's
    defaults for `steps` steps; then draw n_eval samples of q and n_eval of p (the authors evaluate with
    128 + 128) and return a dict of floats:
        "exact":            exact_kl(mean, W)
        "trained":          dual_estimate of the trained critic on those samples
        "ideal":            dual_estimate of log_ratio on the same samples
        "ideal_plus_c":     dual_estimate of log_ratio + c on the same samples
        "ideal_mean_exp_p": the sample mean of exp(log_ratio) over the n_eval samples of p"""
    raise NotImplementedError

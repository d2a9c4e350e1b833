"""Assignment 4: posterior collapse and the KL-annealing schedules (§5.1; Fu et al. 2019).

Steps are 0-based. Fill in the three functions; then run the experiment in README.md.
"""


def monotonic_beta(step: int, warmup_steps: int, beta_start: float = 0.1, beta_max: float = 1.0) -> float:
    """beta rises linearly from beta_start (step 0) towards 1, reaching 1 at warmup_steps, and never exceeds
    beta_max (beta-VAE caps it, e.g. 0.5)."""
    raise NotImplementedError


def cyclical_beta(step: int, total_steps: int, cycles: int = 4, ratio: float = 0.5, beta_max: float = 1.0) -> float:
    """Fu et al. (2019): the run is cut into `cycles` periods of ceil(total_steps / cycles) steps; within a
    period beta rises linearly from 0 over the first `ratio` of it, then stays at beta_max."""
    raise NotImplementedError


def kl_and_au(log_csv: str) -> tuple:
    """From a log.csv written by vae.py / ivae.py: the validation rows' (steps, kl, au) as three lists
    (int, float, int), in file order."""
    raise NotImplementedError

"""Reference solution of assignment 4: the KL-annealing schedules and a log.csv reader. Written out in
full, without the repository's code (vae.py's beta_at is the same schedule)."""
import csv
import math


def monotonic_beta(step, warmup_steps, beta_start=0.1, beta_max=1.0):
    # linear from beta_start at step 0 to 1 at warmup_steps; a beta-VAE caps it at beta_max
    if warmup_steps <= 0:
        return beta_max
    return min(beta_max, beta_start + (1.0 - beta_start) * step / warmup_steps)


def cyclical_beta(step, total_steps, cycles=4, ratio=0.5, beta_max=1.0):
    # Fu et al. (2019), Eq. (6): period L = ceil(T / M), tau = (step mod L) / L, beta = beta_max * min(1, tau / R)
    period = math.ceil(total_steps / cycles)
    tau = (step % period) / period
    return beta_max * min(1.0, tau / ratio)


def kl_and_au(log_csv):
    with open(log_csv, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "valid"]
    steps = [int(float(r["step"])) for r in rows]       # float() first: "100.0" is a valid step too
    return steps, [float(r["kl"]) for r in rows], [int(float(r["au"])) for r in rows]

"""Reference solution of assignment 4 (the schedules are vae.py's beta_at; the log reader is data.CsvLog)."""
import data
import vae


def monotonic_beta(step, warmup_steps, beta_start=0.1, beta_max=1.0):
    cfg = vae.Config(anneal="monotonic", beta=beta_max, beta_start=beta_start, warmup_epochs=1)
    return vae.beta_at(step, warmup_steps, warmup_steps, cfg)          # one "epoch" = warmup_steps


def cyclical_beta(step, total_steps, cycles=4, ratio=0.5, beta_max=1.0):
    cfg = vae.Config(anneal="cyclical", beta=beta_max, cycles=cycles, ratio=ratio)
    return vae.beta_at(step, 1, total_steps, cfg)


def kl_and_au(log_csv):
    rows = [r for r in data.CsvLog(log_csv, resume_step=10 ** 12).rows() if r["split"] == "valid"]
    return [int(float(r["step"])) for r in rows], [float(r["kl"]) for r in rows], [int(float(r["au"])) for r in rows]

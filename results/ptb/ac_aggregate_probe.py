r"""Issue 29, Build item 3: does adaptive contrast fit iVAE_MI's aggregate posterior q(z)?

iVAE_MI (ivae_mi.py) penalises KL(q(z) || p) of the aggregate q(z) = 1/N sum_n q(z|x_n). Adaptive contrast
(Mescheder et al. 2017, §3.3; ivae.py ac_train_step per sentence) splits any KL as

    KL(q || p) = E_q[log r - log p] + KL(q || r),   r = N(mu, Sigma) with q's own mean and covariance,

the first term in closed form (metrics.gaussian_term), the second left to a critic on whitened samples.
Here q is the aggregate, a mixture of N Gaussians: far from Gaussian once they separate (I(x; z) near
log N), close to it while they overlap. This probe trains
`ivae_mi.py --encoder_layers 0` (the affine G_phi, so q(z|x) = N(A h + c, W W^T) and the aggregate's KL
is exact: metrics.aggregate_kl_mi) with ivae_mi.train_step unchanged, and every `every` steps, on a
fixed set of N training sentences, compares

    exact    KL(q_N(z) || p) of the N-sentence aggregate (metrics.aggregate_kl_mi, as evaluate() does)
    dual     the paper's nu(z) (Eq. 13), trained beside the model, on `dual_samples` z per sentence
    gauss    AC on the aggregate: moments of the pooled samples (k per sentence, all N pooled),
             gaussian_term with the Wishart correction at N k samples
    resid    a FRESH critic nu(u) on pooled whitened samples vs N(0, I) (metrics.residual_check)
    total    gauss + resid;  gap = exact - gauss is the residual a perfect critic would find
    g_run    gaussian_term of running (EMA) moments of the z that train_step itself drew (a forward hook)
    g_B, ex_B  gaussian_term from ONE training-size batch (B sentences x k samples) and the exact KL of
             that B-sentence aggregate, each averaged over the N/B batches of the probe set: what a
             training step of `ivae_mi.py --kl_estimator ac` with batch moments would see
At the end (the last model): a stronger fresh critic, a Gaussian control (must read ~0), and the same
posteriors narrowed by s (means kept, no training) to reach the separated regime a short run does not.

Run (from the repository root; 7.3 min on one thread of a 2-core CPU at load ~4, 2026-12-04):
    python results/ptb/ac_aggregate_probe.py            # writes results/ptb/ac_aggregate_probe.txt

Shapes: N probe sentences, B batch, k samples per sentence, Z latent, H LSTM hidden.
The probe's randomness has its own generator, and the critics' initialisation runs inside fork_rng, so the
training run sees the same random stream as without the probe. One seed, one short run.
"""
from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import data  # noqa: E402
import ivae_mi  # noqa: E402
import metrics  # noqa: E402
from data import option  # noqa: E402


@dataclass
class ProbeConfig:
    steps: int = option(400, "training steps of ivae_mi.train_step (affine G_phi, fp32, PTB)", low=1)
    every: int = option(50, "probe every N steps (and at step 0)", low=1)
    sentences: int = option(512, "fixed training sentences the aggregate is taken over (data.spread)", low=2)
    k: int = option(4, "posterior samples per sentence pooled for the aggregate's moments", low=1)
    dual_samples: int = option(8, "z per sentence for the paper's nu(z) estimate (ivae_mi's val_samples)", low=1)
    batch: int = option(32, "sentences in the training-size batch of g_B / ex_B (ivae_mi's batch_size)", low=2)
    ema: float = option(0.98, "decay per step of the running moments of g_run (~100 steps, ~3,200 z)")
    critic_width: int = option(256, "width of the fresh residual critic's hidden layers", low=1)
    critic_layers: int = option(2, "hidden layers of the fresh residual critic", low=0)
    critic_steps: int = option(600, "Adam updates of the fresh residual critic (cosine decay to 0)", low=1)
    critic_fit: int = option(2048, "pooled samples per update that fit mu, Sigma and are whitened (in-sample)",
                             low=2)
    critic_batch: int = option(256, "whitened samples (and N(0, I) samples) per critic update", low=1)
    critic_lr: float = option(1e-3, "Adam learning rate of the fresh critic (residual_check's default)", low=0)
    final_steps: int = option(800, "at the last probe only: a stronger critic (ivae_mi's 3 x 512) with this many "
                                    "updates, and the Gaussian control (0: skip)", low=0)
    narrow: tuple = option(("1", "0.5", "0.25", "0.1", "0.03"), "at the end, no training: the last model's posteriors "
                           "narrowed, q(z|x_n) = N(m_n, s^2 W W^T) for each s, the means kept (empty: skip)")
    seed: int = option(0, "seed of the training run (ivae_mi's default)")
    out: str = option(os.path.join(ROOT, "results", "ptb", "ac_aggregate_probe.txt"), "where the table goes")


# ----------------------------------------------------------------------------------------------------
# The aggregate of the probe set: exact KL, the paper's dual, and adaptive contrast on pooled samples
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def encode(model: ivae_mi.IVAE, probe: list, batch: int) -> torch.Tensor:
    """h (N, H) of the probe sentences, in their order (equal-length batches would reorder them)."""
    model.eval()
    hs = []
    for i in range(0, len(probe), batch):
        x, lengths = data.pad_rows(probe[i:i + batch])
        hs.append(model.encoder(x, lengths))
    model.train()
    return torch.cat(hs)                                                 # (N, H)


def pooled_sampler(posterior, h: torch.Tensor, gen: torch.Generator):
    """sample_fn(n) -> (1, n, Z): n i.i.d. samples of the aggregate q(z) = 1/N sum_n q(z|x_n), drawn through
    G_phi (a sentence uniformly, then z = G_phi(h, eps)): the construction any G_phi could use."""
    def sample(n: int) -> torch.Tensor:
        idx = torch.randint(h.shape[0], (n,), generator=gen)
        return posterior(h[idx], 1, gen).squeeze(1).unsqueeze(0)         # (1, n, Z)
    return sample


def gauss_term_pooled(z: torch.Tensor) -> float:
    r"""AC's closed-form term for the aggregate, from pooled samples z (M, Z):
    KL(N(mu, Sigma) || p) with the unbiased corrections of metrics.gaussian_term at M samples."""
    mu, L = metrics.fit_moments(z.unsqueeze(0))                          # (1, Z), (1, Z, Z)
    return float(metrics.gaussian_term(mu, L, z.shape[0]))


def make_critic(cfg: ProbeConfig, Z: int, width: int, layers: int):
    """A fresh nu(u) (ivae_mi.Critic without condition), initialised outside training's random stream."""
    def make():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 99)
            return ivae_mi.Critic(Z, 0, width, layers)
    return make


@torch.no_grad()
def probe_row(model, nu_z, h: torch.Tensor, cfg: ProbeConfig, gen: torch.Generator, running) -> dict:
    """Every column of the table at the current model (see the module docstring)."""
    post = model.posterior
    N = h.shape[0]
    means, w = post.gaussian(h)                                          # (N, Z), (Z, noise)
    kl_cond = metrics.affine_posterior_kl(means, w)                      # (N,) exact KL(q(z|x_n) || p)
    agg = metrics.aggregate_kl_mi(metrics.AffinePosteriors(means, w), kl_cond, samples_per_x=cfg.k, generator=gen)
    # The paper's Eq. (13) with nu(z): DualKL over the probe set, dual_samples z and as many prior z each
    z = post(h, cfg.dual_samples, gen)                                   # (N, S, Z)
    dual = metrics.DualKL()
    dual.add(nu_z(z), nu_z(torch.randn(z.shape, generator=gen)))
    # AC on the whole aggregate: k samples of every sentence pooled, N k samples
    zk = post(h, cfg.k, gen)                                             # (N, k, Z)
    gauss = gauss_term_pooled(zk.reshape(-1, zk.shape[-1]))
    # The same from one training-size batch (B sentences x k), beside the exact KL of that batch's aggregate
    g_b, ex_b = [], []
    for i in range(0, N - cfg.batch + 1, cfg.batch):
        g_b.append(gauss_term_pooled(zk[i:i + cfg.batch].reshape(-1, zk.shape[-1])))
        sub = metrics.aggregate_kl_mi(metrics.AffinePosteriors(means[i:i + cfg.batch], w),
                                      kl_cond[i:i + cfg.batch], samples_per_x=cfg.k, generator=gen)
        ex_b.append(sub["kl_agg"])
    # Running (EMA) moments of training's own z, Wishart-corrected at their effective sample count
    g_run = running.gauss_term()
    # The residual KL(q || r) by a fresh critic on pooled whitened samples vs N(0, I)
    with torch.enable_grad():
        resid, trace = metrics.residual_check(
            pooled_sampler(post, h, gen), make_critic(cfg, means.shape[1], cfg.critic_width, cfg.critic_layers),
            steps=cfg.critic_steps, n_fit=cfg.critic_fit, n_critic=cfg.critic_batch, lr=cfg.critic_lr,
            generator=gen)
    return {"kl_cond": float(kl_cond.mean()), "mi": agg["mi"], "log_n": agg["log_n"], "exact": agg["kl_agg"],
            "dual": dual.value(), "gauss": gauss, "gap": agg["kl_agg"] - gauss, "resid": float(resid),
            "total": gauss + float(resid), "g_run": g_run, "g_B": sum(g_b) / len(g_b),
            "ex_B": sum(ex_b) / len(ex_b), "trace_last": trace[-1] if trace else float("nan")}


def narrowed_row(means: torch.Tensor, w: torch.Tensor, scale: float, cfg: ProbeConfig, gen: torch.Generator) -> dict:
    r"""The aggregate of q_s(z|x_n) = N(m_n, s^2 W W^T): the trained means, posteriors narrowed by s (no
    training). As s -> 0 the N components separate: I(x; z) -> log N and the exact KL grows like Z log(1/s),
    while the Gaussian term tends to KL(N(mean m, Cov m) || p): the rest moves into the residual."""
    post = metrics.AffinePosteriors(means, scale * w)
    kl_cond = metrics.affine_posterior_kl(means, scale * w)              # (N,)
    agg = metrics.aggregate_kl_mi(post, kl_cond, samples_per_x=cfg.k, generator=gen)
    gauss = gauss_term_pooled(post.sample(cfg.k, gen).reshape(-1, means.shape[1]))

    def sample(n: int) -> torch.Tensor:                                  # (1, n, Z) i.i.d. from the aggregate
        idx = torch.randint(means.shape[0], (n,), generator=gen)
        eps = torch.randn(n, w.shape[1], dtype=torch.float64, generator=gen)
        return (post.means[idx] + eps @ post.w.T).float().unsqueeze(0)
    with torch.enable_grad():
        resid, _ = metrics.residual_check(sample, make_critic(cfg, means.shape[1], cfg.critic_width,
                                                              cfg.critic_layers),
                                          steps=cfg.critic_steps, n_fit=cfg.critic_fit, n_critic=cfg.critic_batch,
                                          lr=cfg.critic_lr, generator=gen)
    return {"s": scale, "kl_cond": float(kl_cond.mean()), "mi": agg["mi"], "exact": agg["kl_agg"], "gauss": gauss,
            "gap": agg["kl_agg"] - gauss, "resid": float(resid), "total": gauss + float(resid)}


class RunningMoments:
    """EMA of the mean and second moment of the z that train_step draws, caught by a forward hook on
    G_phi (train_step is not changed). Per step the batch's moments enter with weight 1 - decay."""

    def __init__(self, posterior, decay: float, batch: int):
        self.decay, self.batch, self.mean, self.second, self.steps = decay, batch, None, None, 0
        self.active = True
        posterior.register_forward_hook(self.hook)

    def hook(self, module, inputs, out):
        if not (self.active and module.training):
            return
        z = out.detach().reshape(-1, out.shape[-1]).double()            # (B, Z): train_step draws one z each
        m, s = z.mean(0), z.T @ z / z.shape[0]
        if self.mean is None:
            self.mean, self.second = m, s
        else:
            self.mean = self.decay * self.mean + (1 - self.decay) * m
            self.second = self.decay * self.second + (1 - self.decay) * s
        self.steps += 1

    def gauss_term(self) -> float:
        """gaussian_term of N(mean, second - mean mean^T), corrected at the EMA's effective sample count
        B (1 + d) / (1 - d) (Kish's effective size of weights (1 - d) d^t; capped by the steps seen)."""
        if self.mean is None:
            return float("nan")
        n_eff = min(self.batch * (1 + self.decay) / (1 - self.decay), self.batch * self.steps)
        cov = self.second - torch.outer(self.mean, self.mean)
        L, info = torch.linalg.cholesky_ex(cov.unsqueeze(0))
        if int(info.max()) > 0 or n_eff <= self.mean.numel() + 1:
            return float("nan")                                          # too few z yet for a full covariance
        return float(metrics.gaussian_term(self.mean.unsqueeze(0), L, int(n_eff)))


# ----------------------------------------------------------------------------------------------------
# main(): train ivae_mi's own step, probe every `every` steps, write the table
# ----------------------------------------------------------------------------------------------------

COLS = [("step", "{:>5d}"), ("beta", "{:>5.3f}"), ("kl_cond", "{:>8.2f}"), ("mi", "{:>5.2f}"),
        ("exact", "{:>7.2f}"), ("dual", "{:>6.2f}"), ("gauss", "{:>6.2f}"), ("gap", "{:>7.2f}"),
        ("resid", "{:>6.2f}"), ("total", "{:>6.2f}"), ("g_run", "{:>6.2f}"), ("g_B", "{:>6.2f}"),
        ("ex_B", "{:>7.2f}"), ("sec", "{:>5.0f}")]


def fmt(row: dict) -> str:
    return " ".join(f.format(row[k]) if k in row else " " * len(f.format(0)) for k, f in COLS)


def header() -> str:
    widths = [len(f.format(0 if "d" in f else 0.0)) for _, f in COLS]
    return " ".join(f"{k:>{wd}}" for (k, _), wd in zip(COLS, widths))


def main(argv=None) -> None:
    cfg, _ = data.parse_config(ProbeConfig, "adaptive contrast on iVAE_MI's aggregate posterior (issue 29, item 3)",
                               argv)
    t_start = time.time()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    torch.set_num_threads(1)
    mcfg = ivae_mi.Config(encoder_layers=0, precision="fp32", cpu=True, threads=1, seed=cfg.seed)
    data.set_seed(mcfg.seed)                                             # as data.Run does, before the model
    corpus = data.load_corpus("ptb", os.path.join(ROOT, "data"), ("train",))
    device = torch.device("cpu")
    model, nu_xz, nu_z, opt, nu_opt = ivae_mi.build(mcfg, len(corpus.vocab), device)
    batcher = data.Batcher(corpus.examples["train"], mcfg.batch_size, seed=mcfg.seed)
    probe = data.spread(corpus.examples["train"], cfg.sentences)
    gen = torch.Generator().manual_seed(cfg.seed + 12345)               # the probe's own stream
    running = RunningMoments(model.posterior, cfg.ema, mcfg.batch_size)

    lines = [f"# {os.path.relpath(__file__, ROOT)}: adaptive contrast on iVAE_MI's aggregate q(z) (issue 29, item 3)",
             "# command: python " + " ".join([os.path.relpath(__file__, ROOT)] + list(sys.argv[1:] if argv is None
                                                                                      else argv)),
             f"# date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"# machine: {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, fp32; load at start: {load}",
             f"# probe: {asdict(cfg)}",
             f"# model: ivae_mi.Config defaults but encoder_layers 0, precision fp32 (PTB, batch {mcfg.batch_size}, "
             f"{len(batcher)} steps/epoch); N = {len(probe)} training sentences (data.spread)",
             "# columns: kl_cond = E_x KL(q(z|x)||p) exact; mi = I(x;z) exact over N (<= log N = "
             f"{math.log(len(probe)):.2f}); exact = KL(q_N(z)||p) = kl_cond - mi;",
             "#   dual = paper's nu(z); gauss = AC Gaussian term, N x k pooled samples; gap = exact - gauss (the true"
             " residual);",
             f"#   resid = fresh {cfg.critic_layers} x {cfg.critic_width} critic, {cfg.critic_steps} updates, "
             "on pooled "
             "whitened samples; total = gauss + resid;",
             f"#   g_run = gauss of EMA moments of training's z (decay {cfg.ema}); "
             "g_B / ex_B = gauss from one batch of "
             f"{cfg.batch} x {cfg.k} samples / exact KL of that {cfg.batch}-sentence aggregate, mean over "
             f"{len(probe) // cfg.batch} batches;",
             "#   sec = seconds since start"]
    print("\n".join(lines), flush=True)
    table = [header()]
    print(table[0], flush=True)

    def do_probe(step: int, beta: float) -> dict:
        running.active = False
        with torch.random.fork_rng(devices=[]):
            row = probe_row(model, nu_z, encode(model, probe, cfg.batch), cfg, gen, running)
        running.active = True
        row.update(step=step, beta=beta, sec=time.time() - t_start)
        table.append(fmt(row))
        print(table[-1], flush=True)
        return row

    rows = [do_probe(0, ivae_mi.beta_at(0, len(batcher), mcfg))]
    step, epoch = 0, 0
    while step < cfg.steps:
        for batch in batcher.epoch(epoch):
            beta = ivae_mi.beta_at(step, len(batcher), mcfg)
            out = ivae_mi.train_step(model, nu_xz, nu_z, opt, nu_opt, batch.tokens, batch.lengths, beta, mcfg)
            step += 1
            if not all(math.isfinite(float(v)) for v in out.values()):
                raise FloatingPointError(f"step {step}: {out}")
            if step % cfg.every == 0 or step == cfg.steps:
                rows.append(do_probe(step, beta))
            if step >= cfg.steps:
                break
        epoch += 1

    extra = []

    def say(line: str) -> None:
        extra.append(line)
        print(line, flush=True)

    if cfg.final_steps:                          # the last model: a stronger critic, and the Gaussian control
        running.active = False
        with torch.random.fork_rng(devices=[]):
            h = encode(model, probe, cfg.batch)
            post = model.posterior
            Z = mcfg.latent
            strong, _ = metrics.residual_check(
                pooled_sampler(post, h, gen), make_critic(cfg, Z, mcfg.nu_width, mcfg.nu_layers),
                steps=cfg.final_steps, n_fit=cfg.critic_fit, n_critic=cfg.critic_batch, lr=cfg.critic_lr,
                generator=gen)
            with torch.no_grad():
                zk = post(h, cfg.k, gen).reshape(-1, Z).double()         # the aggregate's own moments
            mu, L = metrics.fit_moments(zk.unsqueeze(0))
            gaussian = torch.distributions.MultivariateNormal(mu[0], scale_tril=L[0])

            def control(n: int) -> torch.Tensor:   # a Gaussian q of the aggregate's mean and covariance
                return gaussian.sample((n,)).float().unsqueeze(0)        # (1, n, Z)
            torch.manual_seed(cfg.seed + 7)                              # control's draws (fork_rng: no leak)
            ctrl, _ = metrics.residual_check(
                control, make_critic(cfg, Z, cfg.critic_width, cfg.critic_layers), steps=cfg.critic_steps,
                n_fit=cfg.critic_fit, n_critic=cfg.critic_batch, lr=cfg.critic_lr, generator=gen)
        last = rows[-1]
        say(f"# step {last['step']}: stronger fresh critic ({mcfg.nu_layers} x {mcfg.nu_width}, {cfg.final_steps} "
            f"updates) resid {float(strong):.3f} -> total {last['gauss'] + float(strong):.2f} "
            f"vs exact {last['exact']:.2f} (true residual {last['gap']:.2f})")
        say(f"# control: the {cfg.critic_layers} x {cfg.critic_width} critic ({cfg.critic_steps} updates) on a "
            f"Gaussian q of the same moments reads {float(ctrl):.3f} (truth 0)")
    if cfg.narrow:
        keys = ("s", "kl_cond", "mi", "exact", "gauss", "gap", "resid", "total")
        say(f"# the step-{rows[-1]['step']} model's posteriors narrowed, q(z|x_n) = N(m_n, s^2 W W^T), means kept, "
            f"no training; resid: the same {cfg.critic_layers} x {cfg.critic_width} fresh critic")
        say(" ".join(f"{k:>7}" for k in keys))
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            means, w = model.posterior.gaussian(encode(model, probe, cfg.batch))
            for scale in cfg.narrow:
                r = narrowed_row(means.double(), w.double(), float(scale), cfg, gen)
                say(" ".join(f"{r[k]:>7.2f}" for k in keys))
    wall = time.time() - t_start
    say(f"# wall time {wall:.0f} s ({wall / 60:.1f} min); load at end: "
        f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    with open(cfg.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines + table + extra) + "\n")


if __name__ == "__main__":
    main()

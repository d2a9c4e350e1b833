r"""Figure 1 of Fang et al. (EMNLP 2019): Gaussian vs implicit posteriors on four one-hot data points.

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. The authors' version is their toy_onehot folder.

The data are the four one-hot vectors of R^4, the latent space is 2-D, the prior is N(0, I), and the
decoder is a small MLP giving four independent Bernoulli probabilities (as the authors, and AVB's toy:
with four Bernoullis a decoder that ignores z scores at best -log p(x) = 2.249, not log 4 = 1.386, so z
must tell the points apart). Three models are trained on the same data:
    vae      q(z|x) = N(mu(x), diag sigma^2(x)), analytic KL              (§2, Eq. 3)
    ivae     z = G(x, eps), KL(q(z|x) || p) by its dual with nu(x, z)     (§3.1, Eq. 6-10)
    ivae_mi  z = G(x, eps), KL(q(z) || p) of the aggregated posterior, nu(z)   (§3.2, Eq. 11-14)
For each model the figure shows the posterior samples of each point in its own colour over the prior's
contours, and next to it the aggregated posterior q(z) = 1/4 sum_x q(z|x). What to look for: a Gaussian
posterior can only be an ellipse, so the four ellipses either overlap (and the decoder cannot tell the
points apart) or leave parts of the prior's mass uncovered; implicit posteriors can take any shape and
tile the latent space, so that their union looks like the prior.

Besides the pictures, each model's -log p(x) is computed exactly by integrating p(x|z) p(z) on a grid
(possible in 2-D), next to the model's -ELBO (with its own KL: exact for vae, the critic's estimate for
ivae): the gap is what the ELBO loses, or, for a critic that underestimates the KL, what it hides.

Run
    python toy.py                          # all three models, a few thousand steps each, < 1 min on a CPU
    python toy.py --max_steps 200 --models vae ivae      # quicker

Writes to --out_dir: toy_vae.png, toy_ivae.png, toy_ivae_mi.png, toy_all.png, metrics.json.
No --data (the data are fixed), no --resume/--eval_only (a run takes seconds).

Deviations from the authors' toy (and why)
    * Adam at lr 1e-3 for a few thousand steps instead of lr 1e-5 for 80,000, so the figure takes seconds.
    * iVAE_MI's objective, rec + KL(q(z) || p), is not an ELBO; we print it as "objective" and give every
      model's exact -log p(x) beside it.
"""
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import option

MODELS = ("vae", "ivae", "ivae_mi")
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


@dataclass
class Config:
    out_dir: str = option("runs/toy", "where the PNGs and metrics.json go")
    seed: int = option(0, "seed of every random generator")
    cuda: bool = option(False, "insist on a CUDA GPU (an error if there is none)")
    cpu: bool = option(False, "run on the CPU even if a GPU is present")
    threads: int = option(0, "CPU threads torch may use (0: all cores; 1 when other work shares the machine)")
    max_steps: int = option(3000, "training steps per model")
    models: tuple = option(MODELS, f"which models to train, among {', '.join(MODELS)}", nargs="+")
    samples_per_point: int = option(64, "posterior samples per data point in a training batch")
    hidden: int = option(64, "width of every MLP")
    noise_dim: int = option(4, "dimensions of the noise eps fed to G(x, eps)")
    lr: float = option(1e-3, "Adam learning rate of encoder and decoder")
    nu_lr: float = option(1e-3, "Adam learning rate of the critic")
    nu_steps: int = option(5, "critic updates per step (as the paper)")
    plot_samples: int = option(500, "posterior samples per point in the figure")


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(),
                         nn.Linear(hidden, out))


# ----------------------------------------------------------------------------------------------------
# PAPER §2-§3: the three models (one class, a flag for the posterior and the critic's input)
# ----------------------------------------------------------------------------------------------------

class ToyModel(nn.Module):
    """Encoder (Gaussian or implicit), categorical decoder p(x|z), and for the implicit models a critic
    nu(x, z) (ivae) or nu(z) (ivae_mi)."""

    def __init__(self, kind: str, hidden: int, noise_dim: int):
        super().__init__()
        self.kind, self.noise_dim = kind, noise_dim
        if kind == "vae":
            self.encoder = mlp(4, hidden, 2 * 2)                         # x -> (mu, logvar)
        else:
            self.encoder = mlp(4 + noise_dim, hidden, 2)                 # Eq. (6): z = G(x, eps)
            self.nu = mlp(2 + (4 if kind == "ivae" else 0), hidden, 1)   # nu(x, z) or nu(z)
        self.decoder = mlp(2, hidden, 4)                                 # z -> 4 Bernoulli logits

    def posterior(self, x: torch.Tensor):
        """Samples z (N, 2), one per row of x (N, 4); for the VAE also (mu, logvar)."""
        if self.kind == "vae":
            mu, logvar = self.encoder(x).chunk(2, -1)
            return mu + (0.5 * logvar).exp() * torch.randn_like(mu), (mu, logvar)
        eps = torch.randn(x.shape[0], self.noise_dim, device=x.device)
        return self.encoder(torch.cat([x, eps], -1)), None

    def critic(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.nu(torch.cat([z, x], -1) if self.kind == "ivae" else z).squeeze(-1)


def rec_loss(model: ToyModel, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per row: four independent Bernoullis, summed over the dimensions."""
    return F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(-1)


def train(model: ToyModel, cfg: Config, device) -> None:
    """-ELBO with the model's KL: analytic (vae), Eq. (10) (ivae) or Eq. (14) (ivae_mi)."""
    x = torch.eye(4, device=device).repeat_interleave(cfg.samples_per_point, 0)   # (4 * S, 4)
    params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    nu_opt = torch.optim.Adam(model.nu.parameters(), lr=cfg.nu_lr) if model.kind != "vae" else None
    for _ in range(cfg.max_steps):
        z, gauss = model.posterior(x)
        if nu_opt is not None:                                           # Eq. (9) / (13)
            for _ in range(cfg.nu_steps):
                kl = metrics.dual_kl(model.critic(x, z.detach()), model.critic(x, torch.randn_like(z)))
                nu_opt.zero_grad(set_to_none=True)
                (-kl).backward()
                nu_opt.step()
            kl_term = model.critic(x, z).mean()                          # E_p exp(nu) dropped: no phi in it
        else:
            kl_term = metrics.gaussian_kl(*gauss).mean()
        loss = rec_loss(model, x, z).mean() + kl_term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ----------------------------------------------------------------------------------------------------
# Evaluation: exact -log p(x) on a grid, the ELBO with the model's KL, and the figure
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: ToyModel, cfg: Config, device) -> dict:
    # -log p(x) = -log int p(x|z) p(z) dz by the midpoint rule on [-6, 6]^2 (the prior's mass outside is < 1e-7).
    n, lim = 400, 6.0
    step = 2 * lim / n
    g = torch.linspace(-lim + step / 2, lim - step / 2, n, device=device)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)      # (n^2, 2)
    log_prior = -0.5 * grid.pow(2).sum(-1) - math.log(2 * math.pi)
    logits = model.decoder(grid)                                                    # (n^2, 4)
    x = torch.eye(4, device=device)
    log_px_z = -F.binary_cross_entropy_with_logits(logits.unsqueeze(1).expand(-1, 4, 4), x.expand(len(grid), 4, 4),
                                                   reduction="none").sum(-1)        # (n^2, 4): point j
    nll = -(torch.logsumexp(log_px_z + log_prior.unsqueeze(1), 0) + 2 * math.log(step))   # (4,)
    x = torch.eye(4, device=device).repeat_interleave(2000, 0)
    z, gauss = model.posterior(x)
    rec = rec_loss(model, x, z).mean()
    if model.kind == "vae":
        kl = metrics.gaussian_kl(*gauss).mean()                          # exact KL(q(z|x) || p)
    else:                                                                # the critic's estimate
        kl = metrics.dual_kl(model.critic(x, z), model.critic(x, torch.randn_like(z)))
    return {"nll_exact": float(nll.mean()), "rec": float(rec), "kl": float(kl), "objective": float(rec + kl)}


@torch.no_grad()
def draw(models: dict, cfg: Config, device, path_for) -> None:
    """One PNG per model (posterior samples per point | aggregated posterior) and all of them together."""
    plt = metrics._pyplot()
    g = torch.linspace(-3.5, 3.5, 200)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    prior = torch.exp(-0.5 * (gx ** 2 + gy ** 2))

    def panels(ax_points, ax_agg, name, model):
        x = torch.eye(4, device=device).repeat_interleave(cfg.plot_samples, 0)
        z = model.posterior(x)[0].cpu()
        ax_points.contour(gx, gy, prior, levels=6, colors="lightgray", linewidths=0.8)
        for i in range(4):
            zi = z[i * cfg.plot_samples:(i + 1) * cfg.plot_samples]
            ax_points.scatter(zi[:, 0], zi[:, 1], s=3, c=COLOURS[i], label=f"x = e{i + 1}")
        ax_points.set_title(f"{name}: q(z|x) per point")
        ax_agg.hist2d(z[:, 0].numpy(), z[:, 1].numpy(), bins=60, range=[[-3.5, 3.5], [-3.5, 3.5]], cmap="Greys")
        ax_agg.contour(gx, gy, prior, levels=6, colors="tab:red", linewidths=0.6)
        ax_agg.set_title(f"{name}: aggregated q(z)")
        for ax in (ax_points, ax_agg):
            ax.set_xlim(-3.5, 3.5)
            ax.set_ylim(-3.5, 3.5)
            ax.set_aspect("equal")
        ax_points.legend(fontsize=6, loc="upper right", markerscale=3)

    for name, model in models.items():
        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        panels(axes[0], axes[1], name, model)
        fig.tight_layout()
        fig.savefig(path_for(name), dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(2, len(models), figsize=(4 * len(models), 8), squeeze=False)
    for j, (name, model) in enumerate(models.items()):
        panels(axes[0, j], axes[1, j], name, model)
    fig.tight_layout()
    fig.savefig(path_for("all"), dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "Figure 1: Gaussian vs implicit posteriors on a toy", argv)
    bad = [m for m in cfg.models if m not in MODELS]
    if bad or not cfg.models:
        parser.error(f"--models takes some of {', '.join(MODELS)}, got {' '.join(cfg.models) or 'none'}")
    for name in ("max_steps", "samples_per_point", "hidden", "noise_dim", "plot_samples"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name} must be >= 1")
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    print(f"device: {data.describe_device(device)}")
    data.check_writable_dir(cfg.out_dir, parser)                         # a file or read-only: one message
    models, results = {}, {}
    for name in cfg.models:
        data.set_seed(cfg.seed)
        model = ToyModel(name, cfg.hidden, cfg.noise_dim).to(device)
        train(model, cfg, device)
        models[name] = model.eval()
        results[name] = evaluate(model, cfg, device)
        r = results[name]
        what = {"vae": "-ELBO = rec + exact KL(q(z|x)||p)", "ivae": "-ELBO = rec + nu(x,z)'s KL(q(z|x)||p)",
                "ivae_mi": "objective = rec + nu(z)'s KL(q(z)||p)"}[name]
        print(f"{name:>8}: exact -log p(x) {r['nll_exact']:.3f} (best possible log 4 = {math.log(4):.3f}) | "
              f"{what} = {r['rec']:.3f} + {r['kl']:.3f} = {r['objective']:.3f}", flush=True)
    draw(models, cfg, device, lambda name: os.path.join(cfg.out_dir, f"toy_{name}.png"))
    data.write_json(os.path.join(cfg.out_dir, "metrics.json"), results)
    print(f"wrote {cfg.out_dir}/: " + " ".join(f"toy_{n}.png" for n in list(models) + ["all"]) + " metrics.json")
    return results


if __name__ == "__main__":
    data.run_script(main)

r"""iVAE: a text VAE with an implicit posterior and a dual-form KL (Fang et al., EMNLP 2019, §3.1).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Authors' code: github.com/fangleai/Implicit-LVM (torch 0.4.1).

The posterior q(z|x) is a sampler, z = G_phi(h_x, eps), with no density. The KL term of the ELBO is
estimated through its Fenchel dual with an auxiliary network nu(x, z), trained alongside the model.

Paper section -> code section
    §3.1 Eq. (6)   z = G_phi(x, eps), eps ~ N(0, I)                    -> ImplicitPosterior, IVAE.forward
         Eq. (7)   KL(q(z|x) || p) = max_nu E_q nu - E_p exp(nu) + 1    -> Critic, model_loss
         Eq. (8)   L_iVAE = E log p(x|z) - E_q nu + E_p exp(nu)        -> model_loss
         Eq. (9)   the critic's ascent step                           -> critic_step
         Eq. (10)  the model's step on -E log p(x|z) + E_q nu(x, z)    -> train_step
    §5.1           KL annealing, 40 epochs; MI, AU, PPL                -> beta_at, Config, evaluate
    Table 4        interpolation between two sentences                -> metrics.interpolation
    Table 5        forward / reverse PPL of prior samples (--fwd_rev_ppl) -> metrics.prior_forward_reverse
    (not in the paper) --kl_estimator ac: a KL that is right, by adaptive contrast -> ac_train_step

Run
    python ivae.py --data ptb                      # GPU if present, else CPU; 40 epochs
    python ivae.py --data ptb --encoder_layers 0   # the authors' affine G_phi: q(z|x) Gaussian, KL exact
    python ivae.py --data ptb --encoder_layers 0 --kl_estimator ac   # the KL by adaptive contrast, not the dual
    python ivae.py --data ptb --kl_estimator ac --ac_samples 256 --ac_critic_samples 32 --ac_nu_lr 3e-4  # MLP
    python ivae.py --data ptb --max_steps 300 --eval_limit 300 --cpu        # a quick CPU smoke run
    python ivae.py --out_dir runs/ivae --eval_only --skip_test --interpolate "the company said" "i do n't know"

Shapes: B sentences, T tokens (<s> ... </s>), V vocabulary, H LSTM hidden, Z latent, S posterior samples
per sentence. Minimised: -ELBO = rec + beta * KL, rec the token NLL summed over a sentence, KL summed
over latent dimensions, both averaged over sentences. PPL counts the words and </s> of each sentence.

What the numbers are (docs/honest_evaluation.md): `kl`, `kl_agg`, `mi`, `nelbo`, `ppl` are the paper's,
from the critics: estimates, NOT bounds. `kl_lower` <= E_x KL(q(z|x) || p) in expectation, `iw_nll` >=
-log p(x), MI on N sentences <= `log_n`; with `--encoder_layers 0`, `kl_exact`, `mi_exact`, ... are exact.

Deviations from the paper / the authors' code (and why)
    * Eq. (7) with the "+1" the paper's print omits: without it the dual is KL - 1, not KL.
    * G_phi: an MLP (2 hidden layers) as the paper draws it; the authors' code: one Linear (--encoder_layers 0).
    * Selection on the validation IW-NLL (a bound: it cannot reward a critic's underestimate); test once, not per epoch.
    * Both scripts train both critics (same samples, one Adam): nu(x, z) for iVAE's KL, nu(z) for iVAE_MI's and MI.
    * bf16 autocast where the hardware has it (authors: fp32); on a GPU a CUDA graph (results/bench/).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import option


# ----------------------------------------------------------------------------------------------------
# PAPER §3, §5.1: the knobs (authors' PTB values; Yahoo/Yelp: data.LM_DEFAULTS) + data.LMConfig's flags
# ----------------------------------------------------------------------------------------------------

@dataclass
class Config(data.LMConfig):
    # model (§5.1)
    emb_dim: int = option(256, "word embedding size (authors: 256 PTB, 512 Yahoo/Yelp)", low=1)
    hidden: int = option(256, "LSTM hidden size of encoder and decoder (authors: 256 PTB, 1024 Yahoo/Yelp)", low=1)
    latent: int = option(32, "latent dimensions Z", low=1)
    noise_dim: int = option(32, "dimensions of the noise eps fed to G_phi (Eq. 6)", low=1)
    encoder_layers: int = option(2, "hidden layers of the MLP G_phi(h, eps); 0 = the authors' affine map", low=0)
    encoder_width: int = option(256, "width of G_phi's hidden layers", low=1)
    nu_width: int = option(512, "width of the critics' hidden layers (authors: 512)", low=1)
    nu_layers: int = option(3, "hidden layers of the critics (authors: 3)", low=0)
    dropout: float = option(0.5, "dropout on decoder input embeddings and before its output layer")
    init_range: float = option(0.1, "uniform init range of the weights (authors: 0.1 PTB, 0.01 Yahoo/Yelp)", low=0)
    # training (§5.1 and the authors' code)
    batch_size: int = option(32, "sentences per batch (equal-length batches)", low=1)
    lr: float = option(1e-3, "Adam learning rate of encoder/decoder (authors: 1e-3 PTB, 8e-4 Yahoo/Yelp)", low=0)
    clip: float = option(5.0, "gradient-norm clip of the encoder/decoder update", low=0)
    nu_lr: float = option(1e-5, "Adam learning rate of the critics nu(x, z) and nu(z)", low=0)
    nu_steps: int = option(5, "critic updates per training step (Eq. 9), fresh prior samples each", low=1)
    beta_start: float = option(0.1, "KL weight at step 0; rises linearly to 1")
    warmup_epochs: float = option(10.0, "epochs over which beta rises to 1 (0: beta = 1 throughout)", low=0)
    fit_samples: int = option(512, "samples per sentence fitting the kl_lower and IW Gaussians", low=1, run=True)
    out_dir: str = option("runs/ivae", "where config.json, log.csv, metrics.json, checkpoints, plots go", run=True)
    # beyond the paper: a KL that is right, by adaptive contrast (ac_train_step)
    kl_estimator: str = option("dual", "the KL in training: the paper's critic nu(x, z) (dual), or adaptive "
                               "contrast (ac): q's own Gaussian fit + a critic on the residual", choices=["dual", "ac"])
    ac_samples: int = option(64, "ac: samples of G_phi per sentence that fit q's mean and covariance", low=2)
    ac_critic_samples: int = option(4, "ac: whitened samples per sentence the residual critic sees", low=1)
    ac_nu_lr: float = option(0.0, "ac: Adam learning rate of the residual critic nu(x, u) (0: --nu_lr)", low=0)
    resid_check_every: int = option(5, "ac: a fresh critic checks the residual every N epochs and at test (0: never)",
                                    low=0, run=True)
    resid_check_sentences: int = option(8, "ac: sentences of the fresh-critic check", low=1, run=True)
    resid_check_steps: int = option(1500, "ac: updates of the fresh critic", low=1, run=True)


# ----------------------------------------------------------------------------------------------------
# PAPER §3.1: the model (iVAE_MI's too). Encoder LSTM -> h; G_phi(h, eps) -> z; decoder LSTM p(x|z); critics nu.
# ----------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """LSTM over the sentence; its last state h summarises x (the authors' and Kim et al.'s encoder)."""

    def __init__(self, vocab_size: int, emb_dim: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb_dim)
        self.rnn = nn.LSTM(emb_dim, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))                                   # (B, T, H)
        return out[torch.arange(x.shape[0], device=x.device), lengths - 1]   # (B, H): state at </s>


class ImplicitPosterior(nn.Module):
    """Eq. (6): z = G_phi(h, eps), eps ~ N(0, I). An MLP on cat(h, eps) (encoder_layers >= 1), or one
    Linear (encoder_layers = 0, the authors' code): then z = A h + c + W eps is Gaussian."""

    def __init__(self, hidden: int, noise_dim: int, latent: int, layers: int, width: int):
        super().__init__()
        dims = [hidden + noise_dim] + [width] * layers + [latent]
        mods = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                mods.append(nn.LeakyReLU())
        self.net = nn.Sequential(*mods)
        self.noise_dim = noise_dim

    def forward(self, h: torch.Tensor, n_samples: int, generator=None) -> torch.Tensor:
        B, H = h.shape
        eps = torch.randn(B, n_samples, self.noise_dim, device=h.device, generator=generator)  # (B, S, noise)
        return self.net(torch.cat([h.unsqueeze(1).expand(B, n_samples, H), eps], -1))         # (B, S, Z)

    def gaussian(self, h: torch.Tensor):
        """Only for the affine map: q(z|x) = N(G(h, 0), W W^T) exactly, as (mean (B, Z), W (Z, noise)).
        W itself, not the covariance: the exact KL is computed from it in float64."""
        w = self.net[0].weight[:, -self.noise_dim:]                      # (Z, noise)
        mean = self.net(torch.cat([h, h.new_zeros(h.shape[0], self.noise_dim)], -1))   # (B, Z)
        return mean, w


class Decoder(nn.Module):
    r"""LSTM language model conditioned on z: z -> Linear -> initial hidden state, and z concatenated to
    the input embedding at every step (the authors' decoder, from Kim et al. 2018).

        input   <s>  w1   w2   w3          (x[:, :-1], embedded, dropout, cat z)
        target  w1   w2   w3   </s>        (x[:, 1:])
    """

    def __init__(self, vocab_size: int, emb_dim: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb_dim)
        self.drop = nn.Dropout(dropout)
        self.z_to_h = nn.Linear(latent, hidden)
        self.rnn = nn.LSTM(emb_dim + latent, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x_in: torch.Tensor, z: torch.Tensor, state=None):
        N, T = x_in.shape
        e = self.drop(self.emb(x_in))                                    # (N, T, E)
        inp = torch.cat([e, z.unsqueeze(1).expand(N, T, z.shape[-1])], -1)   # (N, T, E + Z)
        if state is None:
            h0 = self.z_to_h(z).unsqueeze(0)                             # (1, N, H)
            state = (h0, torch.zeros_like(h0))
        out, state = self.rnn(inp, state)
        return self.out(self.drop(out)), state                           # (N, T, V)


class Critic(nn.Module):
    """nu(x, z) (cond_dim = H, fed h_x) or nu(z) (cond_dim = 0): an MLP with LeakyReLU, scalar output."""

    def __init__(self, latent: int, cond_dim: int, width: int, layers: int):
        super().__init__()
        dims = [latent + cond_dim] + [width] * layers
        mods = []
        for i in range(layers):
            mods += [nn.Linear(dims[i], dims[i + 1]), nn.LeakyReLU()]
        self.net = nn.Sequential(*mods, nn.Linear(dims[-1], 1))

    def forward(self, z: torch.Tensor, h=None) -> torch.Tensor:
        inp = z if h is None else torch.cat([z, h.expand(*z.shape[:-1], h.shape[-1])], -1)
        return self.net(inp).squeeze(-1)                                 # (...)


class IVAE(nn.Module):
    """Encoder -> G_phi -> decoder. forward() draws z ~ q(z|x); nll() scores x under the decoder. They are
    two calls because a training step updates the critics between them (train_step)."""

    def __init__(self, cfg: Config, vocab_size: int):
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg.emb_dim, cfg.hidden)
        self.posterior = ImplicitPosterior(cfg.hidden, cfg.noise_dim, cfg.latent, cfg.encoder_layers,
                                           cfg.encoder_width)
        self.decoder = Decoder(vocab_size, cfg.emb_dim, cfg.hidden, cfg.latent, cfg.dropout)
        self.autocast = contextlib.nullcontext                           # build() sets --precision's

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, n_samples: int = 1, generator=None):
        """(h (B, H), z (B, S, Z)): the encoder's summary of x and S samples of q(z|x) (Eq. 6). G_phi
        runs in fp32 (its affine form's exact KL is computed from its weights)."""
        with self.autocast():
            h = self.encoder(x, lengths).float()                         # (B, H)
        return h, self.posterior(h, n_samples, generator)                # (B, S, Z)

    def nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) of each sentence: token NLLs summed over the sentence (padding ignored), in fp32.
        x (N, T), z (N, Z) -> (N,)."""
        with self.autocast():
            logits, _ = self.decoder(x[:, :-1], z)                       # (N, T-1, V)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              ignore_index=data.PAD_ID, reduction="none")
        return nll.view(x.shape[0], -1).sum(1)                           # (N,)


def build(cfg: Config, vocab_size: int, device):
    """The model (initialised uniform(+-init_range) as the authors do), the two critics (torch's default
    init) and their optimisers: Adam for encoder, G_phi and decoder (lr), one Adam for both critics
    (nu_lr; their parameters are disjoint, so one step is two independent updates)."""
    model = IVAE(cfg, vocab_size)
    nu_xz = Critic(cfg.latent, cfg.hidden, cfg.nu_width, cfg.nu_layers).to(device)
    nu_z = Critic(cfg.latent, 0, cfg.nu_width, cfg.nu_layers).to(device)
    for p in model.parameters():
        nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
    model.to(device)                                                     # initialised on the CPU, as before
    # PLUMBING (speed): fused Adam; capturable keeps its state on the GPU for the CUDA graph.
    graph = device.type == "cuda" and cfg.cuda_graph == "step"
    model.autocast = data.autocast_for(device, cfg.precision, cache=not graph)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True, capturable=graph)
    critics = list(nu_xz.parameters()) + list(nu_z.parameters())
    if cfg.kl_estimator == "ac" and cfg.ac_nu_lr:                       # the residual critic at its own rate
        critics = [{"params": list(nu_xz.parameters()), "lr": cfg.ac_nu_lr}, {"params": list(nu_z.parameters())}]
    nu_opt = torch.optim.Adam(critics, lr=cfg.nu_lr, fused=True, capturable=graph)
    return model, nu_xz, nu_z, opt, nu_opt


# ----------------------------------------------------------------------------------------------------
# PAPER §3.1: the objective, Eq. (7) - (10)
# ----------------------------------------------------------------------------------------------------

def model_loss(model: IVAE, nu_xz: Critic, x: torch.Tensor, h: torch.Tensor, z: torch.Tensor, beta: float):
    """-ELBO with the critic's KL, minimised over encoder, G_phi and decoder, and its rec term.
    x (B, T), h (B, H), z (B, Z): one posterior sample per sentence."""
    rec = model.nll(x, z).mean()                                         # sum over tokens, mean over B
    # Eq. (7): KL(q(z|x) || p) = max_nu E_q nu(x, z) - E_p exp nu(x, z') + 1 (the critic stands in for the
    # max). Only E_q nu depends on the model: z' ~ p does not, and h enters nu DETACHED. If gradients
    # flowed into h through nu, E_p exp nu(x, z') would depend on phi and dropping it would bias the
    # gradient: phi must reach the KL only through the samples z = G_phi(h, eps).
    kl_term = nu_xz(z, h.detach()).mean()                                # mean over B
    # Eq. (8): L_iVAE = E log p(x|z) - E_q nu(x, z) + E_p exp nu(x, z'); minimise -L (beta: §5.1 annealing)
    return rec + beta * kl_term, rec


def critic_step(nu_xz: Critic, nu_z: Critic, nu_opt, h: torch.Tensor, z: torch.Tensor, z_prior: torch.Tensor,
                autocast=contextlib.nullcontext):
    r"""One ascent step of both critics on the same posterior samples z and fresh prior samples z_prior.
    h, z, z_prior: (B, H), (B, Z), (B, Z), constants here. Returns the two estimates (before the step)."""
    B = z.shape[0]
    # PLUMBING (speed): posterior and prior samples go through each critic in ONE pass of 2B rows, with
    # bf16 products where --precision says so; nu leaves it in fp32 before exp(nu).
    zz, hh = torch.cat([z, z_prior]), torch.cat([h, h])                  # (2B, Z), (2B, H)
    with autocast():
        nu_xz_out, nu_z_out = nu_xz(zz, hh).float(), nu_z(zz).float()    # (2B,), (2B,)
    kl_cond = metrics.dual_kl(nu_xz_out[:B], nu_xz_out[B:])              # the dual of KL(q(z|x) || p): iVAE's
    kl_agg = metrics.dual_kl(nu_z_out[:B], nu_z_out[B:])                 # the dual of KL(q(z) || p): iVAE_MI's
    # Eq. (9), and the max of Eq. (13) for nu(z): update psi to maximise sum_i nu(x_i, z_i) - sum_i exp nu(x_i, z'_i)
    # and sum_i nu(z_i) - sum_i exp nu(z'_i): both critics, as each script reports both KLs.
    nu_opt.zero_grad(set_to_none=True)
    (-(kl_cond + kl_agg)).backward()
    nu_opt.step()
    return kl_cond.detach(), kl_agg.detach()


def train_step(model: IVAE, nu_xz: Critic, nu_z: Critic, opt, nu_opt, x: torch.Tensor, lengths: torch.Tensor,
               beta: float, cfg: Config) -> dict:
    """The training scheme of §3.1 (with nu(z): Appendix B): sample z, update the critics, update the model.
    x (B, T) a batch of equal-length sentences."""
    h, z = model(x, lengths)                                             # (B, H), (B, 1, Z)
    z = z.squeeze(1)                                                     # (B, Z): one sample per sentence
    # The critics chase the current posterior; h and z are constants for them. nu(x, z) is iVAE's critic,
    # nu(z) iVAE_MI's; each script trains both, the other one only to report its KL and the MI (§5.1).
    z_prior = torch.randn(cfg.nu_steps, *z.shape, device=z.device)       # fresh p(z) samples, one draw
    for z_p in z_prior:
        kl_cond, kl_agg = critic_step(nu_xz, nu_z, nu_opt, h.detach(), z.detach(), z_p, model.autocast)
    # Eq. (10): update {phi, theta} to maximise sum_i log p(x_i|z_i) - sum_i nu(x_i, z_i)
    loss, rec = model_loss(model, nu_xz, x, h, z, beta)
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=list(model.parameters()))                       # the critics learn from their own step only
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return {"loss": loss.detach(), "rec": rec.detach(), "KL": kl_cond, "KLq": kl_agg, "|g|": grad_norm.detach()}


# ----------------------------------------------------------------------------------------------------
# BEYOND THE PAPER: a KL that is right, by adaptive contrast (Mescheder, Nowozin, Geiger 2017, AVB §3.3).
# For any density r, KL(q(z|x) || p) = E_q[log r(z|x) - log p(z)] + KL(q(z|x) || r(z|x)). With r the
# Gaussian of q's own mean and covariance, fitted on S samples of G_phi, the first term is in closed form
# and the second is small when q is near Gaussian: a critic nu(x, u) on whitened samples u = L^-1 (z - mu)
# against N(0, I) estimates it. The paper's dual critic reports a few % of the KL (docs/honest_evaluation.md).
# ----------------------------------------------------------------------------------------------------

def ac_train_step(model: IVAE, nu_xz: Critic, nu_z: Critic, opt, nu_opt, x: torch.Tensor, lengths: torch.Tensor,
                  beta: float, cfg: Config) -> dict:
    """train_step with the KL by adaptive contrast; nu_xz learns the residual on whitened samples."""
    h, z_all = model(x, lengths, cfg.ac_samples)                         # (B, H), (B, S, Z)
    mu, L = metrics.fit_moments(z_all)                                   # (B, Z), (B, Z, Z): float64, differentiable
    kl_gauss = metrics.gaussian_term(mu, L, cfg.ac_samples)              # (B,): KL(N(mu, Sigma) || p)
    u = metrics.whiten(z_all[:, :cfg.ac_critic_samples], mu, L).float()  # (B, n, Z): the fit's own samples
    z, hu = z_all[:, 0], h.detach().unsqueeze(1)                         # (B, Z) for the decoder; (B, 1, H)
    for _ in range(cfg.nu_steps):            # the critics chase the current posterior: u, z constants here
        u_p, z_p = torch.randn_like(u), torch.randn_like(z)              # fresh N(0, I) samples
        with model.autocast():
            nu_q, nu_p, nu_agg = nu_xz(u.detach(), hu).float(), nu_xz(u_p, hu).float(), \
                nu_z(torch.cat([z.detach(), z_p])).float()               # (B, n), (B, n), (2B,)
        kl_resid = metrics.dual_kl(nu_q, nu_p).mean()                    # KL(q(z|x) || N(mu, Sigma)), mean over B
        kl_agg = metrics.dual_kl(nu_agg[:len(z)], nu_agg[len(z):])       # KL(q(z) || p): reported only
        nu_opt.zero_grad(set_to_none=True)
        (-(kl_resid + kl_agg)).backward()
        nu_opt.step()
    rec = model.nll(x, z).mean()                                         # sum over tokens, mean over B
    # KL = Gaussian term + residual; of the residual's dual only E_q nu(x, u) depends on the model (through
    # z, mu and L alike). Both terms average over B.
    loss = rec + beta * (kl_gauss + nu_xz(u, hu).mean(-1)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=list(model.parameters()))
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return {"loss": loss.detach(), "rec": rec.detach(), "KL": kl_gauss.mean().detach() + kl_resid.detach(),
            "KLg": kl_gauss.mean().detach(), "res": kl_resid.detach(), "KLq": kl_agg.detach(),
            "|g|": grad_norm.detach()}


def beta_at(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """KL annealing (§5.1): beta rises linearly per batch from beta_start to 1 over warmup_epochs."""
    if cfg.warmup_epochs <= 0:
        return 1.0
    return min(1.0, cfg.beta_start + (1.0 - cfg.beta_start) * step / (cfg.warmup_epochs * steps_per_epoch))


# ----------------------------------------------------------------------------------------------------
# PAPER §5.1: the training loop (40 epochs, annealing, selection on the validation IW-NLL)
# ----------------------------------------------------------------------------------------------------

def train(cfg: Config, corpus: data.Corpus, model, nu_xz, nu_z, opt, nu_opt, run: data.Run) -> None:
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed)
    valid = data.spread(data.first(corpus.examples["valid"], cfg.eval_limit), cfg.val_limit)
    test = data.first(corpus.examples["test"], cfg.eval_limit)
    # PLUMBING (speed, GPU only): each step replayed from a CUDA graph, one per batch shape; same arithmetic.
    dual = cfg.kl_estimator == "dual"
    step_fn = data.CudaGraphs(train_step if dual else ac_train_step,
                              enabled=run.device.type == "cuda" and cfg.cuda_graph == "step" and dual)

    def validate(step: int, probe: bool = False) -> dict:          # probe: a few sentences, for the ETA
        examples = data.spread(valid, data.PROBE_SENTENCES) if probe else valid
        epoch, end = divmod(step, len(batcher))
        check = not (dual or probe) and cfg.resid_check_every > 0 and end == 0 and epoch % cfg.resid_check_every == 0
        row, _, _ = evaluate(model, nu_xz, nu_z, examples, cfg, cfg.val_samples, cfg.val_iw_samples, run.device,
                             resid_check=check)
        return {"beta": beta_at(step - 1, len(batcher), cfg), **row}     # beta as in the last training step

    with run.training(len(batcher), validate, len(valid), len(test)):
        for batch in run.batches(batcher):
            beta = beta_at(run.step, len(batcher), cfg)
            out = step_fn(model, nu_xz, nu_z, opt, nu_opt, batch.tokens, batch.lengths, beta, cfg)
            run.after_step(out, beta)


# ----------------------------------------------------------------------------------------------------
# PAPER §5.1: evaluation. The paper's columns come from the critics; beside them, numbers that are
# exact or true bounds (metrics.LMEvaluation has the formulas and their sources).
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: IVAE, nu_xz: Critic, nu_z: Critic, examples: list, cfg: Config, S: int, K: int, device,
             keep: int = 0, progress: str = "", resid_check: bool = False):
    """Every §5.1 metric of `examples`, S posterior and K importance samples per sentence; with
    --kl_estimator ac also kl_ac (its Gaussian term and residual) and, if resid_check, a fresh critic's
    residual. Returns (row, per-dimension AU variance, posterior samples of the first `keep` sentences)."""
    model.eval()
    ev = metrics.LMEvaluation(device, seed=cfg.seed + 12345, n_samples=S)   # evaluation's own randomness
    affine = cfg.encoder_layers == 0                                    # q(z|x) Gaussian: exact columns
    chunk = metrics.EVAL_TOKENS[device.type]
    prog = data.EvalProgress(examples, progress)                        # a line a minute with a label
    for batch in data.Batcher(examples, cfg.batch_size, shuffle=False).epoch(0):
        batch = batch.to(device)
        x, lengths = batch.tokens, batch.lengths
        # Affine: one draw of max(S, K) samples serves rec (all of them) and the IW bound (the first K).
        h, z = model(x, lengths, max(S, K) if affine else S, ev.gen)     # (B, H), (B, S', Z)
        nll = metrics.chunked_nll(model.nll, x, z, chunk)                # (B, S')
        ev.add_rec(nll)
        ev.add_critics(nu_xz if cfg.kl_estimator == "dual" else None, nu_z, z[:, :S], h)   # the paper's KL columns
        fit = model.posterior(h, cfg.fit_samples, ev.gen)               # (B, F, Z), apart from z
        ev.add_kl_lower(fit, z[:, :S])
        if cfg.kl_estimator == "ac":                                     # Gaussian term + residual, on the fit
            ev.add_ac(fit, lambda u: nu_xz(u, h.unsqueeze(1)))
        if affine:
            ev.add_affine(*model.posterior.gaussian(h), -nll[:, :K], z[:, :K])
        else:
            ev.add_sample_means(z[:, :S])
            if K:                                       # a proposal fitted on samples apart from those scored
                zk, log_r = ev.fitted_proposal(fit, K)                  # (B, K, Z), (B, K)
                ev.add_iw(-metrics.chunked_nll(model.nll, x, zk.float(), chunk), zk, log_r)
        ev.keep(z[:, :S], keep)
        ev.add_batch(lengths)
        prog.add(lengths)
    row, au_var, kept = ev.row()
    if resid_check:                     # a fresh critic on the first few sentences, trusting no joint one
        batch = data.collate(examples[:cfg.resid_check_sentences]).to(device)
        row.update(metrics.residual_check_row(lambda: model(batch.tokens, batch.lengths)[0], model.posterior, nu_xz,
                                              lambda: Critic(cfg.latent, cfg.hidden, cfg.nu_width, cfg.nu_layers),
                                              cfg.resid_check_steps, cfg.seed + 999, device))
    model.train()
    return row, au_var, kept


# ----------------------------------------------------------------------------------------------------
# PLUMBING: main(): parse, load, train, test; then Table 4 / 5's decoding (metrics.decode and co.)
# ----------------------------------------------------------------------------------------------------

def check_config(cfg: Config, parser) -> None:
    """Bad values are parser errors: the bounds declared in Config, then what no bound can say."""
    data.check_bounds(cfg, parser)
    for name, value, ok in [("dropout", cfg.dropout, 0 <= cfg.dropout < 1), ("beta_start", cfg.beta_start,
                                                                              0 <= cfg.beta_start <= 1)]:
        if not ok:
            parser.error(f"--{name} must be in [0, 1{')' if name == 'dropout' else ']'}, got {value}")
    if cfg.fit_samples <= cfg.latent:
        parser.error(f"--fit_samples must exceed --latent ({cfg.latent}) to fit a full-covariance Gaussian")
    if cfg.encoder_layers == 0 and cfg.noise_dim < cfg.latent:
        parser.error(f"--noise_dim {cfg.noise_dim} < --latent {cfg.latent} with the affine encoder gives "
                     "q(z|x) = N(m, W W^T) a singular covariance (rank noise_dim): its KL is infinite")


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "iVAE (Fang et al. 2019, §3.1): implicit posterior, dual KL", argv)
    check_config(cfg, parser)
    run = data.Run(cfg, parser, shared_samples=cfg.encoder_layers == 0)
    corpus = run.load_corpus((("train", "test") if cfg.fwd_rev_ppl else ("test",)) if cfg.eval_only
                             else ("train", "valid", "test"))
    model, nu_xz, nu_z, opt, nu_opt = build(cfg, len(corpus.vocab), run.device)
    run.restore(model=model, nu_xz=nu_xz, nu_z=nu_z, opt=opt, nu_opt=nu_opt)
    print(f"parameters: model {sum(p.numel() for p in model.parameters()):,}, "
          f"critics {sum(p.numel() for p in [*nu_xz.parameters(), *nu_z.parameters()]):,}")
    if not cfg.eval_only:
        train(cfg, corpus, model, nu_xz, nu_z, opt, nu_opt, run)

    # The final test, the paper's columns and the honest ones (best.pt's model), then the extras.
    test = data.first(corpus.examples["test"], cfg.eval_limit)
    result, au_var, kept = run.test(lambda: evaluate(model, nu_xz, nu_z, test, cfg, cfg.eval_samples,
                                                     cfg.iw_samples, run.device, keep=5, progress="test",
                                                     resid_check=cfg.kl_estimator == "ac"
                                                     and cfg.resid_check_every > 0))
    dec = lambda z, temperature, gen: metrics.decode(model.decoder, z, cfg.max_decode_len,   # noqa: E731
                                                     data.BOS_ID, data.EOS_ID, temperature, gen)
    model.eval()                                                         # for the extras
    # Table 4: z of a sentence = the mean of its posterior samples
    code_of = lambda x: model(x, x.new_tensor([x.shape[1]]), cfg.eval_samples)[1].mean(1)  # noqa: E731
    result.update(metrics.lm_samples(dec, corpus.vocab, corpus.examples, cfg, run.device,   # Tables 4, 5, samples
                                     specials=(data.PAD, data.BOS, data.EOS), code_of=code_of))
    run.write_results(result)
    metrics.plot_run(run.valid_rows(), ["rec", "kl", "kl_lower", "kl_exact", "mi", "mi_exact", "au", "iw_nll"],
                     cfg.out_dir, au_var, kept,
                     critic_title=f"{os.path.basename(__file__)} on {corpus.spec.name}, validation")
    run.wrote()
    return result


if __name__ == "__main__":
    data.run_script(main)

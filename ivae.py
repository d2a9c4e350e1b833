r"""iVAE: a text VAE with an implicit posterior and a dual-form KL (Fang et al., EMNLP 2019, §3.1).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Authors' code: github.com/fangleai/Implicit-LVM (torch 0.4.1).

The posterior q(z|x) is a sampler, z = G_phi(h_x, eps), with no density. The KL term of the ELBO is
estimated through its Fenchel dual with an auxiliary network nu(x, z), trained alongside the model.

Paper section -> code section
    §3.1 Eq. (6)   z = G_phi(x, eps), eps ~ N(0, I)                    -> ImplicitPosterior
    §2   Eq. (3)   ELBO = E_q log p(x|z) - KL(q(z|x) || p(z))          -> sentence_nll, train_step
         Eq. (7-9) KL(q||p) = max_nu E_q nu - E_p exp(nu) + 1           -> Critic, critic_step
         Eq. (10)  min_{theta,phi} -E log p(x|z) + E_q nu(x, z)         -> train_step
    §5.1           KL annealing, 40 epochs; MI, AU, PPL                  -> beta_at, Config, evaluate
    Table 4        interpolation between two sentences                  -> interpolate
    Table 5        forward / reverse PPL of prior samples (--fwd_rev_ppl) -> forward_reverse

Run
    python ivae.py --data ptb                      # GPU if present, else CPU; 40 epochs
    python ivae.py --data ptb --encoder_layers 0   # the authors' affine G_phi: q(z|x) Gaussian, KL exact
    python ivae.py --data ptb --max_steps 300 --eval_limit 300 --cpu        # a quick CPU smoke run
    python ivae.py --out_dir runs/ivae --eval_only --skip_test --interpolate "the company said" "i do n't know"
        # (--skip_test: keep the finished run's test row, only add the interpolation)

Shapes: B sentences, T tokens (<s> ... </s>), V vocabulary, E embedding (or noise), H LSTM hidden,
Z latent, S posterior samples per sentence, K importance samples per sentence.
Minimised: -ELBO = rec + beta * KL, rec the token NLL summed over a sentence, everything averaged over
sentences. PPL counts the words and </s> of each sentence.

What each reported number is (metrics.py has each formula and its source)
    * The paper's columns `kl`, `kl_agg`, `mi`, `nelbo`, `ppl` come from the critics trained beside the
      model: estimates, NOT bounds. With 128 prior samples the dual can overshoot, and the jointly
      trained critic reports a small fraction of the true KL (README, "Why the paper's iVAE numbers
      look so good"), so `nelbo` / `ppl` look better than the model is.
    * `kl_lower`: a certified lower bound on E_x KL(q(z|x) || p) for any posterior we can sample.
    * `iw_nll` / `iw_ppl`: an importance-weighted upper bound on -log p(x), as in vae.py. Proposal: q(z|x)
      itself for the affine encoder, else two Gaussians fitted to separate samples. Valid, maybe loose.
    * With `--encoder_layers 0`, q(z|x) = N(A h + c, W W^T) and the truth is known: `kl_exact`,
      `nelbo_exact`, `ppl_exact`, and the exact aggregate `kl_agg_exact`, `mi_exact` <= `log_n` = log N.
    * No critic refit before testing: the best of many noisy refits on a probe is a maximum, not a
      measurement (two refits of one checkpoint gave 50.7 and 68.7); the columns above replace it.
    * Validation (`val_*`) is for model selection only: few samples, a spread subset. The test uses
      eval_samples / iw_samples on the whole test split.

Deviations from the paper / the authors' code (and why)
    * G_phi is an MLP (2 hidden layers by default), as the paper draws it; the authors' code uses one
      Linear on cat(h, eps) (`--encoder_layers 0`).
    * Model selection on the validation split's IW-NLL (a true bound, so selection cannot reward a critic
      that underestimates the KL); test reported once. The authors report test after every epoch.
    * nu(z), iVAE_MI's critic, is trained here too (same samples, one Adam with nu(x, z)) to report MI.
    * Evaluation draws from its own seeded generator, so a resumed run matches an uninterrupted one.
    * bf16 autocast by default where the hardware has it natively (--precision auto; the authors: fp32):
      1.3-1.4x less wall time on the 2-core CPU, rec and IW-NLL within seed noise (README).
    * On a GPU each training step is replayed from a CUDA graph, one per batch shape (data.CudaGraphs;
      --cuda_graph critics replays the critic updates only, off nothing): the same arithmetic in fewer
      kernel launches; an H200 step in fp32 takes 3.6 ms so, 6.7 with the critics only, 20 eagerly (README).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import option

# ----------------------------------------------------------------------------------------------------
# PAPER §3.1: the model. Encoder LSTM -> h; G_phi(h, eps) -> z; decoder LSTM p(x|z); critics nu.
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
    Linear (encoder_layers = 0, the authors' code): then z = A h + c + W_eps eps is Gaussian."""

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
        eps = torch.randn(B, n_samples, self.noise_dim, device=h.device, generator=generator)  # (B, S, E)
        return self.net(torch.cat([h.unsqueeze(1).expand(B, n_samples, H), eps], -1))         # (B, S, Z)

    def gaussian(self, h: torch.Tensor):
        """Only for the affine map: q(z|x) = N(G(h, 0), W_eps W_eps^T) exactly, as (mean (B, Z), W_eps
        (Z, E)). W_eps itself, not the covariance: the exact KL is computed from it in float64."""
        w_eps = self.net[0].weight[:, -self.noise_dim:]                  # (Z, E)
        mean = self.net(torch.cat([h, h.new_zeros(h.shape[0], self.noise_dim)], -1))   # (B, Z)
        return mean, w_eps


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

    def initial_state(self, z: torch.Tensor):
        h0 = self.z_to_h(z).unsqueeze(0)                                 # (1, N, H)
        return h0, torch.zeros_like(h0)

    def forward(self, x_in: torch.Tensor, z: torch.Tensor, state=None):
        N, T = x_in.shape
        e = self.drop(self.emb(x_in))                                    # (N, T, E)
        inp = torch.cat([e, z.unsqueeze(1).expand(N, T, z.shape[-1])], -1)   # (N, T, E + Z)
        out, state = self.rnn(inp, state if state is not None else self.initial_state(z))
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
    """Encoder, implicit posterior G_phi and decoder; the critics live apart (their own optimiser)."""

    def __init__(self, cfg: Config, vocab_size: int):
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg.emb_dim, cfg.hidden)
        self.posterior = ImplicitPosterior(cfg.hidden, cfg.noise_dim, cfg.latent, cfg.encoder_layers,
                                           cfg.encoder_width)
        self.decoder = Decoder(vocab_size, cfg.emb_dim, cfg.hidden, cfg.latent, cfg.dropout)


def build(cfg: "Config", vocab_size: int, device):
    """The model and the two critics, initialised uniform(+-init_range) as the authors do."""
    model = IVAE(cfg, vocab_size)
    nu_xz = Critic(cfg.latent, cfg.hidden, cfg.nu_width, cfg.nu_layers)
    nu_z = Critic(cfg.latent, 0, cfg.nu_width, cfg.nu_layers)
    for p in model.parameters():
        nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
    return model.to(device), nu_xz.to(device), nu_z.to(device)


def optimizers(model: IVAE, nu_xz: Critic, nu_z: Critic, cfg: Config, capturable: bool = False):
    """Adam for encoder, G_phi and decoder (lr), and one Adam for both critics (nu_lr; their parameters
    are disjoint, so one step is two independent updates). Speed: fused=True updates every tensor in one
    kernel; on a 2-core CPU it took a critic update from 12 to 8 ms (README, Table 3). capturable=True
    (GPU only) keeps Adam's state on the GPU so that a CUDA graph can replay its steps (data.CudaGraphs)."""
    return (torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True, capturable=capturable),
            torch.optim.Adam(list(nu_xz.parameters()) + list(nu_z.parameters()), lr=cfg.nu_lr, fused=True,
                             capturable=capturable))


# ----------------------------------------------------------------------------------------------------
# PAPER §2-§3.1: the objective
# ----------------------------------------------------------------------------------------------------

def sentence_nll(decoder: Decoder, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of each sentence: token NLLs summed over the sentence (padding ignored).
    x: (N, T), z: (N, Z) -> (N,)."""
    logits, _ = decoder(x[:, :-1], z)                                    # (N, T-1, V)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                          ignore_index=data.PAD_ID, reduction="none")
    return nll.view(x.shape[0], -1).sum(1)                               # (N,)


def beta_at(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """KL annealing (§5.1): beta rises linearly per batch from beta_start to 1 over warmup_epochs."""
    if cfg.warmup_epochs <= 0:
        return 1.0
    return min(1.0, cfg.beta_start + (1.0 - cfg.beta_start) * step / (cfg.warmup_epochs * steps_per_epoch))


def critic_step(nu_xz: Critic, nu_z: Critic, nu_opt, h: torch.Tensor, z: torch.Tensor, z_prior: torch.Tensor,
                autocast=contextlib.nullcontext):
    r"""One ascent step of Eq. (9) for both critics on the same posterior samples, fresh prior samples.

        nu(x, z):  KL(q(z|x) || p) ~ mean_i nu(x_i, z_i) - mean_i exp nu(x_i, z'_i) + 1,  z_i ~ q(z|x_i)
        nu(z):     KL(q(z)   || p) ~ mean_i nu(z_i)      - mean_i exp nu(z'_i)      + 1,  z'_i ~ p(z)
    h, z, z_prior: (B, H), (B, Z), (B, Z), all constants here. Returns the two estimates (before the step)."""
    B = z.shape[0]
    # Speed: the posterior and the prior samples go through each critic in ONE forward pass of 2B rows,
    # under the model's autocast (bf16 matrix products); nu leaves it in fp32 before exp(nu) and the KL.
    zz, hh = torch.cat([z, z_prior]), torch.cat([h, h])                  # (2B, Z), (2B, H)
    with autocast():
        nu_c, nu_a = nu_xz(zz, hh), nu_z(zz)
    nu_c, nu_a = nu_c.float(), nu_a.float()                              # (2B,), (2B,)
    kl_cond = metrics.dual_kl(nu_c[:B], nu_c[B:])                        # E_x KL(q(z|x) || p)
    kl_agg = metrics.dual_kl(nu_a[:B], nu_a[B:])                         # KL(q(z) || p)
    nu_opt.zero_grad(set_to_none=True)
    (-(kl_cond + kl_agg)).backward()                                     # maximise both estimates
    nu_opt.step()
    return kl_cond.detach(), kl_agg.detach()


def critic_updates(nu_xz: Critic, nu_z: Critic, nu_opt, h: torch.Tensor, z: torch.Tensor,
                   z_prior: torch.Tensor, autocast=contextlib.nullcontext):
    """The nu_steps critic updates of one training step, one per row of z_prior: (nu_steps, B, Z) prior
    samples drawn by the caller. h: (B, H), z: (B, Z), constants here. Returns the last step's estimates."""
    for z_p in z_prior:
        kl_cond, kl_agg = critic_step(nu_xz, nu_z, nu_opt, h, z, z_p, autocast)
    return kl_cond, kl_agg


def train_step(model: IVAE, nu_xz: Critic, nu_z: Critic, opt, nu_opt, batch: data.Batch,
               beta: float | torch.Tensor, cfg: Config, autocast, critics=None) -> dict:
    """One training step: nu_steps critic updates (Eq. 9), then one encoder/decoder update (Eq. 10).
    critics(h, z, z_prior): the critic updates (default:
    critic_updates, eagerly; train() may pass them replayed from a CUDA graph). beta: a float, or a 0-d
    tensor when the whole step is replayed from a graph (data.CudaGraphs takes tensors only)."""
    x, lengths = batch.tokens, batch.lengths
    with autocast():
        h = model.encoder(x, lengths)                                    # (B, H)
    h = h.float()
    z = model.posterior(h, 1).squeeze(1)                                 # (B, Z): one sample per sentence

    # Eq. (9): the critics chase the current posterior. h and z are constants for them. nu(z) is
    # iVAE_MI's critic; iVAE trains it beside nu(x, z) on the same samples only to report KL(q(z)||p) and
    # the MI (§5.1): it never enters this model's loss.
    z_prior = torch.randn(cfg.nu_steps, *z.shape, device=z.device)       # fresh p(z) samples, one draw
    critics = critics or (lambda *a: critic_updates(nu_xz, nu_z, nu_opt, *a, autocast=autocast))
    kl_cond, kl_agg = critics(h.detach(), z.detach(), z_prior)

    # Eq. (10): minimise rec + beta * E_q nu(x, z) over encoder, G_phi and decoder.
    # h enters nu DETACHED. Eq. (10) drops the E_p[exp nu(x, z')] term of Eq. (9) because, with x's
    # features held fixed, prior samples z' ~ p do not depend on phi. If gradients flowed into h through
    # nu, that dropped term would depend on phi as well, and leaving it out would bias the gradient;
    # phi must reach the KL only through the samples z = G_phi(h, eps).
    with autocast():
        rec = sentence_nll(model.decoder, x, z).mean()                   # sum over tokens, mean over B
    kl_term = nu_xz(z, h.detach()).mean()
    loss = rec + beta * kl_term                                          # -ELBO (with the dual KL)
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=list(model.parameters()))                       # the critic is trained by Eq. (9) only
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return {"loss": loss.detach(), "rec": rec.detach(), "kl": kl_cond, "kl_agg": kl_agg,
            "grad_norm": grad_norm.detach()}


# ----------------------------------------------------------------------------------------------------
# Settings: the paper's (model, training) first, then the run's. Every field is a --flag; 0 means "the
# authors' value for this corpus" (data.LM_DEFAULTS) where said. run=True marks what --resume / --eval_only
# may change; the rest comes back from the checkpoint.
# ----------------------------------------------------------------------------------------------------

@dataclass
class Config(data.RunConfig):
    # model (§5.1)
    emb_dim: int = option(0, "word embedding size (0: 256 for PTB, 512 for Yahoo/Yelp)", low=0)
    hidden: int = option(0, "LSTM hidden size of encoder and decoder (0: 256 PTB, 1024 Yahoo/Yelp)", low=0)
    latent: int = option(32, "latent dimensions Z", low=1)
    noise_dim: int = option(32, "dimensions of the noise eps fed to G_phi (Eq. 6)", low=1)
    encoder_layers: int = option(2, "hidden layers of the MLP G_phi(h, eps); 0 = the authors' affine map", low=0)
    encoder_width: int = option(256, "width of G_phi's hidden layers", low=1)
    nu_width: int = option(512, "width of the critics' hidden layers (authors: 512)", low=1)
    nu_layers: int = option(3, "hidden layers of the critics (authors: 3)", low=0)
    dropout: float = option(0.5, "dropout on decoder input embeddings and before its output layer")
    init_range: float = option(0.0, "uniform init range of all weights (0: 0.1 PTB, 0.01 Yahoo/Yelp)", low=0)
    # training (§5.1 and the authors' code)
    batch_size: int = option(32, "sentences per batch (equal-length batches)", low=1)
    lr: float = option(0.0, "Adam learning rate of encoder/decoder (0: 1e-3 PTB, 8e-4 Yahoo/Yelp)", low=0)
    clip: float = option(5.0, "gradient-norm clip of the encoder/decoder update", low=0)
    nu_lr: float = option(1e-5, "Adam learning rate of the critics nu(x, z) and nu(z)", low=0)
    nu_steps: int = option(5, "critic updates per training step (Eq. 9), fresh prior samples each", low=1)
    beta_start: float = option(0.1, "KL weight at step 0; rises linearly to 1")
    warmup_epochs: float = option(10.0, "epochs over which beta rises to 1 (0: beta = 1 throughout)", low=0)
    # the run: the command-line contract every script shares is data.RunConfig (--data --seed --out_dir
    # --epochs --max_steps --resume --eval_only --threads ...); here its default out_dir
    out_dir: str = option("runs/ivae", "where config.json, log.csv, metrics.json, checkpoints and plots go",
                          run=True)
    cuda_graph: str = option("step", "on a GPU, replay each training step (step: one graph per batch shape) "
                                     "or only its critic updates (critics) from a CUDA graph, or run it eagerly "
                                     "(off); the same arithmetic (data.CudaGraphs; README, Table 3)",
                             choices=["step", "critics", "off"], run=True)
    # evaluation (§5.1) and the honest columns
    eval_samples: int = option(128, "posterior samples per sentence at the final test (authors: 128)", low=1,
                               run=True)
    iw_samples: int = option(500, "importance samples per sentence for the final test IW bound", low=0, run=True)
    fit_samples: int = option(512, "posterior samples per sentence to fit the Gaussian of the KL lower bound "
                                   "and of the IW proposal (apart from the evaluated samples)", low=1, run=True)
    val_samples: int = option(8, "posterior samples per sentence at validation (selection only)", low=1, run=True)
    val_iw_samples: int = option(8, "importance samples per sentence at validation (selection only)", low=0,
                                 run=True)
    val_limit: int = option(800, "validate on N sentences spread evenly over the validation split (0: all)",
                            low=0, run=True)
    val_every: int = option(0, "validate every N training steps (0: at the end of every epoch)", low=0, run=True)
    eval_tokens: int = option(0, "decoder tokens (sentences x samples x length) per forward pass at "
                                 "evaluation; bounds the memory of the logits (0: 32768 on a GPU, 2048 on the "
                                 "CPU, where small chunks run faster)", low=0, run=True)
    eval_limit: int = option(0, "evaluate on the first N sentences of each split only (0: all; smoke runs)",
                             low=0, run=True)
    # sampling, interpolation (Table 4), forward / reverse perplexity (Table 5)
    num_samples: int = option(10, "sentences sampled from the prior into samples.txt (greedy and T)", low=0,
                              run=True)
    temperature: float = option(1.0, "temperature of the sampled (non-greedy) sentences", low=0, run=True)
    max_decode_len: int = option(80, "longest decoded sentence, in tokens", low=1, run=True)
    interpolate: tuple = option((), "two sentences to interpolate between (Table 4)", nargs=2, run=True)
    fwd_rev_ppl: bool = option(False, "also report forward / reverse PPL of greedy prior samples (Table 5)",
                               run=True)
    fwd_rev_samples: int = option(1280, "prior samples decoded for the forward / reverse PPL (authors: 1,280)",
                                  low=1, run=True)
    skip_test: bool = option(False, "with --eval_only: keep the test row in metrics.json (same checkpoint) and "
                             "only add the extras: --fwd_rev_ppl, --interpolate, samples, plots", run=True)


# ----------------------------------------------------------------------------------------------------
# Training loop: the §5.1 schedule, validation for model selection, checkpoints
# ----------------------------------------------------------------------------------------------------

def train(cfg, corpus, model, nu_xz, nu_z, opt, nu_opt, state, device, log: data.CsvLog) -> int:
    """Train from state["step"] to the end (epochs or max_steps); validate after every epoch (and every
    val_every steps), keep the checkpoint with the best validation IW-NLL in best.pt. Returns the last step."""
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed)
    valid = corpus.examples["valid"][:cfg.eval_limit] if cfg.eval_limit else corpus.examples["valid"]
    if cfg.val_limit and cfg.val_limit < len(valid):                     # an even spread, fixed for the run
        valid = valid[::len(valid) // cfg.val_limit][:cfg.val_limit]
    test = corpus.examples["test"][:cfg.eval_limit] if cfg.eval_limit else corpus.examples["test"]

    def passes(n, S, K):                           # decoder passes of an evaluation: the bulk of its time
        return n * (max(S, K) if cfg.encoder_layers == 0 else S + K)   # (q(z|x) known: one draw serves rec and IW)
    test_in_validations = passes(len(test), cfg.eval_samples, cfg.iw_samples) / \
        passes(len(valid), cfg.val_samples, cfg.val_iw_samples)
    val_seconds = None                                                   # wall time of the last validation
    steps_per_epoch = len(batcher)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    step, best = state["step"], state["best"]
    # Speed (GPU): the step, or its critic updates, replayed from CUDA graphs (data.CudaGraphs says why and
    # how; recording needs autocast's weight cache off). On the CPU both are plain calls.
    graphs = cfg.cuda_graph if device.type == "cuda" else "off"
    autocast = data.autocast_for(device, cfg.precision, cache=graphs == "off")
    critics = data.CudaGraphs(lambda h, z, z_prior: critic_updates(nu_xz, nu_z, nu_opt, h, z, z_prior, autocast),
                              enabled=graphs == "critics")
    step_fn = data.CudaGraphs(lambda x, lengths, beta: train_step(model, nu_xz, nu_z, opt, nu_opt,
                                                                  data.Batch(x, lengths), beta, cfg, autocast,
                                                                  critics),
                              enabled=graphs == "step")
    ckpt_path, best_path = os.path.join(cfg.out_dir, "checkpoint.pt"), os.path.join(cfg.out_dir, "best.pt")

    t_begin = time.time() - state["train_time_s"]                        # train_time_s sums every process

    def save(path=ckpt_path, validated=True):               # state dicts + config + step + RNG states
        data.save_checkpoint({"script": data.script_of(cfg), "config": asdict(cfg), "vocab": corpus.vocab.state_dict(),
                              "model": model.state_dict(), "nu_xz": nu_xz.state_dict(), "nu_z": nu_z.state_dict(),
                              "opt": opt.state_dict(), "nu_opt": nu_opt.state_dict(), "step": step, "best": best,
                              "rng": data.rng_state(), "validated": validated,
                              "train_time_s": time.time() - t_begin}, path)

    def validate():                                                      # selection on IW-NLL
        nonlocal best, val_seconds, t0
        print(f"validating at step {step}", flush=True)
        t_val = time.time()
        with stop.interruptible():                                       # the first Ctrl-C stops it at once
            row, _, _ = evaluate(model, nu_xz, nu_z, valid, cfg, device, cfg.val_samples, cfg.val_iw_samples)
        val_seconds = time.time() - t_val
        t0 += val_seconds                                                # steps/s counts training only
        beta = beta_at(step - 1, steps_per_epoch, cfg)                   # as in the last training step
        row = {"step": step, "epoch": step / steps_per_epoch, "split": "valid", "beta": beta, **row,
               "val_seconds": round(val_seconds, 1)}
        print(metrics.format_row(f"valid @ step {step}", row), flush=True)
        for note in metrics.honest_notes(row):
            print("  note:", note, flush=True)
        metrics.warn_collapse(row, cfg.latent)
        log.write(row)
        score = row.get("iw_nll", row["nelbo"])
        if best is None or score < best:
            best = score
            save(best_path)

    print(f"training: {steps_per_epoch} batches per epoch, steps {step} -> {total}", flush=True)
    acc, n_acc, tokens, t0 = {}, 0, 0, time.time()
    with data.GracefulInterrupt() as stop:
        if not state["validated"]:                         # resumed from a checkpoint that awaits its validation
            validate()
            save()
        while step < total and not stop.requested:
            epoch = step // steps_per_epoch
            for batch in batcher.epoch(epoch, start=step % steps_per_epoch):
                tokens += int((batch.lengths - 1).sum())                 # counted on the CPU: no GPU sync
                batch = batch.to(device)
                beta = beta_at(step, steps_per_epoch, cfg)
                out = step_fn(batch.tokens, batch.lengths, torch.tensor(beta))
                step += 1
                for k, v in out.items():
                    acc[k] = acc.get(k, 0) + v                       # device tensors: no sync per step
                n_acc += 1
                validating = step % steps_per_epoch == 0 or (cfg.val_every and step % cfg.val_every == 0)
                saving = validating or step % cfg.save_every == 0 or step >= total or stop.requested
                if step % cfg.log_every == 0 or saving:
                    means = {k: float(v) / n_acc for k, v in acc.items()}   # one device sync per interval
                    data.check_finite(means, step, ckpt_path,               # never save non-finite weights
                                      "The usual cause is exp(nu) overflowing when a critic's output grows "
                                      "large: lower --nu_lr or --lr, or use --precision fp32.")
                if step % cfg.log_every == 0 or step == total:
                    dt = time.time() - t0
                    eta = data.eta_minutes(step, total, dt / n_acc, steps_per_epoch, cfg.val_every, val_seconds,
                                           test_in_validations)
                    print(f"step {step:>6}/{total} | ep {step / steps_per_epoch:5.2f} | rec {means['rec']:7.2f} | "
                          f"KL {means['kl']:6.2f} | KLq {means['kl_agg']:6.2f} | beta {beta:.3f} | "
                          f"|g| {means['grad_norm']:5.2f} | {n_acc / dt:5.1f} step/s {tokens / dt:7.0f} tok/s | "
                          f"{eta}", flush=True)
                    acc, n_acc, tokens, t0 = {}, 0, 0, time.time()
                if validating:
                    save(validated=False)                  # first the checkpoint: nothing is lost if
                    validate()                             # the validation is interrupted or killed
                if saving:
                    save()
                if step >= total or stop.requested:
                    break
    if stop.requested:
        raise SystemExit(f"interrupted at step {step}: checkpoint saved to {ckpt_path}; continue with --resume")
    return step


# ----------------------------------------------------------------------------------------------------
# PAPER §5.1: evaluation. The paper's columns come from the critics; beside them, numbers that are exact
# or true bounds (the formulas and their sources are in metrics.py).
# ----------------------------------------------------------------------------------------------------

def batched_nll(decoder: Decoder, x: torch.Tensor, z: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """-log p(x|z_s) for S samples of each sentence, in chunks of at most max_tokens decoder tokens.
    x (B, T), z (B, S, Z) -> (B, S)."""
    B, S, Z = z.shape
    max_rows = max(1, max_tokens // x.shape[1])
    xs = x.unsqueeze(1).expand(B, S, x.shape[1]).reshape(B * S, -1)
    zs = z.reshape(B * S, Z)
    out = [sentence_nll(decoder, xs[i:i + max_rows], zs[i:i + max_rows]) for i in range(0, B * S, max_rows)]
    return torch.cat(out).view(B, S)


@torch.no_grad()
def evaluate(model: IVAE, nu_xz: Critic, nu_z: Critic, examples: list, cfg: Config, device,
             n_samples: int, iw_samples: int, keep_samples: int = 0, progress: str = ""):
    r"""All §5.1 metrics of one split, the paper's way and the honest way, on the same samples.

    The paper's way (critics trained beside the model; estimates, not bounds):
        rec   = mean_x mean_s -log p(x | z_s),  z_s ~ q(z|x), s = 1..S
        kl    = mean_x dual_kl(nu(x, z_s), nu(x, z'_s)),  z'_s ~ p(z)          (Eq. 7, with the +1)
        kl_agg = the dual with nu(z) over all samples of all sentences           (KL(q(z) || p))
        mi    = kl - kl_agg;  nelbo = rec + kl;  ppl = exp(sum_x nelbo / #words), #words counting </s>
    Honest columns:
        iw_nll, iw_ppl  IW upper bound on -log p(x) (metrics.iw_bound). Proposal: q(z|x) itself for the
                        affine encoder (its samples double as the rec samples), else a 2-Gaussian
                        mixture fitted to fit_samples separate posterior samples (metrics.defensive_proposal)
        kl_lower        certified lower bound on E_x KL(q(z|x) || p) (metrics.kl_lower_bound)
        au              from the exact means (affine) or the sample means less their sampling noise
        log_n           log N: no MI on N sentences can exceed it
    With --encoder_layers 0, q(z|x) = N(m(x), W W^T) is Gaussian and the truth is known:
        kl_exact, kl_agg_exact, mi_exact (+ mi_exact_se), nelbo_exact, ppl_exact  (metrics.aggregate_kl_mi)
    Returns (row, per-dimension AU variance, posterior samples of the first keep_samples sentences)."""
    model.eval()
    # Evaluation's own randomness, so evaluating never moves training's random stream. The offsets added
    # to cfg.seed (12345 here, 777 and 4242 below) are arbitrary: each use gets its own stream.
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    affine = cfg.encoder_layers == 0
    autocast = data.autocast_for(device, cfg.precision)
    S, K = n_samples, iw_samples
    tot = {"rec": 0.0, "kl": 0.0, "kl_lower": 0.0, "iw": 0.0}
    kl_agg = metrics.DualKL()
    means, noise, kl_exact, kept, n, words = [], [], [], [], 0, 0
    prog = data.EvalProgress(examples, progress)                    # a line a minute with a label
    for batch in data.Batcher(examples, cfg.batch_size, shuffle=False).epoch(0):
        batch = batch.to(device)
        x, lengths = batch.tokens, batch.lengths
        with autocast():
            h = model.encoder(x, lengths).float()                        # (B, H)
        # Affine: one draw of max(S, K) samples serves rec (all of them) and the IW bound (the first K).
        z = model.posterior(h, max(S, K) if affine else S, gen)          # (B, S', Z)
        with autocast():
            nll = batched_nll(model.decoder, x, z, cfg.eval_tokens)      # (B, S'), fp32 (sentence_nll)
        tot["rec"] += float(nll.double().mean(1).sum())

        # The paper's critic estimates on the first S samples, S fresh prior samples each.
        zs, hs = z[:, :S], h.unsqueeze(1)                                # (B, S, Z), (B, 1, H)
        z_prior = torch.randn(zs.shape, device=device, generator=gen)
        tot["kl"] += float(metrics.dual_kl(nu_xz(zs, hs), nu_xz(z_prior, hs)).sum())
        kl_agg.add(nu_z(zs), nu_z(z_prior))

        # A certified lower bound: a Gaussian fitted on separate samples, averaged over the S samples.
        fit = model.posterior(h, cfg.fit_samples, gen)                   # (B, F, Z)
        tot["kl_lower"] += float(metrics.kl_lower_bound(fit, zs).sum())

        if affine:
            mean, w = model.posterior.gaussian(h)                        # (B, Z), (Z, E)
            kl_exact.append(metrics.affine_posterior_kl(mean, w).cpu())
            means.append(mean.double().cpu())
            if K:
                log_q = metrics.AffinePosteriors(mean, w).log_prob_own(z[:, :K])          # (B, K)
                tot["iw"] += float(metrics.iw_bound(-nll[:, :K], z[:, :K], log_q).sum())
        else:
            means.append(zs.double().mean(1).cpu())
            noise.append(zs.double().var(1).cpu() / S)                   # variance of each sample mean
            if K:
                r = metrics.defensive_proposal(fit)                      # fitted on samples apart from zk
                zk = metrics.sample_proposal(r, K, gen)                  # (K, B, Z) float64
                log_r = r.log_prob(zk).T                                 # (B, K)
                zk = zk.transpose(0, 1)                                  # (B, K, Z)
                with autocast():
                    nll_k = batched_nll(model.decoder, x, zk.float(), cfg.eval_tokens)
                tot["iw"] += float(metrics.iw_bound(-nll_k, zk, log_r).sum())
        if len(kept) < keep_samples:
            kept += list(zs[:keep_samples - len(kept)].cpu())
        n += x.shape[0]
        prog.add(lengths)
        words += int((lengths - 1).sum())                                # words + </s>, not <s>

    means = torch.cat(means)
    au, au_var = metrics.active_units(means, mean_noise_var=None if affine else torch.cat(noise))
    row = {"n_sentences": n, "n_words": words, "eval_samples": S, "rec": tot["rec"] / n,
           "kl": tot["kl"] / n, "kl_agg": kl_agg.value()}
    row.update(mi=metrics.mutual_info(row["kl"], row["kl_agg"]), nelbo=row["rec"] + row["kl"],
               ppl=metrics.perplexity(tot["rec"] + tot["kl"], words), au=au, log_n=math.log(n),
               kl_lower=tot["kl_lower"] / n)
    if K:
        row.update(iw_nll=tot["iw"] / n, iw_ppl=metrics.perplexity(tot["iw"], words), iw_samples=K)
    if affine:
        kl_exact = torch.cat(kl_exact)
        row.update(kl_exact=float(kl_exact.mean()), nelbo_exact=row["rec"] + float(kl_exact.mean()),
                   ppl_exact=metrics.perplexity(tot["rec"] + float(kl_exact.sum()), words))
        if math.isfinite(row["kl_exact"]):
            _, w = model.posterior.gaussian(h[:1])
            agg = metrics.aggregate_kl_mi(metrics.AffinePosteriors(means.to(device), w), kl_exact.to(device),
                                          generator=gen)
            row.update(kl_agg_exact=agg["kl_agg"], mi_exact=agg["mi"], mi_exact_se=agg["mi_se"])
    model.train()
    return row, au_var, (torch.stack(kept) if kept else None)


# ----------------------------------------------------------------------------------------------------
# Sampling from the prior, interpolation (Table 4), forward / reverse PPL (Table 5)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def decode(decoder: Decoder, z: torch.Tensor, max_len: int, temperature: float = 0.0, gen=None) -> list:
    """Sentences from latent codes z (N, Z): greedy (temperature 0) or sampled, up to max_len tokens."""
    was_training = decoder.training
    decoder.eval()
    N = z.shape[0]
    token = torch.full((N, 1), data.BOS_ID, dtype=torch.long, device=z.device)
    state, out = None, []
    done = torch.zeros(N, dtype=torch.bool, device=z.device)
    for _ in range(max_len):
        logits, state = decoder(token, z, state)                         # (N, 1, V)
        logits = logits[:, -1].float()
        if temperature > 0:
            token = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=gen)
        else:
            token = logits.argmax(-1, keepdim=True)
        out.append(token)
        done |= token.squeeze(1) == data.EOS_ID
        if bool(done.all()):
            break
    decoder.train(was_training)
    return torch.cat(out, 1).tolist()


@torch.no_grad()
def posterior_mean(model: IVAE, vocab: data.Vocab, sentence: str, n_samples: int, device) -> torch.Tensor:
    """Table 4: z of a sentence = the mean of its posterior samples."""
    x = torch.tensor([vocab.encode(sentence.lower().split())], device=device)
    h = model.encoder(x, torch.tensor([x.shape[1]], device=device)).float()
    return model.posterior(h, n_samples).mean(1)                         # (1, Z)


def interpolate(model: IVAE, vocab: data.Vocab, a: str, b: str, cfg: Config, device) -> list:
    """Greedy decodes of z_t = (1 - t) z_a + t z_b for t = 0, 0.1, ..., 1 (Table 4)."""
    model.eval()
    za, zb = (posterior_mean(model, vocab, s, cfg.eval_samples, device) for s in (a, b))
    ts = [i / 10 for i in range(11)]
    z = torch.cat([(1 - t) * za + t * zb for t in ts])                   # (11, Z)
    lines = [" ".join(vocab.decode(ids)) for ids in decode(model.decoder, z, cfg.max_decode_len)]
    model.train()
    return [f"{t:.1f}\t{line}" for t, line in zip(ts, lines)]


def write_samples(model: IVAE, vocab: data.Vocab, cfg: Config, device, path: str) -> list:
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 777)
    z = torch.randn(cfg.num_samples, cfg.latent, device=device, generator=gen)
    greedy = decode(model.decoder, z, cfg.max_decode_len)
    sampled = decode(model.decoder, z, cfg.max_decode_len, cfg.temperature, gen)
    lines = [f"# {cfg.num_samples} prior samples z ~ N(0, I); greedy, then temperature {cfg.temperature}"]
    lines += ["greedy\t" + " ".join(vocab.decode(ids)) for ids in greedy]
    lines += [f"T={cfg.temperature}\t" + " ".join(vocab.decode(ids)) for ids in sampled]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def forward_reverse(model: IVAE, corpus: data.Corpus, cfg: Config, device, path: str) -> dict:
    """Table 5: greedy decodes (<= max_decode_len tokens) of fwd_rev_samples z ~ N(0, I), written to `path`,
    then metrics.forward_reverse_ppl against the training and test text."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 4242)
    z = torch.randn(cfg.fwd_rev_samples, cfg.latent, device=device, generator=gen)
    samples = [corpus.vocab.decode(ids) for chunk in z.split(256) for ids in decode(model.decoder, chunk,
                                                                                    cfg.max_decode_len)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(" ".join(s) for s in samples) + "\n")
    text = {split: [corpus.vocab.decode(e) for e in corpus.examples[split]] for split in ("train", "test")}
    words = [w for w in corpus.vocab.itos if w not in (data.PAD, data.BOS, data.EOS)]
    return metrics.forward_reverse_ppl(samples, text["train"], text["test"], words)


# ----------------------------------------------------------------------------------------------------
# main(): parse, load, train, evaluate on test, sample, plot
# ----------------------------------------------------------------------------------------------------

def check_config(cfg: Config, parser) -> None:
    """Bad values are parser errors: the bounds declared in Config, then what no bound can say."""
    data.check_bounds(cfg, parser)
    if not 0 <= cfg.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not 0 <= cfg.beta_start <= 1:
        parser.error(f"--beta_start must be in [0, 1], got {cfg.beta_start}")
    if cfg.fit_samples <= cfg.latent:
        parser.error(f"--fit_samples must exceed --latent ({cfg.latent}) to fit a full-covariance Gaussian")
    if cfg.encoder_layers == 0 and cfg.noise_dim < cfg.latent:
        parser.error(f"--noise_dim {cfg.noise_dim} < --latent {cfg.latent} with the affine encoder gives "
                     "q(z|x) = N(m, W W^T) a singular covariance (rank noise_dim): its KL is infinite")
    if cfg.resume and cfg.eval_only:
        parser.error("--resume and --eval_only exclude each other")
    if cfg.skip_test and not cfg.eval_only:
        parser.error("--skip_test goes with --eval_only (a training run always ends with its test)")


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "iVAE (Fang et al. 2019, §3.1): implicit posterior, dual KL", argv)
    check_config(cfg, parser)
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    cfg.eval_tokens = data.eval_tokens_for(device, cfg.eval_tokens)
    ckpt = data.open_run(cfg, parser, data.run_control(Config), device)
    state = {"step": 0, "best": None, "validated": True, "train_time_s": 0.0}      # a fresh run; or resumed:
    state.update({k: ckpt[k] for k in state if k in ckpt} if ckpt else {})
    data.set_seed(cfg.seed)
    try:
        splits = (("train", "test") if cfg.fwd_rev_ppl else ("test",)) if cfg.eval_only else ("train", "valid", "test")
        vocab = data.Vocab.from_state_dict(ckpt["vocab"]) if ckpt else None
        corpus = data.load_corpus(cfg.data, cfg.data_dir, splits, vocab=vocab)
    except data.DataError as err:
        parser.error(str(err))
    cfg = data.lm_defaults(cfg, corpus.spec.name if cfg.data in data.CORPORA else "ptb")
    os.makedirs(cfg.out_dir, exist_ok=True)
    print(f"device: {data.describe_device(device)}, precision {data.precision_in_use(device, cfg.precision)}")
    print(f"corpus {corpus.spec.name}: " + ", ".join(f"{s} {len(e):,}" for s, e in corpus.examples.items())
          + f" sentences, vocabulary {len(corpus.vocab):,}")

    model, nu_xz, nu_z = build(cfg, len(corpus.vocab), device)
    graph = device.type == "cuda" and cfg.cuda_graph != "off"           # Adam's steps replayed from a graph
    opt, nu_opt = optimizers(model, nu_xz, nu_z, cfg, capturable=graph)
    if ckpt:
        for name, obj in [("model", model), ("nu_xz", nu_xz), ("nu_z", nu_z)] + \
                ([] if cfg.eval_only else [("opt", opt), ("nu_opt", nu_opt)]):
            obj.load_state_dict(ckpt[name])
        for group in opt.param_groups + nu_opt.param_groups:       # this device's setting, not the saved one
            group["capturable"] = graph
        if not cfg.eval_only:
            data.set_rng_state(ckpt["rng"])
    print(f"parameters: model {sum(p.numel() for p in model.parameters()):,}, "
          f"critics {sum(p.numel() for p in nu_xz.parameters()) + sum(p.numel() for p in nu_z.parameters()):,}")
    if not cfg.eval_only:                                          # --eval_only keeps the run's own config
        data.write_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    # A resume drops the log's rows after the checkpoint (and its step's row if it still awaits its
    # validation); --eval_only leaves log.csv as it is.
    log = data.CsvLog(os.path.join(cfg.out_dir, "log.csv"), read_only=cfg.eval_only,
                      resume_step=state["step"] - (not state["validated"]) if ckpt else None)

    t_start = time.time()
    if not cfg.eval_only:
        try:
            state["step"] = train(cfg, corpus, model, nu_xz, nu_z, opt, nu_opt, state, device, log)
        except FloatingPointError as err:
            raise SystemExit(f"stopped: {err}")
        state["selected_step"] = data.load_selected(cfg.out_dir, device,      # report the selected model
                                                    {"model": model, "nu_xz": nu_xz, "nu_z": nu_z})
    train_time = state["train_time_s"] + time.time() - t_start                # over every process of the run

    # Final test evaluation: the paper's columns from the training-time critics, and the honest ones.
    t_test = time.time()
    examples = corpus.examples["test"][:cfg.eval_limit] if cfg.eval_limit else corpus.examples["test"]
    if cfg.skip_test:                                              # the row this checkpoint already has
        result, au_var, kept = data.saved_test_row(cfg.out_dir, state["step"], parser), None, None
    else:
        result, au_var, kept = evaluate(model, nu_xz, nu_z, examples, cfg, device, cfg.eval_samples,
                                        cfg.iw_samples, keep_samples=5, progress="test")
        step = state["step"]
        result = {"split": "test", "step": step, "selected_step": state.get("selected_step") or step, **result,
                  "train_time_s": round(train_time, 1), "test_seconds": round(time.time() - t_test, 1),
                  "device": data.describe_device(device)}
    print(metrics.format_row("test", result))
    for note in metrics.honest_notes(result):
        print("  note:", note)
    metrics.warn_collapse(result, cfg.latent)
    if cfg.fwd_rev_ppl:
        result.update(forward_reverse(model, corpus, cfg, device, os.path.join(cfg.out_dir, "fwd_rev_samples.txt")))
        print(f"forward PPL {result['fwd_ppl']:.1f} | reverse PPL {result['rev_ppl']:.1f} (train, as the "
              f"authors) {result['rev_ppl_test']:.1f} (test) | {cfg.fwd_rev_samples} greedy prior samples")
    log.write({"epoch": "", **result})
    data.write_json(os.path.join(cfg.out_dir, "metrics.json"), result)

    # Samples, interpolation, pictures.
    for line in write_samples(model, corpus.vocab, cfg, device, os.path.join(cfg.out_dir, "samples.txt"))[:4]:
        print("sample:", line)
    if cfg.interpolate:
        lines = interpolate(model, corpus.vocab, *cfg.interpolate, cfg, device)
        with open(os.path.join(cfg.out_dir, "interpolation.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
    rows = [r for r in log.rows() if r.get("split") == "valid"]
    metrics.plot_curves(rows, ["rec", "kl", "kl_lower", "kl_exact", "mi", "mi_exact", "au", "iw_nll"],
                        os.path.join(cfg.out_dir, "curves.png"))
    metrics.plot_critic_vs_exact(rows, os.path.join(cfg.out_dir, "critic_vs_exact.png"),
                                 f"{os.path.basename(__file__)} on {corpus.spec.name}, validation")
    if au_var is not None:
        metrics.plot_active_units(au_var, 0.01, os.path.join(cfg.out_dir, "active_units.png"))
    if kept is not None:
        metrics.plot_latent_pca(kept, os.path.join(cfg.out_dir, "posterior_pca.png"),
                                prior=torch.randn(500, cfg.latent))
    print(f"wrote {cfg.out_dir}/: " + ("" if cfg.eval_only else "config.json log.csv checkpoint.pt best.pt ")
          + "metrics.json samples.txt *.png" + (" fwd_rev_samples.txt" if cfg.fwd_rev_ppl else "")
          + (" interpolation.txt" if cfg.interpolate else ""))
    return result


if __name__ == "__main__":
    data.run_script(main)

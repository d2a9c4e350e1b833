r"""Gaussian text VAEs: the baselines of Fang et al. (EMNLP 2019), Table 2 (VAE, beta-VAE, cyclical VAE).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. The baselines: Bowman et al. (2016) VAE with KL annealing; beta-VAE (Higgins et al.
2017) with beta capped at 0.5; cyclical annealing (Fu et al., NAACL 2019).

The same LSTM encoder and decoder as ivae.py (copied on purpose: each script reads on its own), but
q(z|x) = N(mu(h_x), diag sigma^2(h_x)), so the KL term has a closed form and the ELBO is a true bound.

Paper section -> code section
    §2   Eq. (3)  ELBO = E_q log p(x|z) - KL(q(z|x) || p(z))      -> "Objective" (analytic KL, metrics.gaussian_kl)
    §5.1          KL annealing / beta / cyclical schedules         -> beta_at
    §5.1          MI (He et al. 2019), AU, PPL, IW-NLL             -> "Evaluation"
    Table 4       interpolation                                    -> interpolate
    Table 5       forward / reverse PPL (--fwd_rev_ppl)            -> forward_reverse

Run
    python vae.py --data ptb                                   # VAE, beta 0.1 -> 1 over 10 epochs
    python vae.py --data ptb --beta 0.5                        # beta(0.5)-VAE
    python vae.py --data ptb --anneal cyclical --cycles 4 --ratio 0.5      # Fu et al. (2019)
    python vae.py --data ptb --cuda                            # insist on a GPU
    python vae.py --data ptb --eval_only --skip_test --fwd_rev_ppl   # Table 5 for a finished run

Shapes: B sentences, T tokens, V vocabulary, E embedding, H hidden, Z latent, S samples, K importance samples.

Minimised: -ELBO = rec + beta * KL, with rec the token NLL summed over a sentence and KL summed over
latent dimensions, both averaged over sentences.

Honest numbers: with beta = 1 the reported -ELBO = rec + KL is an upper bound on -log p(x) (rec
estimated with S samples), and `iw_nll` (K samples from q(z|x) as the proposal, He et al. 2019) is a
tighter one: the same quantity as ivae.py's `iw_nll`, whose proposal may fit less well (a looser bound).
`mi` uses exact Gaussian densities, Monte-Carlo over z only, like ivae.py's `mi_exact`; `log_n` = log N
bounds it, and `mi_se` is the standard error of its Monte-Carlo part (an upper bound: one z per
sentence). Validation numbers (`val_*`) are for model selection only.

Deviations from the paper / the authors' code (and why)
    * Model selection on the validation split's IW-NLL, test reported once at the end (the authors report
      test after every epoch). The same rule as ivae.py, so the two compare on equal terms.
    * MI (He et al.'s estimator) pools all sentences of the split as q(x) instead of averaging estimates
      of batches of 32+, whose log q(z) term is capped near log(batch size); a lower-bias version.
    * Cyclical annealing follows Fu et al. (2019) exactly (beta from 0 within each cycle); the other
      schedules start at beta_start = 0.1 like the authors' iVAE runs.
    * bf16 autocast by default where the hardware has it natively (--precision auto; the authors: fp32):
      1.3-1.4x less wall time on the 2-core CPU, rec and IW-NLL within seed noise (README).
    * On a GPU each training step is replayed from a CUDA graph, one per batch shape (data.CudaGraphs;
      --cuda_graph off runs it eagerly): the same arithmetic, 2.0 against 5.3 ms a step on an H200 (README).
"""
from __future__ import annotations

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
# PAPER §2: the model. Encoder LSTM -> h -> (mu, logvar); decoder LSTM p(x|z). (Same as ivae.py.)
# ----------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """LSTM over the sentence; its last state h summarises x."""

    def __init__(self, vocab_size: int, emb_dim: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb_dim)
        self.rnn = nn.LSTM(emb_dim, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))                                   # (B, T, H)
        return out[torch.arange(x.shape[0], device=x.device), lengths - 1]   # (B, H): state at </s>


class GaussianPosterior(nn.Module):
    """q(z|x) = N(mu, diag exp(logvar)), both read off h by one Linear; z = mu + sigma * eps."""

    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 2 * latent)

    def forward(self, h: torch.Tensor):
        mu, logvar = self.linear(h).chunk(2, -1)                         # (B, Z), (B, Z)
        return mu, logvar

    @staticmethod
    def sample(mu, logvar, n_samples: int, generator=None) -> torch.Tensor:
        eps = torch.randn(mu.shape[0], n_samples, mu.shape[1], device=mu.device, generator=generator)
        return mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps   # (B, S, Z)


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


class VAE(nn.Module):
    def __init__(self, cfg: Config, vocab_size: int):
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg.emb_dim, cfg.hidden)
        self.posterior = GaussianPosterior(cfg.hidden, cfg.latent)
        self.decoder = Decoder(vocab_size, cfg.emb_dim, cfg.hidden, cfg.latent, cfg.dropout)


def build(cfg: Config, vocab_size: int, device) -> VAE:
    model = VAE(cfg, vocab_size)
    for p in model.parameters():
        nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
    return model.to(device)


def optimizer(model: VAE, cfg: Config, capturable: bool = False):
    """Adam (lr); fused=True updates every tensor in one kernel (README, Table 3). capturable=True (GPU
    only) keeps its state on the GPU so that a CUDA graph can replay its steps (data.CudaGraphs)."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True, capturable=capturable)


# ----------------------------------------------------------------------------------------------------
# PAPER §2, Eq. (3): the objective, and the KL-weight schedules of §5.1
# ----------------------------------------------------------------------------------------------------

def sentence_nll(decoder: Decoder, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of each sentence: token NLLs summed over the sentence. x (N, T), z (N, Z) -> (N,)."""
    logits, _ = decoder(x[:, :-1], z)                                    # (N, T-1, V)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                          ignore_index=data.PAD_ID, reduction="none")
    return nll.view(x.shape[0], -1).sum(1)                               # (N,)


def beta_at(step: int, steps_per_epoch: int, total_steps: int, cfg: Config) -> float:
    r"""The KL weight at a step (0-based), never above cfg.beta.

        monotonic: min(beta, beta_start + (1 - beta_start) * step / (warmup_epochs * steps_per_epoch))
        cyclical (Fu et al. 2019, Eq. 6): period L = ceil(total_steps / M), tau = (step mod L) / L,
                   beta * min(1, tau / R)
        none:      beta
    """
    if cfg.anneal == "none":
        return cfg.beta
    if cfg.anneal == "cyclical":
        period = math.ceil(total_steps / cfg.cycles)
        tau = (step % period) / period
        return cfg.beta * min(1.0, tau / cfg.ratio)
    if cfg.warmup_epochs <= 0:
        return cfg.beta
    return min(cfg.beta, cfg.beta_start + (1.0 - cfg.beta_start) * step / (cfg.warmup_epochs * steps_per_epoch))


def train_step(model: VAE, opt, batch: data.Batch, beta: float | torch.Tensor, cfg: Config, autocast) -> dict:
    """One step on -ELBO = rec + beta * KL (Eq. 3, with the reparameterisation trick). beta: a float, or a
    0-d tensor when the step is replayed from a CUDA graph (data.CudaGraphs takes tensors only)."""
    x, lengths = batch.tokens, batch.lengths
    with autocast():
        h = model.encoder(x, lengths)                                    # (B, H)
    mu, logvar = model.posterior(h.float())                              # (B, Z), (B, Z)
    z = model.posterior.sample(mu, logvar, 1).squeeze(1)                 # (B, Z)
    with autocast():
        rec = sentence_nll(model.decoder, x, z).mean()                   # sum over tokens, mean over B
    kl = metrics.gaussian_kl(mu, logvar).mean()                          # sum over Z, mean over B
    loss = rec + beta * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return {"loss": loss.detach(), "rec": rec.detach(), "kl": kl.detach(), "grad_norm": grad_norm.detach()}


# ----------------------------------------------------------------------------------------------------
# Settings: the paper's (model, training, KL weight) first, then the run's. Every field is a --flag; 0
# means "the authors' value for this corpus" (data.LM_DEFAULTS) where said. run=True marks what --resume /
# --eval_only may change; the rest comes back from the checkpoint.
# ----------------------------------------------------------------------------------------------------

@dataclass
class Config(data.RunConfig):
    # model
    emb_dim: int = option(0, "word embedding size (0: 256 for PTB, 512 for Yahoo/Yelp)", low=0)
    hidden: int = option(0, "LSTM hidden size of encoder and decoder (0: 256 PTB, 1024 Yahoo/Yelp)", low=0)
    latent: int = option(32, "latent dimensions Z", low=1)
    dropout: float = option(0.5, "dropout on decoder input embeddings and before its output layer")
    init_range: float = option(0.0, "uniform init range of all weights (0: 0.1 PTB, 0.01 Yahoo/Yelp)", low=0)
    # training and the KL weight (§5.1)
    batch_size: int = option(32, "sentences per batch (equal-length batches)", low=1)
    lr: float = option(0.0, "Adam learning rate (0: 1e-3 PTB, 8e-4 Yahoo/Yelp)", low=0)
    clip: float = option(5.0, "gradient-norm clip", low=0)
    anneal: str = option("monotonic", "KL weight schedule", choices=["monotonic", "cyclical", "none"])
    beta: float = option(1.0, "largest KL weight (beta-VAE: 0.5); the schedules never exceed it")
    beta_start: float = option(0.1, "monotonic: KL weight at step 0")
    warmup_epochs: float = option(10.0, "monotonic: epochs over which beta rises from beta_start", low=0)
    cycles: int = option(4, "cyclical: number of cycles M over the whole run (Fu et al.: 4)", low=1)
    ratio: float = option(0.5, "cyclical: fraction R of each cycle during which beta rises (Fu et al.: 0.5)")
    # the run: the command-line contract every script shares is data.RunConfig (--data --seed --out_dir
    # --epochs --max_steps --resume --eval_only --threads ...); here its default out_dir
    out_dir: str = option("runs/vae", "where config.json, log.csv, metrics.json, checkpoints and plots go",
                          run=True)
    cuda_graph: str = option("step", "on a GPU, replay each training step from a CUDA graph, one per batch "
                                     "shape (step), or run it eagerly (off); the same arithmetic (data.CudaGraphs)",
                             choices=["step", "off"], run=True)
    # evaluation
    eval_samples: int = option(128, "posterior samples per sentence for rec (as ivae.py)", low=1, run=True)
    iw_samples: int = option(500, "importance samples per sentence for the final test IW bound (He et al.)",
                             low=0, run=True)
    val_samples: int = option(8, "posterior samples per sentence at validation (selection only)", low=1, run=True)
    val_iw_samples: int = option(8, "importance samples per sentence at validation (selection only)", low=0,
                                 run=True)
    val_limit: int = option(800, "validate on N sentences spread evenly over the validation split (0: all)",
                            low=0, run=True)
    val_every: int = option(0, "validate every N training steps (0: at the end of every epoch)", low=0, run=True)
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

def train(cfg, corpus, model, opt, state, device, log: data.CsvLog) -> int:
    """Train from state["step"] to the end (epochs or max_steps); validate after every epoch and keep
    the checkpoint with the best validation IW-NLL in best.pt. Returns the last step."""
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed)
    valid = corpus.examples["valid"][:cfg.eval_limit] if cfg.eval_limit else corpus.examples["valid"]
    if cfg.val_limit and cfg.val_limit < len(valid):                     # an even spread, fixed for the run
        valid = valid[::len(valid) // cfg.val_limit][:cfg.val_limit]
    test = corpus.examples["test"][:cfg.eval_limit] if cfg.eval_limit else corpus.examples["test"]

    def passes(n, S, K):                           # decoder passes of an evaluation: the bulk of its time
        return n * max(S, K)                       # one draw of q(z|x) serves rec and IW
    test_in_validations = passes(len(test), cfg.eval_samples, cfg.iw_samples) / \
        passes(len(valid), cfg.val_samples, cfg.val_iw_samples)
    val_seconds = None                                                   # wall time of the last validation
    steps_per_epoch = len(batcher)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    schedule_steps = cfg.epochs * steps_per_epoch                        # cycles span the planned run
    step, best = state["step"], state["best"]
    # Speed (GPU): each training step replayed from a CUDA graph, one per batch shape (data.CudaGraphs
    # says why and how; recording needs autocast's weight cache off). On the CPU a plain call.
    graphs = device.type == "cuda" and cfg.cuda_graph == "step"
    autocast = data.autocast_for(device, cfg.precision, cache=not graphs)
    step_fn = data.CudaGraphs(lambda x, lengths, beta: train_step(model, opt, data.Batch(x, lengths), beta, cfg,
                                                                  autocast), enabled=graphs)
    ckpt_path, best_path = os.path.join(cfg.out_dir, "checkpoint.pt"), os.path.join(cfg.out_dir, "best.pt")

    t_begin = time.time() - state["train_time_s"]                        # train_time_s sums every process

    def save(path=ckpt_path, validated=True):               # state dicts + config + step + RNG states
        data.save_checkpoint({"script": data.script_of(cfg), "config": asdict(cfg), "vocab": corpus.vocab.state_dict(),
                              "model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                              "rng": data.rng_state(), "validated": validated,
                              "train_time_s": time.time() - t_begin}, path)

    def validate():                                                      # selection on IW-NLL
        nonlocal best, val_seconds, t0
        print(f"validating at step {step}", flush=True)
        t_val = time.time()
        with stop.interruptible():                                       # the first Ctrl-C stops it at once
            row, _, _ = evaluate(model, valid, cfg, device, cfg.val_samples, cfg.val_iw_samples)
        val_seconds = time.time() - t_val
        t0 += val_seconds                                                # steps/s counts training only
        beta = beta_at(step - 1, steps_per_epoch, schedule_steps, cfg)  # as in the last training step
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
                beta = beta_at(step, steps_per_epoch, schedule_steps, cfg)
                out = step_fn(batch.tokens, batch.lengths, torch.tensor(beta))
                step += 1
                for k, v in out.items():
                    acc[k] = acc.get(k, 0) + v                       # device tensors: no sync per step
                n_acc += 1
                validating = step % steps_per_epoch == 0 or (cfg.val_every and step % cfg.val_every == 0)
                saving = validating or step % cfg.save_every == 0 or step >= total or stop.requested
                if step % cfg.log_every == 0 or saving:
                    means = {k: float(v) / n_acc for k, v in acc.items()}   # one device sync per interval
                    data.check_finite(means, step, ckpt_path, "Lower --lr, or use --precision fp32.")
                if step % cfg.log_every == 0 or step == total:
                    dt = time.time() - t0
                    eta = data.eta_minutes(step, total, dt / n_acc, steps_per_epoch, cfg.val_every, val_seconds,
                                           test_in_validations)
                    print(f"step {step:>6}/{total} | ep {step / steps_per_epoch:5.2f} | rec {means['rec']:7.2f} | "
                          f"KL {means['kl']:6.2f} | beta {beta:.3f} | |g| {means['grad_norm']:5.2f} | "
                          f"{n_acc / dt:5.1f} step/s {tokens / dt:7.0f} tok/s | {eta}", flush=True)
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
# PAPER §5.1: evaluation (rec, KL, MI, AU, -ELBO, PPL) and the IW bound
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


def diag_gaussian_logpdf(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last dimension."""
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


@torch.no_grad()
def evaluate(model: VAE, examples: list, cfg: Config, device, n_samples: int, iw_samples: int,
             keep_samples: int = 0, progress: str = ""):
    r"""All §5.1 metrics of one split. q(z|x) is Gaussian, so KL, MI and the IW proposal are exact:

        rec  = mean_x mean_s -log p(x | z_s),  z_s ~ q(z|x)
        KL   = mean_x KL(q(z|x) || N(0, I))              (closed form, metrics.gaussian_kl)
        MI   = metrics.gaussian_mi over all sentences of the split, one sample each (exact densities,
               Monte-Carlo over z: the estimator of ivae.py's `mi_exact`); log_n = log N bounds it
        AU   = #dims with Var_x mu(x)_d >= 0.01;  -ELBO = rec + KL;  PPL = exp(sum (rec + KL) / #words)
        IW   = metrics.iw_bound with q(z|x) as the proposal (He et al. 2019),  IW-PPL = exp(sum IW / #words)
    One draw of max(S, K) samples per sentence serves both: rec averages all of them, IW uses the first K."""
    model.eval()
    # Evaluation's own randomness; the offsets added to cfg.seed here and below (12345, 777, 4242) are
    # arbitrary and only give each use its own reproducible stream, apart from training's.
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    autocast = data.autocast_for(device, cfg.precision)
    S, K = n_samples, iw_samples
    tot = {"rec": 0.0, "kl": 0.0, "iw": 0.0, "n": 0, "words": 0}
    mus, logvars, zs, kept = [], [], [], []
    prog = data.EvalProgress(examples, progress)                    # a line a minute with a label
    for batch in data.Batcher(examples, cfg.batch_size, shuffle=False).epoch(0):
        batch = batch.to(device)
        x, lengths = batch.tokens, batch.lengths
        with autocast():
            h = model.encoder(x, lengths).float()                        # (B, H)
        mu, logvar = model.posterior(h)
        z = GaussianPosterior.sample(mu, logvar, max(S, K), gen)         # (B, S', Z)
        with autocast():
            nll = batched_nll(model.decoder, x, z, metrics.EVAL_TOKENS[device.type])      # (B, S'), fp32 (sentence_nll)
        tot["rec"] += float(nll.double().mean(1).sum())
        tot["kl"] += float(metrics.gaussian_kl(mu, logvar).sum())
        if K:
            log_q = diag_gaussian_logpdf(z[:, :K].double(), mu.double().unsqueeze(1), logvar.double().unsqueeze(1))
            tot["iw"] += float(metrics.iw_bound(-nll[:, :K], z[:, :K], log_q).sum())
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
        zs.append(z[:, 0].cpu())
        if len(kept) < keep_samples:
            kept += list(z[:keep_samples - len(kept), :S].cpu())
        tot["n"] += x.shape[0]
        prog.add(lengths)
        tot["words"] += int((lengths - 1).sum())                         # words + </s>, not <s>
    n, words = tot["n"], tot["words"]
    mu_all = torch.cat(mus)
    au, au_var = metrics.active_units(mu_all)
    mi, mi_se = metrics.gaussian_mi(mu_all, torch.cat(logvars), torch.cat(zs), with_se=True)
    out = {"n_sentences": n, "n_words": words, "rec": tot["rec"] / n, "kl": tot["kl"] / n, "mi": mi,
           "mi_se": mi_se, "au": au, "log_n": math.log(n)}
    out.update(nelbo=out["rec"] + out["kl"], ppl=metrics.perplexity(tot["rec"] + tot["kl"], words))
    if K:
        out.update(iw_nll=tot["iw"] / n, iw_ppl=metrics.perplexity(tot["iw"], words), iw_samples=K)
    out["eval_samples"] = S
    model.train()
    return out, au_var, (torch.stack(kept) if kept else None)


# ----------------------------------------------------------------------------------------------------
# Sampling from the prior and interpolation (Table 4)
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
def interpolate(model: VAE, vocab: data.Vocab, a: str, b: str, cfg: Config, device) -> list:
    """Greedy decodes of z_t = (1 - t) mu_a + t mu_b for t = 0, 0.1, ..., 1 (Table 4; for a Gaussian
    posterior the mean of its samples is mu)."""
    model.eval()
    ends = []
    for sentence in (a, b):
        x = torch.tensor([vocab.encode(sentence.lower().split())], device=device)
        ends.append(model.posterior(model.encoder(x, torch.tensor([x.shape[1]], device=device)).float())[0])
    ts = [i / 10 for i in range(11)]
    z = torch.cat([(1 - t) * ends[0] + t * ends[1] for t in ts])         # (11, Z)
    lines = [" ".join(vocab.decode(ids)) for ids in decode(model.decoder, z, cfg.max_decode_len)]
    model.train()
    return [f"{t:.1f}\t{line}" for t, line in zip(ts, lines)]


def write_samples(model: VAE, vocab: data.Vocab, cfg: Config, device, path: str) -> list:
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


def forward_reverse(model: VAE, corpus: data.Corpus, cfg: Config, device, path: str) -> dict:
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
    if not 0 < cfg.beta <= 1 or not 0 <= cfg.beta_start <= 1:
        parser.error(f"--beta must be in (0, 1] and --beta_start in [0, 1], got {cfg.beta}, {cfg.beta_start}")
    if not 0 < cfg.ratio <= 1:
        parser.error(f"--ratio must be in (0, 1], got {cfg.ratio}")
    if cfg.resume and cfg.eval_only:
        parser.error("--resume and --eval_only exclude each other")
    if cfg.skip_test and not cfg.eval_only:
        parser.error("--skip_test goes with --eval_only (a training run always ends with its test)")


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "Gaussian text VAE baselines (VAE, beta-VAE, cyclical)", argv)
    check_config(cfg, parser)
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    ckpt = data.open_run(cfg, parser, data.run_control(Config), device)
    state = {"step": 0, "best": None, "validated": True, "train_time_s": 0.0}      # a fresh run; or resumed:
    state.update({k: ckpt[k] for k in state if k in ckpt} if ckpt else {})
    data.set_seed(cfg.seed)
    try:
        splits = (("train", "test") if cfg.fwd_rev_ppl else ("test",)) if cfg.eval_only else ("train", "valid", "test")
        vocab = data.Vocab.from_state_dict(ckpt["vocab"]) if ckpt else None
        corpus = data.load_corpus(cfg.data, cfg.data_dir, splits, vocab=vocab, allow_bad_lines=cfg.allow_bad_lines)
    except data.DataError as err:
        parser.error(str(err))
    if not (cfg.resume or cfg.eval_only):                # the authors' sizes for the corpus, unless given
        data.lm_defaults(cfg, corpus.spec.name if cfg.data in data.CORPORA else "ptb", parser.given)
    os.makedirs(cfg.out_dir, exist_ok=True)
    print(f"device: {data.describe_device(device)}, precision {data.precision_in_use(device, cfg.precision)}")
    print(f"corpus {corpus.spec.name}: " + ", ".join(f"{s} {len(e):,}" for s, e in corpus.examples.items())
          + f" sentences, vocabulary {len(corpus.vocab):,}")

    model = build(cfg, len(corpus.vocab), device)
    opt = optimizer(model, cfg, capturable=device.type == "cuda" and cfg.cuda_graph == "step")
    if ckpt:
        model.load_state_dict(ckpt["model"])
        if not cfg.eval_only:
            opt.load_state_dict(ckpt["opt"])
            for group in opt.param_groups:                         # this device's setting, not the saved one
                group["capturable"] = device.type == "cuda" and cfg.cuda_graph == "step"
            data.set_rng_state(ckpt["rng"])
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}; anneal {cfg.anneal}, beta <= {cfg.beta}")
    if not cfg.eval_only:                                          # --eval_only keeps the run's own config
        data.write_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    # A resume drops the log's rows after the checkpoint (and its step's row if it still awaits its
    # validation); --eval_only leaves log.csv as it is.
    log = data.CsvLog(os.path.join(cfg.out_dir, "log.csv"), read_only=cfg.eval_only,
                      resume_step=state["step"] - (not state["validated"]) if ckpt else None)

    t_start = time.time()
    if not cfg.eval_only:
        try:
            state["step"] = train(cfg, corpus, model, opt, state, device, log)
        except FloatingPointError as err:
            raise SystemExit(f"stopped: {err}")
        state["selected_step"] = data.load_selected(cfg.out_dir, device, {"model": model})   # the selected model
    train_time = state["train_time_s"] + time.time() - t_start                # over every process of the run

    t_test = time.time()
    examples = corpus.examples["test"][:cfg.eval_limit] if cfg.eval_limit else corpus.examples["test"]
    if cfg.skip_test:                                              # the row this checkpoint already has
        result, au_var, kept = data.saved_test_row(cfg.out_dir, state["step"], parser), None, None
    else:
        result, au_var, kept = evaluate(model, examples, cfg, device, cfg.eval_samples, cfg.iw_samples, keep_samples=5,
                                        progress="test")
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

    for line in write_samples(model, corpus.vocab, cfg, device, os.path.join(cfg.out_dir, "samples.txt"))[:4]:
        print("sample:", line)
    if cfg.interpolate:
        lines = interpolate(model, corpus.vocab, *cfg.interpolate, cfg, device)
        with open(os.path.join(cfg.out_dir, "interpolation.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
    rows = [r for r in log.rows() if r.get("split") == "valid"]
    metrics.plot_curves(rows, ["rec", "kl", "beta", "mi", "au", "iw_nll"], os.path.join(cfg.out_dir, "curves.png"))
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

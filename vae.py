r"""Gaussian text VAEs: the baselines of Fang et al. (EMNLP 2019), Table 2 (VAE, beta-VAE, cyclical VAE).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Baselines: VAE with KL annealing (Bowman et al. 2016), beta-VAE (Higgins et al. 2017),
cyclical annealing (Fu et al., NAACL 2019). ivae.py's LSTM encoder and decoder (copied on purpose: each
script reads on its own), but q(z|x) = N(mu(h_x), diag sigma^2(h_x)): the KL has a closed form.

Paper section -> code section
    §2   Eq. (1)-(3)  ELBO = E_q log p(x|z) - KL(q(z|x) || p(z))  -> VAE.forward, train_step (metrics.gaussian_kl)
    §5.1              KL annealing / beta / cyclical schedules     -> beta_at
    §5.1              MI (He et al. 2019), AU, PPL, IW-NLL         -> evaluate (metrics.LMEvaluation)
    Table 4           interpolation (--interpolate)                -> main, metrics.interpolation
    Table 5           forward / reverse PPL (--fwd_rev_ppl)        -> main, metrics.prior_forward_reverse

Run
    python vae.py --data ptb                       # GPU if present, else CPU; VAE, beta 0.1 -> 1 over 10 epochs
    python vae.py --data ptb --beta 0.5            # beta(0.5)-VAE
    python vae.py --data ptb --anneal cyclical --cycles 4 --ratio 0.5      # Fu et al. (2019)
    python vae.py --data ptb --eval_only --skip_test --fwd_rev_ppl   # Table 5 for a finished run

Shapes: B sentences, T tokens (<s> ... </s>), V vocabulary, E embedding, H hidden, Z latent, S posterior
and K importance samples per sentence. Minimised: -ELBO = rec + beta * KL, rec the token NLL summed over a
sentence, KL summed over latent dimensions, both averaged over sentences.

What the numbers are (docs/honest_evaluation.md): -ELBO = rec + KL (beta = 1) and `iw_nll` (q(z|x) the
proposal, He et al. 2019) are upper bounds on -log p(x); `mi` is exact but for Monte-Carlo over z (`mi_se`
its standard error; `log_n` = log N bounds it). Validation rows (`valid`) are for model selection only.

Deviations from the paper / the authors' code (and why)
    * Model selection on the validation IW-NLL, one test at the end, as ivae.py, so the two compare on
      equal terms (the authors report test after every epoch).
    * MI (He et al.'s estimator) pools the whole split as q(x), not batches of 32+ whose log q(z) term is
      capped near log(batch size): less biased.
    * Cyclical annealing exactly as Fu et al. (2019) (beta from 0 within each cycle); the other schedules
      start at beta_start = 0.1 like the authors' iVAE runs.
    * bf16 autocast by default where the hardware has it (--precision auto; the authors: fp32), and on a
      GPU each training step is replayed from a CUDA graph: results/bench/README.md has both measured.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import option


# ----------------------------------------------------------------------------------------------------
# PAPER §2, §5.1: the knobs, with the authors' PTB values (Yahoo/Yelp: data.LM_DEFAULTS). Run flags: LMConfig
# ----------------------------------------------------------------------------------------------------

@dataclass
class Config(data.LMConfig):
    # model (§5.1)
    emb_dim: int = option(256, "word embedding size (authors: 256 PTB, 512 Yahoo/Yelp)", low=1)
    hidden: int = option(256, "LSTM hidden size of encoder and decoder (authors: 256 PTB, 1024 Yahoo/Yelp)", low=1)
    latent: int = option(32, "latent dimensions Z", low=1)
    dropout: float = option(0.5, "dropout on decoder input embeddings and before its output layer")
    init_range: float = option(0.1, "uniform init range of all weights (authors: 0.1 PTB, 0.01 Yahoo/Yelp)", low=0)
    # training and the KL weight (§5.1)
    batch_size: int = option(32, "sentences per batch (equal-length batches)", low=1)
    lr: float = option(1e-3, "Adam learning rate (authors: 1e-3 PTB, 8e-4 Yahoo/Yelp)", low=0)
    clip: float = option(5.0, "gradient-norm clip", low=0)
    anneal: str = option("monotonic", "KL weight schedule", choices=["monotonic", "cyclical", "none"])
    beta: float = option(1.0, "largest KL weight (beta-VAE: 0.5); the schedules never exceed it")
    beta_start: float = option(0.1, "monotonic: KL weight at step 0")
    warmup_epochs: float = option(10.0, "monotonic: epochs over which beta rises from beta_start", low=0)
    cycles: int = option(4, "cyclical: number of cycles M over the whole run (Fu et al.: 4)", low=1)
    ratio: float = option(0.5, "cyclical: fraction R of each cycle during which beta rises (Fu et al.: 0.5)")
    out_dir: str = option("runs/vae", "where config.json, log.csv, metrics.json, checkpoints and plots go", run=True)


# ----------------------------------------------------------------------------------------------------
# PAPER §2: the model. Encoder LSTM -> h -> (mu, logvar) -> z; decoder LSTM p(x|z). (Same as ivae.py.)
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


class GaussianPosterior(nn.Module):
    """q(z|x) = N(mu, diag exp(logvar)), both read off h by one Linear, and S samples of it by the
    reparameterisation trick: z = mu + sigma * eps, eps ~ N(0, I)."""

    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 2 * latent)

    def forward(self, h: torch.Tensor, n_samples: int, generator=None):
        mu, logvar = self.linear(h).chunk(2, -1)                         # (B, Z), (B, Z)
        eps = torch.randn(mu.shape[0], n_samples, mu.shape[1], device=mu.device, generator=generator)
        return mu, logvar, mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps   # ..., (B, S, Z)


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


class VAE(nn.Module):
    """Encoder -> q(z|x) -> decoder. forward() draws z ~ q(z|x); nll() scores x under the decoder."""

    def __init__(self, cfg: Config, vocab_size: int):
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg.emb_dim, cfg.hidden)
        self.posterior = GaussianPosterior(cfg.hidden, cfg.latent)
        self.decoder = Decoder(vocab_size, cfg.emb_dim, cfg.hidden, cfg.latent, cfg.dropout)
        self.autocast = contextlib.nullcontext                           # build() sets --precision's

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, n_samples: int = 1, generator=None):
        """(mu (B, Z), logvar (B, Z), z (B, S, Z)): q(z|x) and S samples of it. q's Linear runs in fp32."""
        with self.autocast():
            h = self.encoder(x, lengths).float()                         # (B, H)
        return self.posterior(h, n_samples, generator)                   # (B, Z), (B, Z), (B, S, Z)

    def nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per sentence, token NLLs summed (padding ignored), in fp32. x (N, T), z (N, Z) -> (N,)."""
        with self.autocast():
            logits, _ = self.decoder(x[:, :-1], z)                       # (N, T-1, V)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              ignore_index=data.PAD_ID, reduction="none")
        return nll.view(x.shape[0], -1).sum(1)                           # (N,)


def build(cfg: Config, vocab_size: int, device):
    """The model, initialised uniform(+-init_range) as the authors do, and its Adam (lr)."""
    model = VAE(cfg, vocab_size)
    for p in model.parameters():
        nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
    graph = device.type == "cuda" and cfg.cuda_graph == "step"   # PLUMBING (speed): fused Adam, GPU-held state
    model.autocast = data.autocast_for(device, cfg.precision, cache=not graph)
    return model.to(device), torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True, capturable=graph)


# ----------------------------------------------------------------------------------------------------
# PAPER §2, Eq. (1)-(3): the objective; §5.1: the KL-weight schedules
# ----------------------------------------------------------------------------------------------------

def train_step(model: VAE, opt, x: torch.Tensor, lengths: torch.Tensor, beta: float, cfg: Config) -> dict:
    """One step on -ELBO, with the reparameterisation trick. x (B, T) a batch of equal-length sentences."""
    mu, logvar, z = model(x, lengths)                                    # (B, Z), (B, Z), (B, 1, Z)
    z = z.squeeze(1)                                                     # (B, Z): one sample per sentence
    # Eq. (1)-(3): ELBO = L_E + L_R, L_E = E_q log p(x|z) (2), L_R = -KL(q(z|x) || p(z)) (3).
    rec = model.nll(x, z).mean()                                         # -L_E: sum over tokens, mean over B
    kl = metrics.gaussian_kl(mu, logvar).mean()                          # -L_R, closed form: sum over Z, mean over B
    loss = rec + beta * kl                                               # -ELBO, the KL weighted by beta (§5.1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return {"loss": loss.detach(), "rec": rec.detach(), "KL": kl.detach(), "|g|": grad_norm.detach()}


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


# ----------------------------------------------------------------------------------------------------
# PAPER §5.1: the training loop (40 epochs, the KL schedule, selection on the validation IW-NLL)
# ----------------------------------------------------------------------------------------------------

def train(cfg: Config, corpus: data.Corpus, model: VAE, opt, run: data.Run) -> None:
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed)
    valid = data.spread(data.first(corpus.examples["valid"], cfg.eval_limit), cfg.val_limit)
    test = data.first(corpus.examples["test"], cfg.eval_limit)
    schedule_steps = cfg.epochs * len(batcher)                           # the cycles span the planned run
    # PLUMBING (speed, GPU only): each step replayed from a CUDA graph, one per batch shape; same arithmetic.
    step_fn = data.CudaGraphs(train_step, enabled=run.device.type == "cuda" and cfg.cuda_graph == "step")

    def validate(step: int, probe: bool = False) -> dict:          # probe: 32 sentences, for the first ETA
        row, _, _ = evaluate(model, data.spread(valid, data.PROBE_SENTENCES) if probe else valid, cfg,
                             cfg.val_samples, cfg.val_iw_samples, run.device)
        return {"beta": beta_at(step - 1, len(batcher), schedule_steps, cfg), **row}   # the last step's beta

    with run.training(len(batcher), validate, len(valid), len(test)):
        for batch in run.batches(batcher):
            beta = beta_at(run.step, len(batcher), schedule_steps, cfg)
            out = step_fn(model, opt, batch.tokens, batch.lengths, beta, cfg)
            run.after_step(out, beta)


# ----------------------------------------------------------------------------------------------------
# PAPER §5.1: evaluation. q(z|x) is Gaussian: KL, MI and the IW proposal are exact (formulas: metrics.py)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: VAE, examples: list, cfg: Config, S: int, K: int, device, keep: int = 0, progress: str = ""):
    """Every §5.1 metric of `examples`, S posterior and K importance samples per sentence.
    Returns (row, per-dimension AU variance, posterior samples of the first `keep` sentences)."""
    model.eval()
    ev = metrics.LMEvaluation(device, seed=cfg.seed + 12345, n_samples=S)   # evaluation's own randomness
    prog = data.EvalProgress(examples, progress)                        # a line a minute with a label
    for batch in data.Batcher(examples, cfg.batch_size, shuffle=False).epoch(0):
        batch = batch.to(device)
        x, lengths = batch.tokens, batch.lengths
        mu, logvar, z = model(x, lengths, max(S, K), ev.gen)             # (B, Z), (B, Z), (B, S', Z), S' = max(S, K)
        nll = metrics.chunked_nll(model.nll, x, z, metrics.EVAL_TOKENS[device.type])   # (B, S')
        ev.add_rec(nll)                                                  # rec: all S' samples
        ev.add_gaussian(mu, logvar, -nll[:, :K], z)                      # KL, IW (the first K, q the proposal), MI
        ev.keep(z[:, :S], keep)
        ev.add_batch(lengths)
        prog.add(lengths)
    model.train()
    return ev.row()


# ----------------------------------------------------------------------------------------------------
# PLUMBING: main(): parse, load, train, test; then Table 4 / 5's decoding (metrics.decode and co.)
# ----------------------------------------------------------------------------------------------------

def check_config(cfg: Config, parser) -> None:
    """Bad values are parser errors: Config's bounds, then what no bound can say (the rest: data.Run)."""
    data.check_bounds(cfg, parser)
    for name, ok, span in [("dropout", 0 <= cfg.dropout < 1, "[0, 1)"), ("beta", 0 < cfg.beta <= 1, "(0, 1]"),
                           ("beta_start", 0 <= cfg.beta_start <= 1, "[0, 1]"), ("ratio", 0 < cfg.ratio <= 1, "(0, 1]")]:
        if not ok:
            parser.error(f"--{name} must be in {span}, got {getattr(cfg, name)}")


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "Gaussian text VAE baselines (VAE, beta-VAE, cyclical)", argv)
    check_config(cfg, parser)
    run = data.Run(cfg, parser, shared_samples=True)
    corpus = run.load_corpus((("train", "test") if cfg.fwd_rev_ppl else ("test",)) if cfg.eval_only
                             else ("train", "valid", "test"))
    model, opt = build(cfg, len(corpus.vocab), run.device)
    run.restore(model=model, opt=opt)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}; anneal {cfg.anneal}, beta <= {cfg.beta}")
    if not cfg.eval_only:
        train(cfg, corpus, model, opt, run)

    # The final test (best.pt's model), then the extras.
    test = data.first(corpus.examples["test"], cfg.eval_limit)
    result, au_var, kept = run.test(lambda: evaluate(model, test, cfg, cfg.eval_samples, cfg.iw_samples, run.device,
                                                     keep=5, progress="test"))
    dec = lambda z, temperature, gen: metrics.decode(model.decoder, z, cfg.max_decode_len,   # noqa: E731
                                                     data.BOS_ID, data.EOS_ID, temperature, gen)
    model.eval()                                                         # for the extras
    # Table 4: z of a sentence = mu, the mean of q(z|x)
    code_of = lambda x: model.posterior(model.encoder(x, x.new_tensor([x.shape[1]])).float(), 0)[0]  # noqa: E731
    result.update(metrics.lm_samples(dec, corpus.vocab, corpus.examples, cfg, run.device,   # Tables 4, 5, samples
                                     specials=(data.PAD, data.BOS, data.EOS), code_of=code_of))
    run.write_results(result)
    metrics.plot_run(run.valid_rows(), ["rec", "kl", "beta", "mi", "au", "iw_nll"], cfg.out_dir, au_var, kept)
    run.wrote()
    return result


if __name__ == "__main__":
    data.run_script(main)

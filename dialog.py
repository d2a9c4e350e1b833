r"""Dialog response generation with implicit latents (Fang et al., EMNLP 2019, §5.3, Table 8).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Model and training follow the authors' code (github.com/fangleai/Implicit-LVM), cited as
M:line = dialog_dailydial/models_dailydial.py and T:line = dialog_dailydial/train_dailydial.py (the
dialog_switchboard/ files differ in the KL weight only); it builds on DialogWAE (Gu et al., ICLR 2019).

A response x answers a context c (its previous <= 10 utterances). The posterior q(z|x,c) and the prior
p(z|c) are both implicit: an MLP gives a Gaussian sample e, a generator MLP maps it to z (200-d), so
neither has a density. Their KL is estimated through its Fenchel dual with a critic nu(z, c) (§5.3
"Model Extension"); the decoder GRU starts from cat(z, c). At test time z comes from the prior.

Paper section -> code section
    §5.3 encoders, posterior, prior, critic, decoder      -> "Model" (each layer with its M:line)
    §5.3 dual KL(q(z|x,c) || p(z|c)) (Eq. 7-9 form)       -> train_step: the authors' three steps (T:253-332)
    Table 8 BLEU-R/P/F1, BOW-A/E/G, intra/inter-dist-1/2 -> response_scores (metrics.py)
    does the prior work? rec / rec_prior / rec_shuffled, dual estimates, a two-sample test, *_other -> evaluate

Run (the authors' model and schedule: 100 epochs, StepLR x0.6 every 10)
    python dialog.py --data dailydialog --embeddings ../shared/data/glove/glove.6B.50d.dialog.txt --embed_init random
    python dialog.py --out_dir runs/dialog --resume                  # after an interruption (Ctrl-C saves)
    python dialog.py --data switchboard --cuda                       # needs switchboard's train.jsonl
    python dialog.py --max_steps 300 --eval_limit 100 --threads 1 --out_dir /tmp/dd         # smoke
    python dialog.py --eval_only --context "hi ." --context "how are you ?"    # ten responses to your context
    printf 'hi .\n\nhow are you ?\n' | python dialog.py --eval_only --context -  # blank-line separated

Shapes: B examples, C context utterances, U tokens per utterance, T response tokens, N utterances, E
embedding, H utterance-encoder hidden (each way), Hc context hidden, Z latent, K responses per context.

BatchNorm and the dual estimate. BatchNorm sits in q, p, both generators and the critic, in train mode all
through training (T:233). The critic sees the posterior and the prior samples in two separate passes (T:297,
323), each normalised in every BN layer by its own batch's mean and variance. So in training nu(z_i, c_i)
depends on the other samples of its pass, and a prior whose z are all offset by one vector from the
posterior's is invisible to it (BN subtracts the shift): E_q nu - E_p exp(nu) + 1 then measures a divergence
of batch-standardised features, not KL(q||p), and bounds nothing. In eval mode (running averages) nu is a
function of (z, c). Reported: `kl` (training log) and `dual_batch` (validation) by batch statistics, `dual`
in eval mode; rec_prior, rec_shuffled and the two-sample test do not use the critic.

Deviations from the authors' code (and why)
    * Batches (--batching mixed): 32 random responses; the authors' (the n-th turns of 32 dialogs, their
      data.py:153-204) mix lengths too. One length bucket per batch (--batching length, the 2026-12 run) hands
      BatchNorm each batch's length, which eval mode lacks: 4-6 nats of rec (results/dailydialog/README.md).
    * Contexts hold up to 10 previous utterances, as §5.3 says (the authors' window holds 9, T:15).
    * Embeddings: the authors' are GloVe Twitter 200-d (T:77), not here. --emb_dim 200 with --embed_init
      random: every row N(0, 0.1^2), as their rows of words missing from the file (their data.py:94), and
      --embeddings scores BOW only; or --embed_init file with --emb_dim = the file's (GloVe 6B 50-d here).
    * The embedding is stepped and clipped once; the authors' SGD and clip lists hold it twice (context encoder
      and decoder, M:316-319, T:272-273): an effective lr of 2 and a double count, an accident of a shared module.
    * A batch of one response is skipped (BatchNorm needs two); the authors drop an epoch's remainder.
    * Model selection on validation rec (best.pt); the authors test every epoch's model (T:339-342).
    * rec is reported per response (summed over tokens, the house convention); the loss is their token mean.
    * bf16 autocast by default where the hardware has it natively (--precision auto; the authors: fp32).
    * BOW over real words only (metrics.bow_similarity explains DialogWAE's padding quirks).
"""
import contextlib
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import option

INIT = 0.02          # uniform(-INIT, INIT), bias 0: every Linear of the MLPs (M:142-145, 330-333)
OUT_INIT = 0.1       # the same for the decoder's output layer (M:210-215)
EMB_STD = 0.1        # embedding rows not read from a file: N(0, 0.1^2) (the authors' data.py:94)


@dataclass
class Config(data.RunConfig):
    # the run: the flags every script shares are data.RunConfig's (--data --seed --out_dir --resume ...)
    data: str = option("dailydialog", "corpus", choices=["dailydialog", "switchboard"])
    out_dir: str = option("runs/dialog", "where config.json, log.csv, metrics.json, checkpoints go", run=True)
    epochs: int = option(100, "training epochs (the authors: 100)", low=1, run=True)
    embeddings: str = option("", "GloVe-format word vectors for the BOW metrics (and the embeddings' init)")
    embed_init: str = option("file", "rows from --embeddings (file; --emb_dim = its size) or N(0, 0.1^2) (random)",
                             choices=["file", "random"])
    samples_per_context: int = option(10, "responses sampled per test context (Table 8: 10)", low=1, run=True)
    # model (the authors' sizes, T:13-38)
    emb_dim: int = option(200, "word embedding size (the authors: 200)", low=1)
    utt_hidden: int = option(300, "utterance encoder: bidirectional GRU units each way", low=1)
    ctx_hidden: int = option(300, "context encoder GRU units", low=1)
    latent: int = option(200, "latent z", low=1)
    mlp_width: int = option(200, "width of the posterior and prior MLPs (the authors: = latent)", low=1)
    critic_width: int = option(600, "width of the critic's hidden layers (the authors: 2 x utt_hidden)", low=1)
    dropout: float = option(0.5, "dropout on the utterance encoder's and the decoder's input embeddings", low=0)
    ctx_dropout: float = option(0.25, "dropout on the context GRU's input", low=0)
    max_context: int = option(10, "previous utterances in a context window (§5.3: 10)", low=1)
    # training (the authors' schedule, T:13-38, M:316-326)
    batch_size: int = option(32, "examples per batch", low=2)
    batching: str = option("mixed", "training batches: random responses (as the authors'), or one length bucket "
                           "each (BatchNorm's statistics then carry the length)", choices=["mixed", "length"])
    ae_lr: float = option(1.0, "SGD learning rate of the autoencoder step", low=0)
    ae_decay: float = option(0.6, "StepLR factor of the autoencoder's learning rate", low=0)
    ae_decay_epochs: int = option(10, "StepLR period in epochs", low=1)
    clip: float = option(1.0, "gradient-norm clip of the encoders and the decoder (autoencoder step)", low=0)
    gen_lr: float = option(5e-5, "RMSprop learning rate of the posterior / prior step", low=0)
    nu_lr: float = option(1e-5, "RMSprop learning rate of the critic", low=0)
    nu_steps: int = option(5, "critic updates per iteration", low=0)
    beta: str = option("auto", "KL weight: auto (1 for DailyDialog; 0.1 -> 1 over 9 epochs for Switchboard), or a number")
    # evaluation
    eval_limit: int = option(0, "evaluate on the first N test contexts only (0: all)", low=0, run=True)
    bleu_n: int = option(3, "BLEU n of bleu_r/p/f1, bleu_nltk34_* (authors' code: 3); bleu4_* uses 4", low=1, run=True)
    max_decode_len: int = option(40, "longest response, in tokens (the authors' maxlen)", low=1, run=True)
    temperature: float = option(0.0, "0: greedy decoding (Table 8); > 0: sample softmax(logits / T)", low=0, run=True)
    responses_shown: int = option(50, "contexts written to responses.txt", low=0, run=True)
    warn_gap: float = option(0.1, "WARNING when rec_prior closes less than this share of rec_shuffled - rec", run=True)


# ----------------------------------------------------------------------------------------------------
# PAPER §5.3: the model
# ----------------------------------------------------------------------------------------------------

def mlp(sizes: list, act) -> nn.Sequential:
    """Linear-BatchNorm-act for each hidden layer, a plain Linear last; weights uniform(+-INIT), biases 0."""
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        nn.init.uniform_(mods[-1].weight, -INIT, INIT)
        nn.init.zeros_(mods[-1].bias)
        if i < len(sizes) - 2:
            mods += [nn.BatchNorm1d(sizes[i + 1]), act()]                # eps 1e-5, momentum 0.1 (M:129)
    return nn.Sequential(*mods)


def gru_final_states(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor, embed=None, drop=None) -> torch.Tensor:
    r"""The last hidden state of each row of x (N, L[, In]) over its first `lengths` (>= 1) steps from h0 = 0, as
    nn.GRU on a PackedSequence gives it, with `gru`'s own weights (one layer), written out for speed (nn.GRU's CPU
    backward on a PackedSequence grows with length x tokens; timings: results/dailydialog/bench_step.txt);
    `embed` and `drop` see the real tokens only. -> (N, H), or (N, 2H) = cat(forward, backward)."""
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    inp = embed(packed.data) if embed is not None else packed.data      # (S, In): step 0 of each row, step 1, ...
    inp, sizes, H = drop(inp) if drop is not None else inp, packed.batch_sizes, gru.hidden_size

    def direction(sfx: str, rows=None) -> torch.Tensor:                  # rows: the order to read inp's rows in
        gi = F.linear(inp, getattr(gru, "weight_ih_l0" + sfx), getattr(gru, "bias_ih_l0" + sfx))   # (S, 3H) at once
        w_hh, b_hh = getattr(gru, "weight_hh_l0" + sfx), getattr(gru, "bias_hh_l0" + sfx)
        h, ended = inp.new_zeros(int(sizes[0]), H), []
        for n_t, gi_t in zip(sizes.tolist(), (gi if rows is None else gi[rows]).split(sizes.tolist())):
            ended.append(h[n_t:])                                        # rows longest first: the short ones end
            h, gh = h[:n_t], F.linear(h[:n_t], w_hh, b_hh)               # (n_t, 3H): gates r, z, n
            # r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})     (torch.nn.GRU's equations)
            r, z = torch.sigmoid(gi_t[:, :2 * H] + gh[:, :2 * H]).chunk(2, 1)
            # n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h = lerp(n, h, z)
            n = torch.tanh(gi_t[:, 2 * H:] + r * gh[:, 2 * H:])
            h = torch.lerp(n.to(h.dtype), h, z.to(h.dtype))
        return torch.cat([h] + ended[::-1])                              # (N, H), longest first

    if not gru.bidirectional:
        return direction("")[packed.unsorted_indices]
    # The backward direction reads each row reversed: step t of row i is token L_i - 1 - t, in the same layout.
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)      # (S,) the step of each packed row
    first = sizes.cumsum(0) - sizes                                      # (T,) the first packed row of each step
    row = torch.arange(len(step)) - first[step]                          # (S,) the sequence of each packed row
    rows = first[lengths.cpu()[packed.sorted_indices.cpu()][row] - 1 - step] + row
    return torch.cat([direction(""), direction("_reverse", rows.to(inp.device))], -1)[packed.unsorted_indices]


class ContextEncoder(nn.Module):
    r"""The authors' UttEncoder and ContextEncoder (M:15-119) -> c (B, Hc) and the response's vector x (B, 2H).

        context (B, C, U) --real slots, <s> dropped (T:248)--> (N, U-1) --BiGRU--> (N, 2H) --back into the C
        slots, cat speaker one-hot--> (B, C, 2H+2) --GRU over the C_b utterances--> c (B, Hc)
        response (B, T) --<s> dropped (T:258)--> the same BiGRU, in the same pass --> x (B, 2H)"""

    def __init__(self, emb: nn.Embedding, cfg: Config):
        super().__init__()
        self.emb = emb                                                   # shared with the decoder (M:270-302)
        self.drop, self.ctx_drop = nn.Dropout(cfg.dropout), nn.Dropout(cfg.ctx_dropout)     # M:44, 103
        self.utt_rnn = nn.GRU(emb.embedding_dim, cfg.utt_hidden, batch_first=True, bidirectional=True)  # M:26
        self.ctx_rnn = nn.GRU(2 * cfg.utt_hidden + 2, cfg.ctx_hidden, batch_first=True)   # + 2: who spoke (M:78)

    def forward(self, batch: data.Batch) -> tuple:
        B, C, U = batch.context.shape
        lengths = batch.utt_lengths.view(-1)                             # (B*C,), 0 in empty slots
        real = (lengths > 0).nonzero().squeeze(1)                        # (N,) slots holding an utterance
        W = max(U, batch.tokens.shape[1]) - 1
        cut = lambda t: F.pad(t[:, 1:], (0, W - t.shape[1] + 1), value=data.PAD_ID)        # <s> dropped
        tokens = torch.cat([cut(batch.context.view(B * C, U)[real]), cut(batch.tokens)])    # (N + B, W)
        vec = gru_final_states(self.utt_rnn, tokens, torch.cat([lengths[real], batch.lengths]) - 1, self.emb, self.drop)
        utt = vec.new_zeros(B * C, vec.shape[1]).index_copy(0, real, vec[:len(real)])       # (B*C, 2H)
        inp = torch.cat([utt.view(B, C, -1), F.one_hot(batch.speakers, 2).to(vec.dtype)], -1)  # (B, C, 2H+2)
        return gru_final_states(self.ctx_rnn, inp, batch.context_lengths, drop=self.ctx_drop), vec[len(real):]


class Implicit(nn.Module):
    """An implicit distribution (M:122-193, 280-300, 335-343): e = mu + sigma * eps from a Gaussian MLP, then
    z = generator(e). q(z | x, c) takes cat(x, c) (M:278), p(z | c) takes c (M:276)."""

    def __init__(self, inp: int, width: int, latent: int):
        super().__init__()
        self.gauss = mlp([inp, width, width, 2 * latent], nn.Tanh)       # -> (mu, log sigma^2), M:127-136
        self.generator = mlp([latent, latent, latent, latent], nn.ReLU)  # M:280-288

    def forward(self, inp: torch.Tensor, generator=None) -> torch.Tensor:
        mu, logvar = self.gauss(inp).chunk(2, -1)                        # (B, Z) each
        eps = torch.randn(mu.shape, device=mu.device, generator=generator)
        return self.generator(mu + (0.5 * logvar).exp() * eps)           # e = mu + sigma eps (M:152-155) -> z


class DialogModel(nn.Module):
    def __init__(self, vocab_size: int, emb_dim: int, cfg: Config):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb_dim, padding_idx=data.PAD_ID)    # M:270
        self.encoder = ContextEncoder(self.emb, cfg)
        self.posterior = Implicit(2 * cfg.utt_hidden + cfg.ctx_hidden, cfg.mlp_width, cfg.latent)
        self.prior = Implicit(cfg.ctx_hidden, cfg.mlp_width, cfg.latent)
        self.nu = mlp([cfg.latent + cfg.ctx_hidden, cfg.critic_width, cfg.critic_width, 1],
                      lambda: nn.LeakyReLU(0.2))                         # the critic nu(z, c), M:305-314
        self.dec_drop = nn.Dropout(cfg.dropout)                          # M:224
        self.dec_rnn = nn.GRU(emb_dim, cfg.latent + cfg.ctx_hidden, batch_first=True)      # h0 = cat(z, c), M:302
        self.out = nn.Linear(cfg.latent + cfg.ctx_hidden, vocab_size)
        with torch.no_grad():
            self.emb.weight.normal_(0.0, EMB_STD)
            self.emb.weight[data.PAD_ID] = 0.0                           # T:116
            for w in [*self.encoder.utt_rnn.parameters(), *self.encoder.ctx_rnn.parameters(), *self.dec_rnn.parameters()]:
                if w.dim() > 1:
                    nn.init.orthogonal_(w)                               # the GRUs' weights, M:29-32, 81-84, 211-213
            self.out.weight.uniform_(-OUT_INIT, OUT_INIT)
            self.out.bias.zero_()

    def critic(self, z: torch.Tensor, c: torch.Tensor, batch_stats: bool = False) -> torch.Tensor:
        """nu(z, c) -> (B,), fp32 before exp. batch_stats: BatchNorm by this batch's statistics, as in training,
        also in eval mode and leaving the running averages alone (the `dual_batch` diagnostic)."""
        h = torch.cat([z, c], -1)
        for m in self.nu:
            bn = batch_stats and isinstance(m, nn.BatchNorm1d)
            h = F.batch_norm(h, None, None, m.weight, m.bias, True, 0.0, m.eps) if bn else m(h)
        return h.squeeze(-1).float()

    def decode_logits(self, x_in: torch.Tensor, z: torch.Tensor, c: torch.Tensor, state=None, logits=True):
        h0 = torch.cat([z, c], -1).unsqueeze(0) if state is None else state
        out, state = self.dec_rnn(self.dec_drop(self.emb(x_in)), h0)
        return self.out(out) if logits else out, state                   # (B, T, V), or (B, T, Hz + Hc)

    def nll(self, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """-log p(x | z, c) per response, summed over tokens. -> (B,)"""
        out, _ = self.decode_logits(x[:, :-1], z, c, logits=False)        # (B, T, H)
        # PLUMBING (speed): the output layer on real tokens only; a batch of mixed lengths is mostly <pad>
        real = x[:, 1:] != data.PAD_ID                                   # (B, T)
        return torch.zeros(real.shape, device=x.device).masked_scatter(   # (B,): summed over the tokens
            real, F.cross_entropy(self.out(out[real]).float(), x[:, 1:][real], reduction="none")).sum(1)


def make_optimizers(model: DialogModel, cfg: Config) -> dict:
    """The authors' three optimisers (M:316-324); the embedding once in the SGD list (module docstring)."""
    ae = [p for n, p in model.named_parameters() if not n.startswith(("prior.", "nu."))]
    gen = list(model.posterior.parameters()) + list(model.prior.parameters())
    return {"ae": torch.optim.SGD(ae, lr=cfg.ae_lr), "gen": torch.optim.RMSprop(gen, lr=cfg.gen_lr),
            "nu": torch.optim.RMSprop(model.nu.parameters(), lr=cfg.nu_lr)}


def beta_at(step: int, steps_per_epoch: int, cfg: Config, corpus: str) -> float:
    if cfg.beta != "auto":
        return float(cfg.beta)
    # DailyDialog: no beta, 1 (T:296-297); Switchboard: 0.1 -> 1 over 9 epochs (train_swda.py:227, 243-244)
    return 1.0 if corpus == "dailydialog" else min(1.0, 0.1 + (step + 1) / (10 * steps_per_epoch))


# ----------------------------------------------------------------------------------------------------
# PAPER §5.3: one training iteration (T:253-332); the loop
# ----------------------------------------------------------------------------------------------------

def train_step(model: DialogModel, opts: dict, batch: data.Batch, beta: float, cfg: Config,
               autocast=contextlib.nullcontext) -> dict:
    """One iteration. Forward passes run under `autocast` (bf16 matrix products with --precision bf16 /
    auto); the reconstruction loss, nu and exp(nu) are fp32 (DialogModel.nll / critic); backward outside."""
    model.train()                                                        # T:233, 254-255
    # 1. The autoencoder reconstructs the response from a posterior sample (T:257-274).
    with autocast():
        c, x = model.encoder(batch)                                      # (B, Hc), (B, 2H)
        nll = model.nll(batch.tokens, model.posterior(torch.cat([x, c], -1)), c)          # (B,)
    # -log p(x | z, c), z ~ q(z|x,c), averaged over the batch's tokens as nn.CrossEntropyLoss (T:262-270)
    rec = nll.sum() / (batch.lengths - 1).sum()
    opts["ae"].zero_grad(set_to_none=True)
    rec.backward()
    nn.utils.clip_grad_norm_([*model.encoder.parameters(), *model.dec_rnn.parameters(), *model.out.parameters()],
                             cfg.clip)                                   # not q's MLPs (T:272-273)
    opts["ae"].step()                                                    # SGD (M:316-319)
    # Steps 2-3 encode in eval mode, no dropout (T:284, 312): one c and x serve all their passes.
    model.encoder.eval()
    with torch.no_grad(), autocast():
        c, x = model.encoder(batch)
    xc = torch.cat([x, c], -1)                                           # (B, 2H + Hc)
    # 2. Posterior and prior close the gap the critic measures, the critic fixed (T:283-302), RMSprop (M:320-323):
    #    minimise beta * (E_q nu(z, c) - E_p exp(nu(z', c)) + 1),   z ~ q(z|x,c), z' ~ p(z|c)
    with autocast():
        kl_gen = metrics.dual_kl(model.critic(model.posterior(xc), c), model.critic(model.prior(c), c))
    opts["gen"].zero_grad(set_to_none=True)
    (beta * kl_gen).backward(inputs=[p for g in opts["gen"].param_groups for p in g["params"]])  # not nu (T:287)
    opts["gen"].step()
    # 3. The critic, fresh samples at each of its updates (T:311-332), RMSprop (M:324), Eq. (7)-(9) form:
    #    KL(q(z|x,c) || p(z|c)) = max_nu E_q nu(z, c) - E_p exp(nu(z', c)) + 1
    kl = kl_gen.detach()
    for _ in range(cfg.nu_steps):
        with autocast():
            with torch.no_grad():
                zq, zp = model.posterior(xc), model.prior(c)             # (B, Z) each
            kl = metrics.dual_kl(model.critic(zq, c), model.critic(zp, c))
        opts["nu"].zero_grad(set_to_none=True)
        (-kl).backward()
        opts["nu"].step()
    return {"rec": nll.detach().mean(), "kl": kl.detach()}              # rec per response, as evaluate's


def train(cfg: Config, corpus: data.Corpus, model: DialogModel, opts: dict, sched, run: data.Run) -> None:
    """The steps left (epochs or max_steps); after every epoch the validation diagnostics, and the model of
    the lowest validation rec kept in best.pt (data.Run: checkpoints, the log, Ctrl-C)."""
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed, equal_length=False,
                           by_length=cfg.batching == "length")
    autocast = data.autocast_for(run.device, cfg.precision)              # bf16 where --precision says so

    def validate(step: int) -> dict:                                     # the diagnostics; selection on rec
        row, _ = evaluate(model, corpus, "valid", cfg, run.device, {}, sample=False)
        return {"beta": beta_at(step - 1, len(batcher), cfg, corpus.spec.name), **row}

    with run.training(len(batcher), validate):
        for batch in run.batches(batcher):
            beta = beta_at(run.step, len(batcher), cfg, corpus.spec.name)
            # BatchNorm needs two examples: a batch of one is skipped (the authors drop an epoch's remainder)
            out = train_step(model, opts, batch, beta, cfg, autocast) if len(batch.lengths) > 1 else None
            if (run.step + 1) % len(batcher) == 0:
                sched.step()                      # StepLR counts epochs: x ae_decay every ae_decay_epochs
            run.after_step(out, beta)


# ----------------------------------------------------------------------------------------------------
# PAPER Table 8: evaluation, and whether the prior works; your own context (respond)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def decode(model: DialogModel, z: torch.Tensor, c: torch.Tensor, max_len: int, temperature: float = 0.0,
           generator=None) -> list:
    """Responses decoded from (z, c), each (N, .) -> token-id lists (read them up to </s>).
    temperature 0: greedy (argmax, Table 8, M:242-243); > 0: each token sampled from softmax(logits / T)."""
    token = torch.full((z.shape[0], 1), data.BOS_ID, dtype=torch.long, device=z.device)
    state, out = None, []
    for _ in range(max_len):
        logits, state = model.decode_logits(token, z, c, state)         # (N, 1, V)
        token = torch.multinomial(F.softmax(logits[:, -1] / temperature, -1), 1, generator=generator) \
            if temperature > 0 else logits[:, -1].argmax(-1, keepdim=True)                  # (N, 1)
        out.append(token)
        if bool((torch.cat(out, 1) == data.EOS_ID).any(1).all()):
            break
    return torch.cat(out, 1).tolist()


def bleu_tokens(ids: list, vocab: data.Vocab) -> list:
    """Ids -> the words BLEU sees, as DialogWAE's indexes2sent: <s> and <pad> dropped, up to AND including the
    first </s> (a response that never ends has none).  [<s>, hi, </s>, <pad>] -> [hi, </s>]"""
    ids = [i for i in ids if i not in (data.BOS_ID, data.PAD_ID)]
    return [vocab.itos[i] for i in (ids[:ids.index(data.EOS_ID) + 1] if data.EOS_ID in ids else ids)]


def response_scores(hyps_per_context: list, references: list, vectors: dict, bleu_n: int) -> dict:
    """Table 8's columns (metrics.py does the arithmetic): BLEU-R / P = max / mean over a context's K responses,
    averaged over contexts, F1 of the two; BOW and Distinct see the words only, BLEU also the `</s>`."""
    kinds = (("bleu", bleu_n, False), ("bleu4", 4, False), ("bleu_nltk34", bleu_n, True))   # nltk34: nltk 3.2.2-3.4.5
    out = {f"{name}_{k[5:]}": v for name, n, nltk34 in kinds        # bleu_r, bleu4_r, bleu_nltk34_r, ..._p, ..._f1
           for k, v in metrics.bleu_recall_precision(hyps_per_context, references, n, nltk34).items()}
    words = lambda ws: [w for w in ws if w != data.EOS]
    hyps = [[words(h) for h in hs] for hs in hyps_per_context]
    refs = [words(r) for r in references]
    if vectors:
        out.update(metrics.bow_metrics(hyps, refs, vectors))
    for n in (1, 2):
        out[f"intra_dist{n}"] = sum(metrics.distinct_intra(h, n) for h in hyps) / len(refs)
        out[f"inter_dist{n}"] = sum(metrics.distinct_inter(h, n) for h in hyps) / len(refs)
    return out


@torch.no_grad()
def evaluate(model: DialogModel, corpus: data.Corpus, split: str, cfg: Config, device, vectors: dict,
             sample: bool = True) -> tuple:
    """Whether the prior works, per response (model in eval mode):
        rec           -log p(x | z, c) summed over tokens, z ~ q(z|x,c) (the checkpoint selection's value)
        rec_prior     the same with z ~ p(z|c): what the test-time samples are worth to the decoder
        rec_shuffled  the same with another response's posterior z (the batch rolled by one)
        dual          E_q nu - E_p exp(nu) + 1 pooled over the split, nu in eval mode;  dual_batch: the
                      mean over batches (here of one length each) of the same, BatchNorm by batch statistics
    With `sample`: prior_vs_posterior_acc, a fresh classifier's held-out accuracy at telling (z, c) with
    z ~ p(z|c) from z ~ q(z|x,c) (metrics.two_sample_accuracy; 0.5 = alike), and Table 8 from K prior samples,
    BLEU / BOW also against the next context's reference (`*_other`, a control; about as long: sorted by length).
    Returns (metrics, (contexts, references, responses)) with the words as bleu_tokens gives them."""
    model.eval()                                                         # BatchNorm by its running averages
    autocast = data.autocast_for(device, cfg.precision)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    examples, K = corpus.examples[split][:cfg.eval_limit or None], cfg.samples_per_context
    tot, words, dual, dual_batch = {"rec": 0.0, "rec_prior": 0.0, "rec_shuffled": 0.0}, 0, metrics.DualKL(), []
    pairs, hyps, refs, contexts = ([], []), [], [], []
    for idx in data.batch_plan([len(e.response) for e in examples], cfg.batch_size, 0, 0, shuffle=False):
        batch = data.collate([examples[i] for i in idx]).to(device)
        with autocast():
            c, x = model.encoder(batch)                                  # (B, Hc), (B, 2H)
            zq, zp = model.posterior(torch.cat([x, c], -1), gen), model.prior(c, gen)    # (B, Z) each
            for key, z in (("rec", zq), ("rec_prior", zp), ("rec_shuffled", zq.roll(1, 0))):  # B = 1 keeps its own
                tot[key] += float(model.nll(batch.tokens, z, c).sum())
            dual.add(model.critic(zq, c), model.critic(zp, c))
            if len(idx) > 1:
                dual_batch.append(float(metrics.dual_kl(model.critic(zq, c, True), model.critic(zp, c, True))))
            words += int((batch.lengths - 1).sum())
            if sample:
                pairs[0].append(torch.cat([zq, c], -1).float().cpu())
                pairs[1].append(torch.cat([zp, c], -1).float().cpu())
                cK = c.repeat_interleave(K, 0)                           # (B*K, Hc)
                ids = decode(model, model.prior(cK, gen), cK, cfg.max_decode_len, cfg.temperature, gen)
                for j, i in enumerate(idx):
                    hyps.append([bleu_tokens(s, corpus.vocab) for s in ids[j * K:(j + 1) * K]])
                    refs.append(bleu_tokens(examples[i].response, corpus.vocab))
                    contexts.append([corpus.vocab.decode(u) for u in examples[i].context])
    result = {"n_contexts": len(examples), **{k: v / len(examples) for k, v in tot.items()},
              "ppl": metrics.perplexity(tot["rec"], words), "dual": dual.value(),
              "dual_batch": sum(dual_batch) / len(dual_batch) if dual_batch else None}
    if sample:
        result["prior_vs_posterior_acc"] = metrics.two_sample_accuracy(*map(torch.cat, pairs), seed=cfg.seed)
        result.update(response_scores(hyps, refs, vectors, cfg.bleu_n))
        other = response_scores(hyps, refs[1:] + refs[:1], vectors, cfg.bleu_n)        # the control (docstring)
        result.update({f"{k}_other": v for k, v in other.items() if "dist" not in k})  # Distinct has no reference
    result["prior_ok"] = int(not prior_warnings(result, cfg.warn_gap))
    model.train()
    return result, (contexts, refs, hyps)


def prior_warnings(row: dict, warn_gap: float) -> list:
    """What is wrong with the learned prior, for the loud WARNING lines: its z must help the decoder clearly
    more than another response's z does, and the dual estimates must be finite."""
    out = [f"the dual estimate {k} = {row[k]} is not finite" for k in ("dual", "dual_batch")
           if row[k] is not None and not math.isfinite(row[k])]
    if not row["rec_shuffled"] - row["rec_prior"] > warn_gap * max(0.0, row["rec_shuffled"] - row["rec"]):
        out.append(f"rec_prior {row['rec_prior']:.2f} is not clearly below rec_shuffled {row['rec_shuffled']:.2f} "
                   f"(rec {row['rec']:.2f}): the prior's z is worth little more to the decoder than another response's")
    return out


def write_responses(out_dir: str, contexts, refs, hyps, n: int, title: str) -> None:
    """responses.txt: n contexts, each with its reference and samples; samples.txt: 20 lines reference => sample 0."""
    show = lambda ws: " ".join(w for w in ws if w != data.EOS)
    with open(os.path.join(out_dir, "responses.txt"), "w", encoding="utf-8") as f:
        f.write(f"# {title}: context (oldest first), reference, then the sampled responses\n")
        for ctx, ref, hs in list(zip(contexts, refs, hyps))[:n]:
            f.write("".join(f"context> {' '.join(u)}\n" for u in ctx) + f"reference> {show(ref)}\n")
            f.write("".join(f"sample {k}> {show(h)}\n" for k, h in enumerate(hs)) + "\n")
    with open(os.path.join(out_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{show(ref)}\t=>\t{show(hs[0])}\n" for ref, hs in list(zip(refs, hyps))[:20]))


@torch.no_grad()
def respond(model: DialogModel, vocab: data.Vocab, utterances: list, cfg: Config, device) -> list:
    """--eval_only --context: K responses to a context typed as text (oldest utterance first; speakers
    alternate and the responder speaks after the last one). Tokenised as the corpus (data.wordpunct_lower);
    words outside the vocabulary are read as <unk>, with a note on stderr. -> K word lists."""
    model.eval()
    turns = [data.wordpunct_lower(u) for u in utterances]
    if unknown := sorted({w for t in turns for w in t if w not in vocab}):
        print(f"not in the vocabulary (read as <unk>): {', '.join(unknown)}", file=sys.stderr)
    dialog = [(t, i % 2) for i, t in enumerate(turns)] + [([], len(turns) % 2)]   # the response: a stand-in
    batch = data.collate([data.dialog_examples([dialog], vocab, cfg.max_context)[-1]]).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 4242)
    with data.autocast_for(device, cfg.precision)():
        cK = model.encoder(batch)[0].repeat(cfg.samples_per_context, 1)  # (K, Hc)
        ids = decode(model, model.prior(cK, gen), cK, cfg.max_decode_len, cfg.temperature, gen)
    return [vocab.decode(s) for s in ids]


# ----------------------------------------------------------------------------------------------------
# PLUMBING: the report line, main() (the run's plumbing: data.Run)
# ----------------------------------------------------------------------------------------------------

def report(tag: str, row: dict, warn_gap: float) -> None:
    """An evaluation row in one line (Table 8 at the test), then a loud WARNING per prior_warnings."""
    keys = ("rec rec_prior rec_shuffled dual dual_batch ppl bleu_r bleu_p bleu_f1 bleu4_r bleu4_p bleu4_f1 "
            "bleu_nltk34_r bleu_nltk34_p bleu_nltk34_f1 bow_a bow_e bow_g intra_dist1 intra_dist2 inter_dist1 "
            "inter_dist2 prior_vs_posterior_acc").split() + [k for k in row if k.endswith("f1_other")]
    print(tag + (f" (BLEU n = {row['bleu_n']})" if "bleu_n" in row else "") + ": "
          + " | ".join(f"{k} {row[k]:.4g}" for k in keys if row.get(k) is not None), flush=True)
    for w in prior_warnings(row, warn_gap):
        where = "test" if row["split"] == "test" else f"valid, step {row['step']}"
        print(f"WARNING ({where}): {w}", file=sys.stderr, flush=True)


def parse(argv=None) -> tuple:
    """(cfg, parser, context utterances), the flags checked. --context may be given several times; '-' reads
    stdin, where utterances are separated by blank lines (it is no setting, so not in Config)."""
    parser = data.config_parser(Config, "Dialog response generation with implicit latents (§5.3)")
    parser.add_argument("--context", action="append", default=[], help="with --eval_only: one utterance of a "
                        "context to answer, oldest first (repeat the flag); '-' reads stdin, blank-line separated")
    args = vars(data.parse_args(parser, argv))
    values = args.pop("context")
    cfg = Config(**args)
    data.check_bounds(cfg, parser)
    try:
        cfg.beta == "auto" or float(cfg.beta)
    except ValueError:
        parser.error(f"--beta takes 'auto' or a number, got {cfg.beta}")
    for bad, message in ((max(cfg.dropout, cfg.ctx_dropout) >= 1, "--dropout and --ctx_dropout must be < 1"),
                         (cfg.embeddings and not os.path.isfile(cfg.embeddings), f"--embeddings: no file {cfg.embeddings}"),
                         (values and not cfg.eval_only, "--context needs --eval_only (and a trained model in --out_dir)")):
        if bad:
            parser.error(message)
    blocks = [b for v in values for b in (sys.stdin.read().split("\n\n") if v == "-" else [v])]
    utterances = [" ".join(b.split()) for b in blocks if b.strip()]
    if values and not utterances:
        parser.error("--context: no utterance given")
    return cfg, parser, utterances


def main(argv=None) -> dict:
    cfg, parser, utterances = parse(argv)
    run = data.Run(cfg, parser, score=lambda row: row["rec"], report=lambda tag, row: report(tag, row, cfg.warn_gap),
                   hint="Lower --ae_lr, --gen_lr or --nu_lr.")            # selection: the lowest validation rec
    if utterances:                                                       # your own context: no corpus needed
        vocab = data.Vocab.from_state_dict(run.ckpt["vocab"])
        model = DialogModel(len(vocab), cfg.emb_dim, cfg).to(run.device)
        run.restore(model=model)
        responses = respond(model, vocab, utterances, cfg, run.device)
        print("".join(f"context> {u}\n" for u in utterances)
              + "".join(f"sample {k}> {' '.join(r)}\n" for k, r in enumerate(responses)), end="")
        return {"context": utterances, "responses": responses, "step": run.step}
    from_file = cfg.embeddings and cfg.embed_init == "file" and not run.ckpt
    if from_file:
        with open(cfg.embeddings, encoding="utf-8") as f:
            dim = len(f.readline().split()) - 1
        if dim != cfg.emb_dim:                                           # the model's size never changes silently
            parser.error(f"--embeddings {cfg.embeddings} holds {dim}-d vectors but --emb_dim is {cfg.emb_dim}: pass "
                         f"--emb_dim {dim} to start from them, or --embed_init random to score BOW with them only")
    corpus = run.load_corpus(("test",) if cfg.eval_only else data.SPLITS, max_context=cfg.max_context)
    vectors = metrics.load_word_vectors(cfg.embeddings, corpus.vocab.itos) if cfg.embeddings else {}
    model = DialogModel(len(corpus.vocab), cfg.emb_dim, cfg).to(run.device)
    if from_file:                           # GloVe where known; the other rows keep DialogModel's N(0, 0.1^2)
        hits = [(i, w) for i, w in enumerate(corpus.vocab.itos) if w in vectors and i != data.PAD_ID]
        with torch.no_grad():
            for i, w in hits:
                model.emb.weight[i] = torch.tensor(vectors[w], dtype=torch.float32)
        print(f"embeddings: {len(hits):,} of {len(corpus.vocab):,} words from {cfg.embeddings} ({cfg.emb_dim}-d)")
    opts = make_optimizers(model, cfg)
    sched = torch.optim.lr_scheduler.StepLR(opts["ae"], step_size=cfg.ae_decay_epochs, gamma=cfg.ae_decay)
    run.restore(model=model, opts=opts, sched=sched)
    if not cfg.eval_only:
        train(cfg, corpus, model, opts, sched, run)

    def test() -> tuple:                                       # Table 8 on the test split, K prior samples each
        row, texts = evaluate(model, corpus, "test", cfg, run.device, vectors)
        return {"corpus": corpus.spec.name, **row, "samples_per_context": cfg.samples_per_context,
                "bleu_n": cfg.bleu_n, "embeddings": cfg.embeddings or None}, texts
    result, (contexts, refs, hyps) = run.test(test)                      # best.pt's model
    run.write_results(result, warnings=prior_warnings(result, cfg.warn_gap))
    write_responses(cfg.out_dir, contexts, refs, hyps, cfg.responses_shown,
                    f"{corpus.spec.name} test, model of step {result['selected_step']}")
    metrics.plot_curves(run.valid_rows(), ["rec", "rec_prior", "rec_shuffled"], os.path.join(cfg.out_dir, "curves.png"))
    run.wrote()
    return result


if __name__ == "__main__":
    data.run_script(main)

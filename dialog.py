r"""Dialog response generation with iVAE_MI-style implicit latents (Fang et al., EMNLP 2019, §5.3, Table 8).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Authors' code: github.com/fangleai/Implicit-LVM, dialog_dailydial/ and
dialog_switchboard/, built on DialogWAE (Gu et al., ICLR 2019), whose sizes and schedule it keeps.

A response x answers a context c (its previous <= 10 utterances). Both the posterior q(z | x, c) and the
prior p(z | c) are implicit: an MLP gives a Gaussian sample e, and a generator MLP maps it to z (200-d),
so neither has a density. Their KL is estimated through its Fenchel dual with a critic nu(z, c)
(§5.3 "Model Extension"); the decoder GRU starts from cat(z, c). At test time z comes from the prior.

Paper section -> code section
    §5.3 utterance / context encoders, posterior, prior, decoder   -> "Model"
    §5.3 dual KL(q(z|x,c) || p(z|c)) with nu(z, c) (Eq. 7-9 form)  -> train_step
    Table 8 BLEU-R/P/F1, BOW-A/E/G, intra/inter-dist-1/2          -> "Evaluation" (metrics.py)

Run
    python dialog.py --data dailydialog --embeddings ../shared/data/glove/glove.6B.50d.dialog.txt --emb_dim 50
    python dialog.py --data switchboard --cuda                       # needs switchboard's train.jsonl
    python dialog.py --data dailydialog --max_steps 300 --eval_limit 100 --threads 1 --out_dir /tmp/dd  # smoke
    python dialog.py --eval_only --context "hi ." --context "how are you ?"     # ten responses to your context
    printf 'hi .\n\nhow are you ?\n' | python dialog.py --eval_only --context -  # stdin: utterances, blank-line separated
    (add --temperature 0.7 to sample the words too, instead of greedy decoding of each sampled z)

Shapes: B examples, C context utterances, U tokens per utterance, T response tokens, E embedding,
H utterance-encoder hidden (each way), Hc context hidden, Z latent, K responses sampled per context.

Training, one iteration (the authors' three steps):
    1. nu_steps critic updates maximising E_q nu(z, c) - E_p exp(nu(z', c)) + 1 (z ~ q(z|x,c), z' ~ p(z|c)),
       fresh posterior and prior samples for each update (as the authors)
    2. autoencoder: minimise -log p(x | z, c), z ~ q(z|x,c) (SGD, lr 1, clip 1, StepLR x0.6 / 10 epochs);
       sum over tokens, mean over examples. Dropout (DialogWAE / the authors): 0.5 on the utterance encoder's
       and the decoder's input embeddings, 0.25 on the context GRU's input
    3. posterior and prior: minimise beta * the dual KL estimate (RMSprop 5e-5); the prior's samples
       enter through -E_p exp(nu), the posterior's through E_q nu.
    beta rises from 0.1 to 1 over 10 epochs on Switchboard; DailyDialog uses beta = 1 (the authors).

Validation after every epoch: reconstruction NLL of the validation responses (posterior z); the checkpoint
with the lowest is kept as best.pt and evaluated on test (as the LM scripts select on validation).

Evaluation (Table 8), per test context: K = 10 responses decoded greedily from 10 prior samples.
    BLEU-R / BLEU-P / BLEU-F1: max / mean over the K of nltk sentence BLEU (method7) with the reference,
        averaged over contexts; F1 of the averages. n = 3 as the authors' code (`bleu_*`), and n = 4 as the
        paper's text says (`bleu4_*`). Tokens as DialogWAE's indexes2sent gives them: the reference and each
        response keep their `</s>` (a response that never ends has none), no `<s>`.
    BOW-A / E / G: embedding average / extrema / greedy similarity (Liu et al. 2016), max over the K,
        averaged; needs --embeddings. With the GloVe 6B 50-d file here (the paper used Twitter 200-d) these
        compare between our runs only.
    intra-dist-1/2 (distinct n-grams within each response, averaged) and inter-dist-1/2 (across the K
        responses of a context), averaged over contexts.

Deviations from the authors' code (and why)
    * The critic has no BatchNorm (it couples the samples of a batch) and its estimate is the real dual,
      mean exp(nu) (metrics.dual_kl).
    * The order within an iteration is critic, autoencoder, posterior/prior; the authors' is autoencoder,
      posterior/prior, critic (the same cycle, started at another step), and they encode the context with
      dropout off (eval mode) for the posterior/prior and critic steps; here dropout stays on in all three.
    * Rec sums the token NLLs of a response (the house convention, like the LM scripts) instead of
      averaging them; the gradient clip (1) bounds the SGD step either way.
    * Model selection on validation reconstruction NLL (best.pt); the authors evaluate every epoch's model.
    * --embeddings must have --emb_dim's dimension (an error otherwise, never a silent change of the
      model's size); rows of words missing from the file keep the uniform(-0.1, 0.1) init of all rows
      (DialogWAE's). The file here is GloVe 6B 50-d (so --emb_dim 50), the authors' Twitter 200-d.
    * All MLPs (posterior, prior, generators, critic) use Tanh between layers and no BatchNorm (our choice
      of activation; the authors' critic has BatchNorm, which couples a batch's samples); widths are
      `--mlp_width` (200).
    * BOW metrics are computed over real words only (metrics.bow_similarity explains DialogWAE's padding
      quirks); contexts hold up to 10 previous utterances (the authors' window holds 9).
    * bf16 autocast by default where the hardware has it natively (--precision auto; the authors: fp32):
      on the 2-core CPU only 1.05-1.2x faster (the GRUs' small matrix products), losses within seed noise
      (README).
"""
import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import option


@dataclass
class Config(data.RunConfig):
    # the run: the command-line contract every script shares is data.RunConfig (--data --seed --out_dir
    # --epochs --max_steps --resume --eval_only --threads ...); here what differs for this task
    data: str = option("dailydialog", "corpus", choices=["dailydialog", "switchboard"])
    out_dir: str = option("runs/dialog", "where config.json, log.csv, metrics.json, checkpoints, responses go",
                          run=True)
    epochs: int = option(100, "training epochs (DialogWAE: 100)", low=1, run=True)
    embeddings: str = option("", "GloVe-format word vectors to initialise the embeddings and for BOW metrics")
    samples_per_context: int = option(10, "responses sampled per test context (Table 8: 10)", run=True)
    # model (DialogWAE's sizes)
    emb_dim: int = option(200, "word embedding size (DialogWAE: 200); an --embeddings file must match it")
    utt_hidden: int = option(300, "utterance encoder: bidirectional GRU units each way")
    ctx_hidden: int = option(300, "context encoder GRU units")
    latent: int = option(200, "latent z")
    mlp_width: int = option(200, "width of the posterior, prior, generator and critic MLPs")
    dropout: float = option(0.5, "dropout on the utterance encoder's and the decoder's input embeddings (authors)")
    ctx_dropout: float = option(0.25, "dropout on the context GRU's input (authors)")
    max_context: int = option(10, "previous utterances in a context window")
    # training (the authors' schedule)
    batch_size: int = option(32, "examples per batch")
    ae_lr: float = option(1.0, "SGD learning rate of the autoencoder step")
    ae_decay: float = option(0.6, "StepLR factor of the autoencoder's learning rate")
    ae_decay_epochs: int = option(10, "StepLR period in epochs")
    clip: float = option(1.0, "gradient-norm clip of the autoencoder step")
    gen_lr: float = option(5e-5, "RMSprop learning rate of the posterior / prior step")
    nu_lr: float = option(1e-5, "RMSprop learning rate of the critic")
    nu_steps: int = option(5, "critic updates per iteration")
    beta: str = option("auto", "KL weight: auto (1 for DailyDialog; 0.1 -> 1 over 10 epochs for Switchboard), "
                              "or a number")
    # evaluation
    eval_limit: int = option(0, "evaluate on the first N test contexts only (0: all)", run=True)
    bleu_n: int = option(3, "BLEU n-gram order of bleu_r/p/f1 (authors' code: 3); bleu4_* always uses 4", run=True)
    max_decode_len: int = option(40, "longest response, in tokens", run=True)
    temperature: float = option(0.0, "decoding of each sampled z: 0 greedy (Table 8); > 0 sample softmax(logits / T)",
                                run=True)
    responses_shown: int = option(50, "contexts written to responses.txt", run=True)




# ----------------------------------------------------------------------------------------------------
# PAPER §5.3: the model
# ----------------------------------------------------------------------------------------------------

def mlp(sizes: list) -> nn.Sequential:
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


class GaussianThenGenerator(nn.Module):
    """An implicit distribution: an MLP gives (mu, logvar), e = mu + sigma * eps, then z = generator(e).
    Used for both q(z | x, c) (input cat(x, c)) and p(z | c) (input c)."""

    def __init__(self, inp: int, width: int, latent: int):
        super().__init__()
        self.gauss = mlp([inp, width, 2 * latent])
        self.generator = mlp([latent, width, width, latent])

    def forward(self, inp: torch.Tensor, generator=None) -> torch.Tensor:
        mu, logvar = self.gauss(inp).chunk(2, -1)
        eps = torch.randn(mu.shape, device=mu.device, generator=generator)
        return self.generator(mu + (0.5 * logvar).exp() * eps)


class DialogModel(nn.Module):
    def __init__(self, vocab_size: int, emb_dim: int, cfg: Config):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb_dim, padding_idx=data.PAD_ID)
        with torch.no_grad():                                            # DialogWAE: uniform(-0.1, 0.1)
            self.emb.weight.uniform_(-0.1, 0.1)
            self.emb.weight[data.PAD_ID] = 0.0
        self.drop = nn.Dropout(cfg.dropout)                              # utterance encoder + decoder inputs
        self.ctx_drop = nn.Dropout(cfg.ctx_dropout)                      # context GRU input
        self.utt_rnn = nn.GRU(emb_dim, cfg.utt_hidden, batch_first=True, bidirectional=True)
        self.ctx_rnn = nn.GRU(2 * cfg.utt_hidden + 2, cfg.ctx_hidden, batch_first=True)   # + 2: who spoke
        self.posterior = GaussianThenGenerator(2 * cfg.utt_hidden + cfg.ctx_hidden, cfg.mlp_width, cfg.latent)
        self.prior = GaussianThenGenerator(cfg.ctx_hidden, cfg.mlp_width, cfg.latent)
        self.nu = mlp([cfg.latent + cfg.ctx_hidden, cfg.mlp_width, cfg.mlp_width, 1])      # critic nu(z, c)
        self.dec_rnn = nn.GRU(emb_dim, cfg.latent + cfg.ctx_hidden, batch_first=True)      # h0 = cat(z, c)
        self.out = nn.Linear(cfg.latent + cfg.ctx_hidden, vocab_size)

    def encode_utterances(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """BiGRU over each utterance; cat(last forward state, last backward state). (N, U) -> (N, 2H)."""
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.emb(tokens)), lengths.clamp(min=1).cpu(),
                                                   batch_first=True, enforce_sorted=False)
        _, h = self.utt_rnn(packed)                                      # (2, N, H)
        return torch.cat([h[0], h[1]], -1)

    def encode_context(self, batch: data.Batch) -> torch.Tensor:
        r"""c: a GRU over the context's utterance vectors, each with a one-hot of who said it.

            context (B, C, U) --utterance BiGRU--> (B, C, 2H) --cat speaker one-hot--> (B, C, 2H+2)
                               --context GRU over the C_b real utterances--> c (B, Hc)
        """
        B, C, U = batch.context.shape
        utt = self.encode_utterances(batch.context.view(B * C, U), batch.utt_lengths.view(B * C)).view(B, C, -1)
        inp = self.ctx_drop(torch.cat([utt, F.one_hot(batch.speakers, 2).float()], -1))   # (B, C, 2H+2)
        packed = nn.utils.rnn.pack_padded_sequence(inp, batch.context_lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.ctx_rnn(packed)
        return h[-1]                                                     # (B, Hc)

    def critic(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.nu(torch.cat([z, c], -1)).squeeze(-1).float()       # (B,), fp32 before exp(nu)

    def decode_logits(self, x_in: torch.Tensor, z: torch.Tensor, c: torch.Tensor, state=None):
        h0 = torch.cat([z, c], -1).unsqueeze(0) if state is None else state
        out, state = self.dec_rnn(self.drop(self.emb(x_in)), h0)
        return self.out(out), state                                      # (B, T, V)

    def nll(self, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """-log p(x | z, c) per response, summed over tokens. -> (B,)"""
        logits, _ = self.decode_logits(x[:, :-1], z, c)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                              ignore_index=data.PAD_ID, reduction="none")
        return nll.view(x.shape[0], -1).sum(1)


def make_optimizers(model: DialogModel, cfg: Config) -> dict:
    ae = [p for n, p in model.named_parameters() if not n.startswith(("prior.", "nu."))]
    gen = list(model.posterior.parameters()) + list(model.prior.parameters())
    return {"ae": torch.optim.SGD(ae, lr=cfg.ae_lr), "gen": torch.optim.RMSprop(gen, lr=cfg.gen_lr),
            "nu": torch.optim.RMSprop(model.nu.parameters(), lr=cfg.nu_lr)}


def beta_at(step: int, steps_per_epoch: int, cfg: Config, corpus: str) -> float:
    if cfg.beta != "auto":
        return float(cfg.beta)
    if corpus == "dailydialog":
        return 1.0
    return min(1.0, 0.1 + 0.9 * step / (10 * steps_per_epoch))         # Switchboard: 0.1 -> 1 over 10 epochs


# ----------------------------------------------------------------------------------------------------
# PAPER §5.3: one training iteration
# ----------------------------------------------------------------------------------------------------

def train_step(model: DialogModel, opts: dict, batch: data.Batch, beta: float, cfg: Config,
               autocast=contextlib.nullcontext) -> dict:
    """One iteration. Forward passes run under `autocast` (bf16 matrix products with --precision bf16 /
    auto); the reconstruction loss, nu and exp(nu) are fp32 (DialogModel.nll / critic); backward outside."""
    with autocast():
        c = model.encode_context(batch)                                  # (B, Hc)
        x = model.encode_utterances(batch.tokens, batch.lengths)         # (B, 2H)
    # 1. The critic, Eq. (7)-(9) form: KL(q(z|x,c) || p(z|c)) = max_nu E_q nu(z, c) - E_p exp(nu(z', c)) + 1
    cd, xc = c.detach(), torch.cat([x, c], -1).detach()
    for _ in range(cfg.nu_steps):
        with autocast():
            with torch.no_grad():                                        # fresh samples of both each update
                zq = model.posterior(xc)                                 # (B, Z)
                zp = model.prior(cd)                                     # (B, Z)
            kl = metrics.dual_kl(model.critic(zq, cd), model.critic(zp, cd))
        opts["nu"].zero_grad(set_to_none=True)
        (-kl).backward()
        opts["nu"].step()
    # 2. The autoencoder: reconstruct the response from a posterior sample.
    with autocast():
        z = model.posterior(torch.cat([x, c], -1))
        rec = model.nll(batch.tokens, z, c).mean()                       # sum over tokens, mean over B
    opts["ae"].zero_grad(set_to_none=True)
    rec.backward()
    nn.utils.clip_grad_norm_([p for g in opts["ae"].param_groups for p in g["params"]], cfg.clip)
    opts["ae"].step()
    # 3. Posterior and prior close the gap the critic measures (context features held fixed).
    with autocast():
        with torch.no_grad():
            c2 = model.encode_context(batch)
            x2 = model.encode_utterances(batch.tokens, batch.lengths)
        kl_gen = metrics.dual_kl(model.critic(model.posterior(torch.cat([x2, c2], -1)), c2),
                                 model.critic(model.prior(c2), c2))
    opts["gen"].zero_grad(set_to_none=True)
    (beta * kl_gen).backward()
    opts["gen"].step()
    return {"rec": rec.detach(), "kl": kl.detach()}


# ----------------------------------------------------------------------------------------------------
# Table 8: evaluation
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def decode(model: DialogModel, z: torch.Tensor, c: torch.Tensor, max_len: int, temperature: float = 0.0,
           generator=None) -> list:
    """Responses decoded from (z, c), each (N, .) -> token-id lists (read them up to </s>).
    temperature 0: greedy (argmax, Table 8); > 0: each token sampled from softmax(logits / temperature)."""
    N = z.shape[0]
    token = torch.full((N, 1), data.BOS_ID, dtype=torch.long, device=z.device)
    state, out = None, []
    for _ in range(max_len):
        logits, state = model.decode_logits(token, z, c, state)         # (N, 1, V)
        if temperature > 0:
            token = torch.multinomial(F.softmax(logits[:, -1] / temperature, -1), 1, generator=generator)
        else:
            token = logits[:, -1].argmax(-1, keepdim=True)               # (N, 1)
        out.append(token)
        if bool((torch.cat(out, 1) == data.EOS_ID).any(1).all()):
            break
    return torch.cat(out, 1).tolist()


def bleu_tokens(ids: list, vocab: data.Vocab) -> list:
    """Ids -> the words BLEU sees, as DialogWAE's indexes2sent: <s> and <pad> dropped, up to AND including the
    first </s> (a response that never ends has none).  [<s>, hi, </s>, <pad>] -> [hi, </s>]"""
    words = []
    for i in ids:
        if i in (data.BOS_ID, data.PAD_ID):
            continue
        words.append(vocab.itos[i])
        if i == data.EOS_ID:
            break
    return words


def response_scores(hyps_per_context: list, references: list, vectors: dict, bleu_n: int) -> dict:
    """Table 8's columns (metrics.py does the arithmetic). Token lists as bleu_tokens gives them: BLEU sees
    the `</s>` as DialogWAE and the authors; BOW and Distinct see the words only."""
    out = metrics.bleu_recall_precision(hyps_per_context, references, n=bleu_n)
    out.update({f"bleu4_{k[5:]}": v for k, v in metrics.bleu_recall_precision(hyps_per_context, references, n=4).items()})
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
    """Reconstruction NLL per response (posterior z) and, with `sample`, Table 8 from K prior samples.
    Returns (metrics, (contexts, references, responses)) with the words as bleu_tokens gives them."""
    model.eval()
    autocast = data.autocast_for(device, cfg.precision)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    examples = corpus.examples[split][:cfg.eval_limit or None]
    K = cfg.samples_per_context
    nll, words, hyps, refs, contexts = 0.0, 0, [], [], []
    for idx in data.batch_plan([len(e.response) for e in examples], cfg.batch_size, 0, 0, shuffle=False):
        batch = data.collate([examples[i] for i in idx]).to(device)
        with autocast():                                                 # --precision
            c = model.encode_context(batch)                                  # (B, Hc)
            x = model.encode_utterances(batch.tokens, batch.lengths)         # (B, 2H)
            nll += float(model.nll(batch.tokens, model.posterior(torch.cat([x, c], -1), gen), c).sum())
            words += int((batch.lengths - 1).sum())
            if sample:
                cK = c.repeat_interleave(K, 0)                               # (B*K, Hc)
                ids = decode(model, model.prior(cK, gen), cK, cfg.max_decode_len, cfg.temperature, gen)
                for j, i in enumerate(idx):
                    hyps.append([bleu_tokens(s, corpus.vocab) for s in ids[j * K:(j + 1) * K]])
                    refs.append(bleu_tokens(examples[i].response, corpus.vocab))
                    contexts.append([corpus.vocab.decode(u) for u in examples[i].context])
    result = {"n_contexts": len(examples), "rec": nll / len(examples), "ppl": metrics.perplexity(nll, words)}
    if sample:
        result.update(response_scores(hyps, refs, vectors, cfg.bleu_n))
    model.train()
    return result, (contexts, refs, hyps)


def write_responses(path: str, contexts, refs, hyps, n: int, split_name: str) -> None:
    show = lambda ws: " ".join(w for w in ws if w != data.EOS)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# {split_name}: context (oldest first), reference, then the sampled responses\n")
        for ctx, ref, hs in list(zip(contexts, refs, hyps))[:n]:
            f.write("".join(f"context> {' '.join(u)}\n" for u in ctx))
            f.write(f"reference> {show(ref)}\n")
            f.write("".join(f"sample {k}> {show(h)}\n" for k, h in enumerate(hs)) + "\n")


# ----------------------------------------------------------------------------------------------------
# Your own context: --eval_only --context "hi ." --context "how are you ?" (or --context - for stdin)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def respond(model: DialogModel, vocab: data.Vocab, utterances: list, cfg: Config, device) -> list:
    """K = samples_per_context responses to a context typed as text (oldest utterance first; speakers
    alternate and the responder speaks after the last one). Tokenised as the corpus (data.wordpunct_lower);
    words outside the vocabulary are read as <unk>, with a note on stderr. -> K word lists."""
    model.eval()
    turns = [data.wordpunct_lower(u) for u in utterances]
    unknown = sorted({w for t in turns for w in t if w not in vocab})
    if unknown:
        print(f"not in the vocabulary (read as <unk>): {', '.join(unknown)}", file=sys.stderr)
    n = len(turns)
    dialog = [(t, i % 2) for i, t in enumerate(turns)] + [([], n % 2)]   # the response itself is a stand-in
    example = data.dialog_examples([dialog], vocab, cfg.max_context)[-1]
    batch = data.collate([example]).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 4242)
    with data.autocast_for(device, cfg.precision)():
        cK = model.encode_context(batch).repeat(cfg.samples_per_context, 1)   # (K, Hc)
        ids = decode(model, model.prior(cK, gen), cK, cfg.max_decode_len, cfg.temperature, gen)
    return [vocab.decode(s) for s in ids]


# ----------------------------------------------------------------------------------------------------
# PLUMBING: training loop, checkpoints, main()
# ----------------------------------------------------------------------------------------------------

def checkpoint_state(cfg, vocab, model, opts, sched, step_, best) -> dict:
    return {"script": data.script_of(cfg), "config": asdict(cfg), "vocab": vocab.state_dict(),
            "model": model.state_dict(),
            "opts": {k: o.state_dict() for k, o in opts.items()}, "sched": sched.state_dict(), "step": step_,
            "best": best, "rng": data.rng_state()}


def train(cfg, corpus, model, opts, sched, state, device, log) -> int:
    """Train from state["step"] to the end (epochs or max_steps); validate after every epoch and keep the
    checkpoint with the lowest validation reconstruction NLL in best.pt. Returns the last step."""
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed, equal_length=False)
    steps_per_epoch = len(batcher)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    step_, best = state["step"], state["best"]
    ckpt_path, best_path = os.path.join(cfg.out_dir, "checkpoint.pt"), os.path.join(cfg.out_dir, "best.pt")
    t_begin = time.time() - state["train_time_s"]                        # train_time_s sums every process
    autocast = data.autocast_for(device, cfg.precision)                  # bf16 where --precision says so

    def save(path=ckpt_path, validated=True):
        ckpt = checkpoint_state(cfg, corpus.vocab, model, opts, sched, step_, best)
        data.save_checkpoint({**ckpt, "validated": validated, "train_time_s": time.time() - t_begin}, path)

    def validate():                                                      # selection on rec
        nonlocal best
        print(f"validating at step {step_}", flush=True)
        with stop.interruptible():                                       # the first Ctrl-C stops it at once
            row, _ = evaluate(model, corpus, "valid", cfg, device, {}, sample=False)
        beta = beta_at(step_ - 1, steps_per_epoch, cfg, corpus.spec.name)  # as in the epoch's last step
        row = {"step": step_, "epoch": step_ / steps_per_epoch, "split": "valid", "beta": beta, **row}
        print(f"valid @ step {step_}: rec {row['rec']:.2f} | PPL {row['ppl']:.2f}", flush=True)
        log.write(row)
        if best is None or row["rec"] < best:
            best = row["rec"]
            save(best_path)

    print(f"training: {steps_per_epoch} batches per epoch, steps {step_} -> {total}", flush=True)
    acc, n_acc, t0 = {}, 0, time.time()
    with data.GracefulInterrupt() as stop:
        if not state["validated"]:                         # resumed from a checkpoint that awaits its validation
            validate()
            save()
        while step_ < total and not stop.requested:
            for batch in batcher.epoch(step_ // steps_per_epoch, start=step_ % steps_per_epoch):
                beta = beta_at(step_, steps_per_epoch, cfg, corpus.spec.name)
                out = train_step(model, opts, batch.to(device), beta, cfg, autocast)
                step_ += 1
                for k, v in out.items():
                    acc[k] = acc.get(k, 0) + v
                n_acc += 1
                end_of_epoch = step_ % steps_per_epoch == 0
                if end_of_epoch:
                    sched.step()                                         # StepLR counts epochs
                saving = end_of_epoch or step_ % cfg.save_every == 0 or step_ >= total or stop.requested
                if step_ % cfg.log_every == 0 or saving:
                    means = {k: float(v) / n_acc for k, v in acc.items()}
                    data.check_finite(means, step_, ckpt_path, "Lower --ae_lr, --gen_lr or --nu_lr.")
                if step_ % cfg.log_every == 0 or step_ == total:
                    dt = time.time() - t0
                    print(f"step {step_:>6}/{total} | ep {step_ / steps_per_epoch:5.2f} | rec {means['rec']:6.2f} | "
                          f"KL {means['kl']:6.2f} | beta {beta:.2f} | {n_acc / dt:5.1f} step/s | "
                          f"ETA {(total - step_) * dt / n_acc / 60:5.1f} min", flush=True)
                    acc, n_acc, t0 = {}, 0, time.time()
                if end_of_epoch:
                    save(validated=False)                  # first the epoch's checkpoint: nothing is lost
                    validate()                             # if the validation is interrupted or killed
                if saving:
                    save()
                if step_ >= total or stop.requested:
                    break
    if stop.requested:
        raise SystemExit(f"interrupted at step {step_}: checkpoint saved to {ckpt_path}; continue with --resume")
    return step_


def read_context(values: list, parser) -> list:
    """--context values; '-' reads stdin, where utterances are separated by blank lines."""
    utterances = []
    for v in values:
        if v == "-":
            blocks = sys.stdin.read().split("\n\n")
            utterances += [" ".join(b.split()) for b in blocks if b.strip()]
        elif v.strip():
            utterances.append(v)
    if values and not utterances:
        parser.error("--context: no utterance given")
    return utterances


def parse(argv=None) -> tuple:
    """(cfg, parser, context utterances): the Config flags plus --context, which may be given several times
    (data.parse_config knows only Config fields, so --context is added here; it is not a setting)."""
    parser = data.config_parser(Config, "Dialog response generation with implicit latents (§5.3)")
    parser.add_argument("--context", action="append", default=[],
                        help="with --eval_only: one utterance of a context to answer, oldest first (repeat the "
                             "flag); '-' reads stdin, utterances separated by blank lines")
    args = vars(data.parse_args(parser, argv))
    values = args.pop("context")
    cfg = Config(**args)
    if values and not cfg.eval_only:
        parser.error("--context needs --eval_only (and a trained model in --out_dir)")
    return cfg, parser, read_context(values, parser)


def main(argv=None) -> dict:
    cfg, parser, utterances = parse(argv)
    for name in ("epochs", "samples_per_context", "emb_dim", "utt_hidden", "ctx_hidden", "latent", "mlp_width",
                 "max_context", "batch_size", "ae_decay_epochs", "bleu_n", "max_decode_len", "log_every",
                 "save_every"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "eval_limit", "nu_steps", "ae_lr", "gen_lr", "nu_lr", "clip", "responses_shown"):
        if getattr(cfg, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("dropout", "ctx_dropout"):
        if not 0 <= getattr(cfg, name) < 1:
            parser.error(f"--{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.temperature < 0:
        parser.error(f"--temperature must be >= 0 (0: greedy), got {cfg.temperature}")
    if cfg.beta != "auto":
        try:
            float(cfg.beta)
        except ValueError:
            parser.error(f"--beta takes 'auto' or a number, got {cfg.beta}")
    if cfg.embeddings and not os.path.isfile(cfg.embeddings):
        parser.error(f"--embeddings: no file {cfg.embeddings}")
    if cfg.resume and cfg.eval_only:
        parser.error("--resume and --eval_only exclude each other")
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    ckpt = data.open_run(cfg, parser, data.run_control(Config), device)
    state = {"step": 0, "best": None, "validated": True, "train_time_s": 0.0}       # a fresh run; or resumed:
    state.update({k: ckpt[k] for k in state if k in ckpt} if ckpt else {})
    data.set_seed(cfg.seed)
    if utterances:                                                       # your own context: no corpus needed
        vocab = data.Vocab.from_state_dict(ckpt["vocab"])
        model = DialogModel(len(vocab), cfg.emb_dim, cfg).to(device)
        model.load_state_dict(ckpt["model"])
        responses = respond(model, vocab, utterances, cfg, device)
        print("".join(f"context> {u}\n" for u in utterances)
              + "".join(f"sample {k}> {' '.join(r)}\n" for k, r in enumerate(responses)), end="")
        return {"context": utterances, "responses": responses, "step": ckpt["step"]}
    if cfg.embeddings and not ckpt:
        with open(cfg.embeddings, encoding="utf-8") as f:
            dim = len(f.readline().split()) - 1
        if dim != cfg.emb_dim:
            parser.error(f"--embeddings {cfg.embeddings} holds {dim}-d vectors but --emb_dim is {cfg.emb_dim}: pass "
                         f"--emb_dim {dim} to initialise the embeddings from the file (the model's size never "
                         "changes silently)")
    try:
        vocab = data.Vocab.from_state_dict(ckpt["vocab"]) if ckpt else None
        splits = ("test",) if cfg.eval_only else ("train", "valid", "test")
        corpus = data.load_corpus(cfg.data, cfg.data_dir, splits, vocab=vocab, max_context=cfg.max_context)
    except data.DataError as err:
        parser.error(str(err))
    os.makedirs(cfg.out_dir, exist_ok=True)
    print(f"device: {data.describe_device(device)}, precision {data.precision_in_use(device, cfg.precision)}")
    print(f"corpus {corpus.spec.name}: " + ", ".join(f"{s} {len(e):,}" for s, e in corpus.examples.items())
          + f" responses, vocabulary {len(corpus.vocab):,}")
    vectors = metrics.load_word_vectors(cfg.embeddings, corpus.vocab.itos) if cfg.embeddings else {}
    model = DialogModel(len(corpus.vocab), cfg.emb_dim, cfg).to(device)
    if vectors and not ckpt:          # GloVe where known; the other rows keep DialogModel's uniform(-0.1, 0.1)
        with torch.no_grad():
            hits = [(i, w) for i, w in enumerate(corpus.vocab.itos) if w in vectors]
            for i, w in hits:
                model.emb.weight[i] = torch.tensor(vectors[w], dtype=torch.float32)
        print(f"embeddings: {len(hits):,} of {len(corpus.vocab):,} words from {cfg.embeddings} ({cfg.emb_dim}-d)")
    opts = make_optimizers(model, cfg)
    sched = torch.optim.lr_scheduler.StepLR(opts["ae"], step_size=cfg.ae_decay_epochs, gamma=cfg.ae_decay)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        if not cfg.eval_only:
            for k, o in opts.items():
                o.load_state_dict(ckpt["opts"][k])
            sched.load_state_dict(ckpt["sched"])
            data.set_rng_state(ckpt["rng"])
    data.write_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    # A resume drops the log's rows after the checkpoint (and its step's row if it still awaits its
    # validation); --eval_only leaves log.csv as it is.
    log = data.CsvLog(os.path.join(cfg.out_dir, "log.csv"), read_only=cfg.eval_only,
                      resume_step=state["step"] - (not state["validated"]) if ckpt else None)
    t_start = time.time()
    if not cfg.eval_only:
        try:
            state["step"] = train(cfg, corpus, model, opts, sched, state, device, log)
        except FloatingPointError as err:
            raise SystemExit(f"stopped: {err}")
        best_path = os.path.join(cfg.out_dir, "best.pt")
        if os.path.exists(best_path):                                    # report the selected model
            sel = data.load_checkpoint(best_path, device)
            model.load_state_dict(sel["model"])
            state["selected_step"] = sel["step"]
    train_time = state["train_time_s"] + time.time() - t_start                # over every process of the run

    result, (contexts, refs, hyps) = evaluate(model, corpus, "test", cfg, device, vectors)
    step_ = state["step"]
    result = {"split": "test", "corpus": corpus.spec.name, "step": step_,
              "selected_step": state.get("selected_step", step_), **result,
              "samples_per_context": cfg.samples_per_context, "bleu_n": cfg.bleu_n,
              "embeddings": cfg.embeddings or None, "train_time_s": round(train_time, 1),
              "device": data.describe_device(device)}
    print(f"test: BLEU-R/P/F1 {result['bleu_r']:.3f} / {result['bleu_p']:.3f} / {result['bleu_f1']:.3f} (n = {cfg.bleu_n})"
          f" | 4-gram {result['bleu4_r']:.3f} / {result['bleu4_p']:.3f} / {result['bleu4_f1']:.3f}"
          + (f" | BOW-A/E/G {result['bow_a']:.3f} / {result['bow_e']:.3f} / {result['bow_g']:.3f}" if vectors else "")
          + f" | intra-dist {result['intra_dist1']:.3f} / {result['intra_dist2']:.3f}"
          f" | inter-dist {result['inter_dist1']:.3f} / {result['inter_dist2']:.3f} | rec PPL {result['ppl']:.2f}")
    log.write({"epoch": "", **result})
    data.write_json(os.path.join(cfg.out_dir, "metrics.json"), result)
    write_responses(os.path.join(cfg.out_dir, "responses.txt"), contexts, refs, hyps, cfg.responses_shown,
                    f"{corpus.spec.name} test, model of step {result['selected_step']}")
    show = lambda ws: " ".join(w for w in ws if w != data.EOS)
    with open(os.path.join(cfg.out_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{show(ref)}\t=>\t{show(hs[0])}\n" for ref, hs in list(zip(refs, hyps))[:20]))
    rows = [r for r in log.rows() if r.get("split") == "valid"]
    metrics.plot_curves(rows, ["rec", "ppl"], os.path.join(cfg.out_dir, "curves.png"))
    written = [f for f in "config.json log.csv metrics.json checkpoint.pt best.pt responses.txt samples.txt curves.png".split() if os.path.exists(os.path.join(cfg.out_dir, f))]
    names = "config.json log.csv metrics.json checkpoint.pt best.pt responses.txt samples.txt curves.png".split()
    print(f"wrote {cfg.out_dir}/: " + " ".join(f for f in names if os.path.exists(os.path.join(cfg.out_dir, f))))
    return result


if __name__ == "__main__":
    data.run_script(main)

r"""Unaligned sentiment transfer with iVAE_MI on Yelp (Fang et al., EMNLP 2019, §5.2, Tables 6-7).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Authors' code: github.com/fangleai/Implicit-LVM, transfer_yelp/ (built on ARAE,
Zhao et al. 2018).

A sentence x with sentiment y is encoded into a content code z = G(h_x, eps) (an implicit posterior, as
in ivae_mi.py); two decoders, one per sentiment, reconstruct x from z with p(x | z, y). To transfer, x is
encoded and decoded by the *other* sentiment's decoder. Two forces keep sentiment out of z:
    * iVAE_MI's regulariser (§3.2): the aggregated posterior q(z) is pulled towards a prior, here an
      *implicit* one: Gaussian noise through an MLP. KL(q(z) || p(z)) is estimated through its dual
      with a critic nu(z) (Eq. 13), which the encoder minimises (Eq. 14) and the prior generator too.
    * an adversarial classifier (L_class in §5.2): it learns to tell y from z, and the encoder learns to
      fool it (it is trained towards the flipped label).

Paper section -> code section
    §5.2 model: encoder + G, two decoders, implicit prior, critic, classifier   -> "Model"
    §3.2 Eq. (13)-(14) with an implicit prior; L_class                           -> train_step
    Table 7: Acc (fastText), BLEU, PPL, RPPL                                     -> "Evaluation"
    Table 6: transferred sentences                                               -> transfers.txt

Run
    python style_transfer.py --split standard          # Shen et al.'s split (needs sentiment.train.{0,1})
    python style_transfer.py --split no_train          # the opt-in split for copies without train files
    python style_transfer.py --split no_train --max_steps 300 --eval_limit 200 --cpu     # a smoke run

Splits. `standard`: Shen et al.'s train / dev / test. `no_train` (opt-in, for the copies here, which lack
Shen's training files): trains on Shen's test files, validates on Shen's dev files minus Li et al. (2018)'s
1,000 test sentences, and tests on those 1,000 sentences, which have human rewrites (BLEU-ref). Every
output (metrics.json, log.csv, transfers.txt) says which split produced it.

Evaluation (Table 7), on the test split:
    Acc     share of transfers that a fastText-style classifier (Joulin et al. 2017: mean of unigram and
            hashed bigram embeddings -> linear), trained on the training split, labels with the target
            sentiment; its own accuracy on the test sources is reported too (`classifier_acc`).
    BLEU    nltk sentence BLEU (method7, n = 3, as the authors' code), x100, mean over sentences, between
            each source and its transfer; `bleu_ref` against Li et al.'s human rewrites where present.
    PPL     reconstruction perplexity of the test sentences, teacher-forced with their own sentiment's
            decoder, z the mean of `eval_samples` posterior samples; words counting </s>.
    RPPL    metrics.NGramLM(order=5) fitted on the transfers, perplexity of the source sentences.
    Flu / Sim of Table 7 were human ratings: not reproducible here.
Paper (Acc / BLEU / PPL / RPPL): ARAE 95 / 32.5 / 6.8 / 395; iVAE_MI 92 / 36.7 / 6.2 / 285.

Shapes: B sentences, T tokens, V vocabulary, E embedding, H hidden, Z content code, N prior noise.

Deviations from the authors' code (and why)
    * The critic's KL estimate is the real dual, E_q nu - E_p exp(nu) + 1 (metrics.dual_kl). The authors'
      critic returns the batch mean before the exp, exp(mean nu), which is not the dual form, and has
      BatchNorm inside, which makes a sample's value depend on the rest of its batch; ours has neither.
    * The transfer decodes from the mean of `eval_samples` posterior samples (one draw is noisier).
    * No model selection: the model after the last step is evaluated (validation metrics are logged each
      epoch); the authors also report the final model.
    * The fastText classifier is a small PyTorch re-implementation trained here, not the fastText binary.
    * Our choices where the issue and paper give no size: the encoder's noise is 32-d, G is a 2-layer
      MLP (128 units, LeakyReLU 0.2), the critic has two hidden layers of 256, the classifier one of
      128; training batches are padded length buckets (the LM scripts use equal-length batches).
"""
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import STYLE_SPLITS, option


@dataclass
class Config:
    # the command-line contract shared by every script
    data: str = option("yelp_style", "corpus (only yelp_style: Shen et al.'s sentiment data)", choices=["yelp_style"])
    data_dir: str = option("data", "where corpora are looked for first (then $IVAE_DATA_DIR)")
    out_dir: str = option("runs/style", "where config.json, log.csv, metrics.json, checkpoints, transfers go")
    seed: int = option(0, "seed of every random generator")
    cuda: bool = option(False, "insist on a CUDA GPU (an error if there is none)")
    cpu: bool = option(False, "run on the CPU even if a GPU is present")
    threads: int = option(0, "CPU threads torch may use (0: all cores; 1 when other work shares the machine)")
    epochs: int = option(25, "training epochs (authors: 25)")
    max_steps: int = option(0, "stop after this many training steps in all (0: no cap; for smoke runs)")
    resume: bool = option(False, "continue from out_dir/checkpoint.pt (checkpoint.prev.pt if that one is bad)")
    eval_only: bool = option(False, "no training: evaluate out_dir/checkpoint.pt on test")
    overwrite: bool = option(False, "start afresh in an out_dir that holds a run (deletes that run)")
    split: str = option("standard", "standard (Shen et al.) or no_train (opt-in: see the docstring)",
                        choices=list(STYLE_SPLITS))
    # model (the authors' transfer_yelp sizes)
    emb_dim: int = option(128, "word embedding size")
    hidden: int = option(128, "LSTM hidden size of the encoder and of each decoder")
    latent: int = option(128, "content code z")
    noise_dim: int = option(32, "dimensions of the encoder's noise eps (G(h, eps))")
    prior_noise: int = option(32, "dimensions of the implicit prior's input noise")
    prior_width: int = option(128, "width of the implicit prior's MLP (128-128-128)")
    nu_width: int = option(256, "width of the critic nu(z)'s two hidden layers")
    cls_width: int = option(128, "width of the adversarial classifier's hidden layer")
    # training (the authors' schedule)
    batch_size: int = option(64, "sentences per batch")
    ae_lr: float = option(1.0, "SGD learning rate of encoder, G and decoders")
    clip: float = option(1.0, "gradient-norm clip of the autoencoder update")
    adv_lr: float = option(1e-4, "Adam learning rate of prior generator, critic and classifier (betas 0.5, 0.999)")
    nu_steps: int = option(4, "critic updates per iteration")
    kl_weight: float = option(1.0, "weight of E_q nu(z), the dual KL(q(z) || p(z)), in the encoder's loss")
    class_weight: float = option(1.0, "weight of the encoder's fool-the-classifier loss (ARAE lambda_class)")
    # evaluation
    eval_samples: int = option(16, "posterior samples averaged into the z of a transfer / reconstruction")
    eval_limit: int = option(0, "evaluate on the first N sentences of a split only (0: all)")
    max_decode_len: int = option(30, "longest transfer, in tokens")
    fasttext_dim: int = option(64, "fastText classifier: embedding size")
    fasttext_buckets: int = option(2 ** 18, "fastText classifier: hash buckets for bigrams")
    fasttext_epochs: int = option(3, "fastText classifier: training epochs")
    fasttext_lr: float = option(5e-3, "fastText classifier: Adam learning rate (ours; fastText's own SGD "
                                      "schedule does not carry over to Adam)")
    log_every: int = option(100, "training steps between progress lines")
    save_every: int = option(1000, "training steps between checkpoints (also at every epoch's end)")


RUN_CONTROL = {"data_dir", "out_dir", "cuda", "cpu", "threads", "epochs", "max_steps", "resume", "eval_only",
               "overwrite", "eval_samples", "eval_limit", "max_decode_len", "fasttext_dim", "fasttext_buckets",
               "fasttext_epochs", "fasttext_lr", "log_every", "save_every"}


# ----------------------------------------------------------------------------------------------------
# PAPER §5.2: the model
# ----------------------------------------------------------------------------------------------------

def mlp(sizes: list) -> nn.Sequential:
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*mods)


class Encoder(nn.Module):
    """LSTM over the sentence; the last state, L2-normalised (as ARAE), then z = G(h, eps)."""

    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, cfg.emb_dim)
        self.rnn = nn.LSTM(cfg.emb_dim, cfg.hidden, batch_first=True)
        self.g = mlp([cfg.hidden + cfg.noise_dim, cfg.latent, cfg.latent])
        self.noise_dim = cfg.noise_dim

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))                                   # (B, T, H)
        h = out[torch.arange(x.shape[0], device=x.device), lengths - 1]  # (B, H)
        return F.normalize(h, dim=-1)

    def forward(self, x, lengths, n_samples: int = 1, generator=None) -> torch.Tensor:
        h = self.features(x, lengths)
        eps = torch.randn(h.shape[0], n_samples, self.noise_dim, device=h.device, generator=generator)
        return self.g(torch.cat([h.unsqueeze(1).expand(-1, n_samples, -1), eps], -1))   # (B, S, Z)


class Decoders(nn.Module):
    """One LSTM decoder (and input embedding) per sentiment, z concatenated to every input, one shared
    output layer: p(x | z, y)."""

    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.emb = nn.ModuleList([nn.Embedding(vocab_size, cfg.emb_dim) for _ in range(2)])
        self.rnn = nn.ModuleList([nn.LSTM(cfg.emb_dim + cfg.latent, cfg.hidden, batch_first=True)
                                  for _ in range(2)])
        self.out = nn.Linear(cfg.hidden, vocab_size)

    def forward(self, x_in: torch.Tensor, z: torch.Tensor, style: int, state=None):
        N, T = x_in.shape
        inp = torch.cat([self.emb[style](x_in), z.unsqueeze(1).expand(N, T, z.shape[-1])], -1)
        out, state = self.rnn[style](inp, state)
        return self.out(out), state                                      # (N, T, V)

    def nll(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-log p(x | z, y) per sentence, each row through its own sentiment's decoder. -> (B,)"""
        out = torch.zeros(x.shape[0], device=x.device)
        for style in (0, 1):
            rows = (y == style).nonzero(as_tuple=True)[0]
            if len(rows):
                logits, _ = self(x[rows, :-1], z[rows], style)
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[rows, 1:].reshape(-1),
                                      ignore_index=data.PAD_ID, reduction="none")
                out = out.index_put((rows,), nll.view(len(rows), -1).sum(1))
        return out


class StyleModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg)
        self.decoders = Decoders(vocab_size, cfg)
        self.prior = mlp([cfg.prior_noise, cfg.prior_width, cfg.prior_width, cfg.latent])   # implicit p(z)
        self.nu = mlp([cfg.latent, cfg.nu_width, cfg.nu_width, 1])        # critic nu(z), no BatchNorm
        self.classifier = mlp([cfg.latent, cfg.cls_width, 2])             # y from z
        self.prior_noise = cfg.prior_noise

    def prior_sample(self, n: int, device, generator=None) -> torch.Tensor:
        return self.prior(torch.randn(n, self.prior_noise, device=device, generator=generator))   # (n, Z)

    def critic(self, z: torch.Tensor) -> torch.Tensor:
        return self.nu(z).squeeze(-1)


def make_optimizers(model: StyleModel, cfg: Config) -> dict:
    ae = list(model.encoder.parameters()) + list(model.decoders.parameters())
    adam = dict(lr=cfg.adv_lr, betas=(0.5, 0.999))
    return {"ae": torch.optim.SGD(ae, lr=cfg.ae_lr), "nu": torch.optim.Adam(model.nu.parameters(), **adam),
            "prior": torch.optim.Adam(model.prior.parameters(), **adam),
            "cls": torch.optim.Adam(model.classifier.parameters(), **adam)}


# ----------------------------------------------------------------------------------------------------
# PAPER §3.2 + §5.2: one training iteration
# ----------------------------------------------------------------------------------------------------

def step(opt, loss: torch.Tensor, params=None, clip: float = 0.0) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def train_step(model: StyleModel, opts: dict, batch: data.Batch, cfg: Config) -> dict:
    x, lengths, y = batch.tokens, batch.lengths, batch.labels
    B = x.shape[0]
    z = model.encoder(x, lengths).squeeze(1)                             # (B, Z), one sample each

    # Eq. (13): the critic chases KL(q(z) || p(z)) with p the implicit prior; fresh prior samples each time.
    for _ in range(cfg.nu_steps):
        z_prior = model.prior_sample(B, x.device).detach()
        kl = metrics.dual_kl(model.critic(z.detach()), model.critic(z_prior))
        step(opts["nu"], -kl)

    # The implicit prior moves towards q(z): it minimises the same estimate, through its samples only
    # (only the -E_p exp(nu) term depends on it).
    kl_prior = metrics.dual_kl(model.critic(z.detach()).detach(), model.critic(model.prior_sample(B, x.device)))
    step(opts["prior"], kl_prior)

    # L_class, classifier's side: tell the sentiment from z.
    cls_loss = F.cross_entropy(model.classifier(z.detach()), y)
    step(opts["cls"], cls_loss)

    # Autoencoder (Eq. 14 + L_class): reconstruct with the right decoder, pull q(z) to the prior, fool the
    # classifier (train it towards the flipped label). Sum over tokens, mean over sentences.
    rec = model.decoders.nll(x, z, y).mean()
    kl_term = model.critic(z).mean()                                     # E_q nu(z); E_p exp(nu) has no phi
    fool = F.cross_entropy(model.classifier(z), 1 - y)
    loss = rec + cfg.kl_weight * kl_term + cfg.class_weight * fool
    ae_params = list(model.encoder.parameters()) + list(model.decoders.parameters())
    step(opts["ae"], loss, ae_params, cfg.clip)
    return {"rec": rec.detach(), "kl": kl.detach(), "cls_loss": cls_loss.detach(), "fool": fool.detach()}


# ----------------------------------------------------------------------------------------------------
# Table 7: evaluation — a fastText-style sentiment classifier, transfers, Acc / BLEU / PPL / RPPL
# ----------------------------------------------------------------------------------------------------

class FastText(nn.Module):
    """Joulin et al. (2017): the mean of the embeddings of a sentence's words and hashed word bigrams,
    then a linear layer. Bigram (a, b) goes to bucket (a * V + b) mod buckets."""

    def __init__(self, vocab_size: int, dim: int, buckets: int):
        super().__init__()
        self.vocab_size, self.buckets = vocab_size, buckets
        self.bag = nn.EmbeddingBag(vocab_size + buckets, dim, mode="mean", sparse=True)   # sparse grads: fast
        self.linear = nn.Linear(dim, 2)

    def features(self, sentences: list) -> tuple:
        ids, offsets = [], []
        for s in sentences:
            offsets.append(len(ids))
            grams = list(s) + [self.vocab_size + (a * self.vocab_size + b) % self.buckets for a, b in zip(s, s[1:])]
            ids += grams or [data.UNK_ID]
        return torch.tensor(ids), torch.tensor(offsets)

    def forward(self, sentences: list) -> torch.Tensor:
        ids, offsets = self.features(sentences)
        return self.linear(self.bag(ids.to(self.linear.weight.device), offsets.to(self.linear.weight.device)))


def train_fasttext(sentences: list, labels: list, vocab_size: int, cfg: Config, device) -> FastText:
    """Word ids without <s>/</s>; a few epochs of Adam, seeded, on the training split."""
    gen = torch.Generator().manual_seed(cfg.seed + 31)
    clf = FastText(vocab_size, cfg.fasttext_dim, cfg.fasttext_buckets).to(device)
    opts = [torch.optim.SparseAdam(clf.bag.parameters(), lr=cfg.fasttext_lr),
            torch.optim.Adam(clf.linear.parameters(), lr=cfg.fasttext_lr)]
    y = torch.tensor(labels, device=device)
    for _ in range(cfg.fasttext_epochs):
        for idx in torch.randperm(len(sentences), generator=gen).split(256):
            loss = F.cross_entropy(clf([sentences[i] for i in idx.tolist()]), y[idx.to(device)])
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
    return clf.eval()


@torch.no_grad()
def classify(clf: FastText, sentences: list) -> list:
    return [p for i in range(0, len(sentences), 1024) for p in clf(sentences[i:i + 1024]).argmax(-1).tolist()]


@torch.no_grad()
def greedy(model: StyleModel, z: torch.Tensor, style: int, max_len: int) -> list:
    """Greedy decodes of z (N, Z) with one sentiment's decoder -> token-id lists (stopping at </s>)."""
    N = z.shape[0]
    token = torch.full((N, 1), data.BOS_ID, dtype=torch.long, device=z.device)
    state, out = None, []
    for _ in range(max_len):
        logits, state = model.decoders(token, z, style, state)
        token = logits[:, -1].argmax(-1, keepdim=True)
        out.append(token)
        if bool((torch.cat(out, 1) == data.EOS_ID).any(1).all()):
            break
    return torch.cat(out, 1).tolist()


def text_scores(sources: list, transfers: list, targets: list, predicted: list, references: list,
                vocabulary: tuple = ()) -> dict:
    """Table 7's automatic columns from words: Acc (share predicted == target), BLEU (x100, mean over
    sentences, method7, n = 3) against the sources and, where given, against the human references, and
    RPPL (5-gram LM of the transfers, perplexity of the sources).

    RPPL as defined maps every source word the transfers never use to one <unk>, so transfers that
    repeat a few words can score a *low* RPPL. `rppl_vocab` fits the LM with every vocabulary word
    prepended once (as the reverse PPL of Table 5), which keeps words apart and penalises such transfers."""
    out = {"acc": 100.0 * sum(p == t for p, t in zip(predicted, targets)) / len(targets),
           "bleu": 100.0 * sum(metrics.sentence_bleu(s, t, n=3) for s, t in zip(sources, transfers)) / len(sources),
           "rppl": metrics.NGramLM(order=5).fit(transfers).perplexity(sources)}
    if vocabulary:
        out["rppl_vocab"] = metrics.NGramLM(order=5).fit([[w] for w in vocabulary] + list(transfers)).perplexity(sources)
    pairs = [(r, t) for r, t in zip(references, transfers) if r]
    if pairs:
        out["bleu_ref"] = 100.0 * sum(metrics.sentence_bleu(r, t, n=3) for r, t in pairs) / len(pairs)
    return out


@torch.no_grad()
def evaluate(model: StyleModel, corpus: data.Corpus, split: str, cfg: Config, device, clf=None) -> tuple:
    """Transfers of every sentence of `split` and their scores; PPL by teacher forcing. Returns
    (metrics, transfer lines)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    every = corpus.examples[split]
    keep = range(len(every)) if not cfg.eval_limit else \
        range(0, len(every), max(1, len(every) // cfg.eval_limit))[:cfg.eval_limit]   # both sentiments
    examples = [every[i] for i in keep]
    refs = [corpus.references[split][i] for i in keep] if split in corpus.references else [None] * len(keep)
    n = len(examples)
    nll, words, kl_q, kl_p, m = 0.0, 0, 0.0, 0.0, 0
    sources, transfers, targets, order = [], [], [], []
    for idx in data.batch_plan([len(e.ids) for e in examples], cfg.batch_size, 0, 0, shuffle=False):
        batch = data.collate([examples[i] for i in idx]).to(device)
        z = model.encoder(batch.tokens, batch.lengths, cfg.eval_samples, gen).mean(1)   # (B, Z)
        nll += float(model.decoders.nll(batch.tokens, z, batch.labels).sum())
        words += int((batch.lengths - 1).sum())
        zq = model.encoder(batch.tokens, batch.lengths, 1, gen).squeeze(1)
        zp = model.prior_sample(len(idx), device, gen)
        kl_q += float(model.critic(zq).double().sum())
        kl_p += float(model.critic(zp).double().exp().sum())
        m += len(idx)
        for style in (0, 1):                                             # transfer to the other sentiment
            rows = (batch.labels == style).nonzero(as_tuple=True)[0]
            if len(rows):
                for r, ids in zip(rows.tolist(), greedy(model, z[rows], 1 - style, cfg.max_decode_len)):
                    order.append(idx[r])
                    sources.append(corpus.vocab.decode(examples[idx[r]].ids))
                    transfers.append(corpus.vocab.decode(ids))
                    targets.append(1 - style)
    result = {"ppl": metrics.perplexity(nll, words), "kl_agg": kl_q / m - kl_p / m + 1.0, "n_sentences": n}
    if clf is not None:
        predicted = classify(clf, [corpus.vocab.encode(t, add_markers=False) for t in transfers])
        words = tuple(w for w in corpus.vocab.itos if w not in (data.PAD, data.BOS, data.EOS))
        result.update(text_scores(sources, transfers, targets, predicted, [refs[i] for i in order], words))
    lines = [f"{1 - t}->{t}\t{' '.join(s)}\t{' '.join(tr)}" + (f"\t{' '.join(refs[i])}" if refs[i] else "")
             for s, tr, t, i in zip(sources, transfers, targets, order)]
    model.train()
    return result, lines


# ----------------------------------------------------------------------------------------------------
# PLUMBING: training loop, checkpoints, main()
# ----------------------------------------------------------------------------------------------------

def checkpoint_state(cfg, vocab, model, opts, step_, best=None) -> dict:
    return {"script": data.script_of(cfg), "config": asdict(cfg), "vocab": vocab.state_dict(),
            "model": model.state_dict(),
            "opts": {k: o.state_dict() for k, o in opts.items()}, "step": step_, "best": best,
            "rng": data.rng_state()}


def train(cfg, corpus, model, opts, state, device, log: data.CsvLog) -> int:
    batcher = data.Batcher(corpus.examples["train"], cfg.batch_size, seed=cfg.seed, equal_length=False)
    steps_per_epoch = len(batcher)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    step_ = state["step"]
    ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
    t_begin = time.time() - state["train_time_s"]                        # train_time_s sums every process

    def save(validated=True):
        ckpt = checkpoint_state(cfg, corpus.vocab, model, opts, step_)
        data.save_checkpoint({**ckpt, "validated": validated, "train_time_s": time.time() - t_begin}, ckpt_path)

    def validate():
        print(f"validating at step {step_}", flush=True)
        with stop.interruptible():                                       # the first Ctrl-C stops it at once
            row, _ = evaluate(model, corpus, "valid", cfg, device)
        row = {"step": step_, "epoch": step_ / steps_per_epoch, "split": "valid", "data_split": cfg.split, **row}
        print(f"valid @ step {step_}: reconstruction PPL {row['ppl']:.2f} | KL(q(z)||p) {row['kl_agg']:.2f}",
              flush=True)
        log.write(row)

    print(f"training: {steps_per_epoch} batches per epoch, steps {step_} -> {total}", flush=True)
    acc, n_acc, t0 = {}, 0, time.time()
    with data.GracefulInterrupt() as stop:
        if not state["validated"]:                         # resumed from a checkpoint that awaits its validation
            validate()
            save()
        while step_ < total and not stop.requested:
            for batch in batcher.epoch(step_ // steps_per_epoch, start=step_ % steps_per_epoch):
                out = train_step(model, opts, batch.to(device), cfg)
                step_ += 1
                for k, v in out.items():
                    acc[k] = acc.get(k, 0) + v
                n_acc += 1
                end_of_epoch = step_ % steps_per_epoch == 0
                saving = end_of_epoch or step_ % cfg.save_every == 0 or step_ >= total or stop.requested
                if step_ % cfg.log_every == 0 or saving:
                    means = {k: float(v) / n_acc for k, v in acc.items()}
                    data.check_finite(means, step_, ckpt_path, "Lower --ae_lr or --adv_lr.")
                if step_ % cfg.log_every == 0 or step_ == total:
                    dt = time.time() - t0
                    print(f"step {step_:>6}/{total} | ep {step_ / steps_per_epoch:5.2f} | rec {means['rec']:6.2f} | "
                          f"KLq {means['kl']:6.2f} | cls {means['cls_loss']:.3f} | fool {means['fool']:.3f} | "
                          f"{n_acc / dt:5.1f} step/s | ETA {(total - step_) * dt / n_acc / 60:5.1f} min", flush=True)
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


def main(argv=None) -> dict:
    cfg, parser = data.parse_config(Config, "Sentiment transfer with iVAE_MI (Fang et al. 2019, §5.2)", argv)
    for name in ("epochs", "batch_size", "emb_dim", "hidden", "latent", "noise_dim", "prior_noise", "prior_width",
                 "nu_width", "cls_width", "eval_samples", "max_decode_len", "fasttext_dim", "fasttext_buckets",
                 "fasttext_epochs", "log_every", "save_every"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "eval_limit", "nu_steps", "ae_lr", "adv_lr", "clip", "kl_weight", "class_weight"):
        if getattr(cfg, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.fasttext_lr <= 0:
        parser.error(f"--fasttext_lr must be > 0, got {cfg.fasttext_lr}")
    if cfg.resume and cfg.eval_only:
        parser.error("--resume and --eval_only exclude each other")
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    ckpt = data.open_run(cfg, parser, RUN_CONTROL, device)
    state = {"step": 0, "validated": True, "train_time_s": 0.0}                    # a fresh run; or resumed:
    state.update({k: ckpt[k] for k in state if k in ckpt} if ckpt else {})
    data.set_seed(cfg.seed)
    try:
        vocab = data.Vocab.from_state_dict(ckpt["vocab"]) if ckpt else None
        corpus = data.load_style_corpus(cfg.data_dir, cfg.split, vocab=vocab)
    except data.DataError as err:
        hint = (" -- for a copy without Shen et al.'s training files (sentiment.train.*), try --split no_train"
                if cfg.split == "standard" else "")
        parser.error(str(err) + hint)
    os.makedirs(cfg.out_dir, exist_ok=True)
    print(f"device: {data.describe_device(device)}")
    print(f"corpus yelp_style, split {cfg.split}: " + ", ".join(f"{s} {len(e):,}" for s, e in corpus.examples.items())
          + f" sentences, vocabulary {len(corpus.vocab):,}")
    model = StyleModel(len(corpus.vocab), cfg).to(device)
    opts = make_optimizers(model, cfg)
    start = state["step"]
    if ckpt:
        model.load_state_dict(ckpt["model"])
        if not cfg.eval_only:
            for k, o in opts.items():
                o.load_state_dict(ckpt["opts"][k])
            data.set_rng_state(ckpt["rng"])
    data.write_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    # A resume drops the log's rows after the checkpoint (and its step's row if it still awaits its
    # validation); --eval_only leaves log.csv as it is.
    log = data.CsvLog(os.path.join(cfg.out_dir, "log.csv"), read_only=cfg.eval_only,
                      resume_step=start - (not state["validated"]) if ckpt else None)
    t_start = time.time()
    if not cfg.eval_only:
        try:
            start = train(cfg, corpus, model, opts, state, device, log)
        except FloatingPointError as err:
            raise SystemExit(f"stopped: {err}")
    train_time = state["train_time_s"] + time.time() - t_start                # over every process of the run

    # Table 7 on the test split. The classifier is trained on the training split, tested on test sources.
    train_text = [corpus.vocab.encode(w, add_markers=False) for w in corpus.texts["train"]]
    clf = train_fasttext(train_text, [e.label for e in corpus.examples["train"]], len(corpus.vocab), cfg, device)
    test_text = [corpus.vocab.encode(w, add_markers=False) for w in corpus.texts["test"]]
    labels = [e.label for e in corpus.examples["test"]]
    clf_acc = 100.0 * sum(p == y for p, y in zip(classify(clf, test_text), labels)) / len(labels)
    result, lines = evaluate(model, corpus, "test", cfg, device, clf)
    result = {"split": "test", "data_split": cfg.split, "step": start, **result, "classifier_acc": clf_acc,
              "train_time_s": round(train_time, 1), "device": data.describe_device(device)}
    print(f"test ({cfg.split} split): Acc {result['acc']:.1f} | BLEU {result['bleu']:.1f}"
          + (f" | BLEU-ref {result['bleu_ref']:.1f}" if "bleu_ref" in result else "")
          + f" | PPL {result['ppl']:.2f} | RPPL {result['rppl']:.1f} (with the vocabulary {result['rppl_vocab']:.1f})"
          f" | classifier's own test accuracy {clf_acc:.1f}")
    log.write({"epoch": "", **result})
    data.write_json(os.path.join(cfg.out_dir, "metrics.json"), result)
    with open(os.path.join(cfg.out_dir, "transfers.txt"), "w", encoding="utf-8") as f:
        f.write(f"# split {cfg.split}, step {start}: direction (0 negative, 1 positive)\tsource\ttransfer"
                + ("\thuman rewrite" if corpus.references.get("test") else "") + "\n" + "\n".join(lines) + "\n")
    for line in lines[:3] + lines[-3:]:
        print("transfer:", line)
    # samples.txt: the implicit prior's samples decoded by each sentiment's decoder (same z on a line).
    z = model.prior_sample(10, device, torch.Generator(device=device).manual_seed(cfg.seed + 777))
    neg, pos = (greedy(model, z, style, cfg.max_decode_len) for style in (0, 1))
    with open(os.path.join(cfg.out_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("# z from the implicit prior\tnegative decoder\tpositive decoder\n" + "".join(
            f"{i}\t{' '.join(corpus.vocab.decode(a))}\t{' '.join(corpus.vocab.decode(b))}\n"
            for i, (a, b) in enumerate(zip(neg, pos))))
    rows = [r for r in log.rows() if r.get("split") == "valid"]
    metrics.plot_curves(rows, ["ppl", "kl_agg"], os.path.join(cfg.out_dir, "curves.png"))
    print(f"wrote {cfg.out_dir}/: config.json log.csv metrics.json checkpoint.pt transfers.txt samples.txt curves.png")
    return result


if __name__ == "__main__":
    data.run_script(main)

r"""Unaligned sentiment transfer with iVAE_MI on Yelp (Fang et al., EMNLP 2019, §5.2, Tables 6-7).

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Authors' code: github.com/fangleai/Implicit-LVM, transfer_yelp/ (built on ARAE,
Zhao et al. 2018), whose sizes and update structure this script follows.

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
    §3.2 Eq. (13)-(14) with an implicit prior; L_class                           -> train_iteration
    Table 7: Acc (fastText), BLEU, PPL, RPPL                                     -> "Evaluation"
    Table 6: transferred sentences                                               -> transfers.txt, --transfer

Run
    python style_transfer.py --split standard          # Shen et al.'s split (needs sentiment.train.{0,1})
    python style_transfer.py --split no_train          # the opt-in split for copies without train files
    python style_transfer.py --split no_train --max_steps 200 --threads 1 --out_dir /tmp/st_smoke   # smoke
    python style_transfer.py --eval_only --transfer "the food was cold and bland ."   # your sentence
    echo "the staff was rude ." | python style_transfer.py --eval_only --transfer -     # one per line
    (add --temperature 0.7 to sample instead of greedy decoding; --cuda on a GPU)

Splits. `standard`: Shen et al.'s train / dev / test. `no_train` (opt-in, for the copies here, which lack
Shen's training files): trains on Shen's test files, validates on Shen's dev files minus Li et al. (2018)'s
1,000 test sentences, and tests on those 1,000 sentences, which have human rewrites (BLEU-ref). Every
output (metrics.json, log.csv, transfers.txt) says which split produced it.

Evaluation (Table 7), on the test split:
    Acc     share of transfers that a fastText-style classifier (FastText) labels with the target sentiment;
            trained once per split with its own seed and reused by every run. `classifier_acc`: its accuracy
            on the test sources; `acc_ceiling`: on Li et al.'s human rewrites (what they would score).
    BLEU    nltk sentence BLEU (method7, n = 3, as the authors' code), x100, mean over sentences, between
            each source and its transfer; `bleu_ref` against Li et al.'s human rewrites where present;
            `bleu_nltk34` smoothed as nltk 3.2.2-3.4.5, of the paper's time, did (metrics.sentence_bleu).
    PPL     reconstruction perplexity of the test sentences, teacher-forced with their own sentiment's
            decoder, z the mean of `eval_samples` posterior samples; words counting </s>.
    RPPL    `rppl`, the authors' way (metrics.rppl_authors): a 5-gram LM fitted on the transfers, scoring
            the sources, per direction; `rppl_pooled`, `rppl_vocab`: other conventions (text_scores).
    Flu / Sim of Table 7 were human ratings: not reproducible here.
Paper (Acc / BLEU / PPL / RPPL): ARAE 95 / 32.5 / 6.8 / 395; iVAE_MI 92 / 36.7 / 6.2 / 285.

Validation, after every epoch, on a fixed subset of `val_sentences` validation sentences (both
sentiments): reconstruction PPL, the critic's KL, and Acc and self-BLEU of their transfers. The checkpoint
with the best G-score sqrt(Acc * BLEU) (Xu et al. 2018) is kept as best.pt and evaluated on test.

Shapes: B sentences, T tokens, V vocabulary, E embedding, H hidden, Z content code, N prior noise.

Deviations from the authors' code (and why)
    * The critic's KL estimate is the real dual, E_q nu - E_p exp(nu) + 1 (metrics.dual_kl). The authors'
      critic returns the batch mean before the exp, exp(mean nu), which is not the dual form and has no
      upper bound when q != p (RESEARCH.md: 10.2-56.6 and rising on a toy with true KL 1.0), and has
      BatchNorm inside, which makes a sample's value depend on the rest of its batch; ours has neither.
    * Model selection on validation G-score (best.pt); the authors report the model after the last epoch.
    * The transfer decodes from the mean of `eval_samples` posterior samples (one draw is noisier).
    * The fastText classifier is a small PyTorch re-implementation trained here, not the fastText binary.
    * The classifier outputs one logit (BCE with logits); the authors' a sigmoid then BCE: the same loss.
    * PyTorch's default initialisation (the authors: uniform(-0.1, 0.1) for the seq2seq, N(0, 0.02) MLPs).
    * Batches are padded length buckets of one sentiment (the authors' batchify also pads within a batch).
    * bf16 autocast where the hardware has it natively (--precision auto; the authors: fp32; speed and
      losses: results/bench/README.md).
"""
import contextlib
import hashlib
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import STYLE_SPLITS, option


@dataclass
class Config(data.RunConfig):
    # the run: the flags every script shares are data.RunConfig's (--data --seed --out_dir --resume ...)
    data: str = option("yelp_style", "corpus (only yelp_style: Shen et al.'s sentiment data)", choices=["yelp_style"])
    out_dir: str = option("runs/style", "where config.json, log.csv, metrics.json, checkpoints, transfers go", run=True)
    epochs: int = option(25, "training epochs (authors: 25)", low=1, run=True)
    eval_only: bool = option(False, "no training: evaluate out_dir/best.pt (else checkpoint.pt) on test, or "
                                    "transfer the --transfer sentences", run=True)
    split: str = option("standard", "standard (Shen et al.) or no_train (opt-in: see the docstring)",
                        choices=list(STYLE_SPLITS))
    # model (the authors' transfer_yelp sizes)
    emb_dim: int = option(128, "word embedding size (authors: 128)", low=1)
    hidden: int = option(128, "LSTM size of the encoder and of each decoder; also the code z (authors: 128)", low=1)
    noise_dim: int = option(128, "size of the encoder's noise eps in G(h, eps) (authors: randn_like(h))", low=1)
    prior_noise: int = option(32, "dimensions of the implicit prior's input noise (authors' z_size: 32)", low=1)
    prior_width: int = option(128, "width of the implicit prior's two hidden layers (authors' arch_g)", low=1)
    nu_width: int = option(128, "width of the critic nu(z)'s two hidden layers (authors' arch_d)", low=1)
    cls_width: int = option(128, "width of the classifier's two hidden layers (authors' arch_classify)", low=1)
    # training (the authors' schedule)
    batch_size: int = option(64, "sentences per batch; each iteration takes one negative and one positive batch")
    ae_lr: float = option(1.0, "SGD learning rate of encoder, G and decoders (each of their steps)", low=0)
    clip: float = option(1.0, "gradient-norm clip of each encoder/decoder step", low=0)
    noise_r: float = option(0.1, "std of the Gaussian noise on h in the reconstruction step (authors: 0.1)", low=0)
    noise_anneal: float = option(0.9995, "noise_r is multiplied by this every 100 iterations (authors)")
    adv_lr: float = option(1e-4, "Adam learning rate of prior, critic and classifier (betas 0.5, 0.999)", low=0)
    nu_steps: int = option(4, "critic updates per iteration (authors' niters_gan_d: 4)", low=0)
    kl_weight: float = option(1.0, "weight of E_q nu(z), the dual KL(q(z) || p(z)), in the encoder's step", low=0)
    class_weight: float = option(1.0, "weight of the encoder's fool-the-classifier step (ARAE lambda_class)", low=0)
    # evaluation
    eval_samples: int = option(16, "posterior samples averaged into the z of a transfer", low=1, run=True)
    eval_limit: int = option(0, "test on N sentences, spread over both sentiments (0: all)", low=0, run=True)
    val_sentences: int = option(1000, "fixed validation subset scored after every epoch (0: none)", low=0, run=True)
    max_decode_len: int = option(30, "longest transfer, in tokens", low=1, run=True)
    temperature: float = option(0.0, "0: greedy decoding (Table 7); > 0: sample softmax(logits / T)", low=0, run=True)
    classifier_dir: str = option("runs/classifiers", "where the Acc classifier is saved once per split and reused",
                                 run=True)
    classifier_seed: int = option(0, "seed of the Acc classifier (its own: independent of --seed)", run=True)
    fasttext_dim: int = option(64, "fastText classifier: embedding size", low=1, run=True)
    fasttext_buckets: int = option(2 ** 18, "fastText classifier: hash buckets for bigrams", low=1, run=True)
    fasttext_epochs: int = option(3, "fastText classifier: training epochs", low=1, run=True)
    fasttext_lr: float = option(5e-3, "fastText classifier: Adam learning rate (ours; fastText's own SGD "
                                      "schedule does not carry over to Adam)", run=True)


# ----------------------------------------------------------------------------------------------------
# PAPER §5.2: the model (sizes from the authors' transfer_yelp/models_yelp.py)
# ----------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    r"""q(z | x): LSTM over the sentence, the last state L2-normalised (as ARAE), then the implicit G:

        h = LSTM(x)_T / |LSTM(x)_T|         (B, H)
        h <- h + noise_r * N(0, I)          (reconstruction step only; annealed; ARAE's regulariser)
        z = W2 (W1 [h; eps] + b1) + b2      eps ~ N(0, I_noise_dim); two Linear layers, no nonlinearity

    With no nonlinearity G is affine, so q(z | x) is a Gaussian whose covariance is shared by all x
    (the authors' choice, kept)."""

    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, cfg.emb_dim)
        self.rnn = nn.LSTM(cfg.emb_dim, cfg.hidden, batch_first=True)
        self.g = nn.Sequential(nn.Linear(cfg.hidden + cfg.noise_dim, cfg.hidden), nn.Linear(cfg.hidden, cfg.hidden))
        self.noise_dim = cfg.noise_dim

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))                                   # (B, T, H)
        h = out[torch.arange(x.shape[0], device=x.device), lengths - 1]  # (B, H), the state at </s>
        return F.normalize(h, dim=-1)

    def forward(self, x, lengths, n_samples: int = 1, generator=None, noise_r: float = 0.0) -> torch.Tensor:
        h = self.features(x, lengths)                                    # (B, H)
        if noise_r > 0:
            h = h + noise_r * torch.randn(h.shape, device=h.device, generator=generator)
        eps = torch.randn(h.shape[0], n_samples, self.noise_dim, device=h.device, generator=generator)
        return self.g(torch.cat([h.unsqueeze(1).expand(-1, n_samples, -1), eps], -1))   # (B, S, Z)


class Decoders(nn.Module):
    """One LSTM decoder (and input embedding) per sentiment, z concatenated to every input, one shared
    output layer: p(x | z, y)."""

    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.emb = nn.ModuleList([nn.Embedding(vocab_size, cfg.emb_dim) for _ in range(2)])
        self.rnn = nn.ModuleList([nn.LSTM(cfg.emb_dim + cfg.hidden, cfg.hidden, batch_first=True)
                                  for _ in range(2)])
        self.out = nn.Linear(cfg.hidden, vocab_size)

    def forward(self, x_in: torch.Tensor, z: torch.Tensor, style: int, state=None):
        N, T = x_in.shape
        inp = torch.cat([self.emb[style](x_in), z.unsqueeze(1).expand(N, T, z.shape[-1])], -1)   # (N, T, E+Z)
        out, state = self.rnn[style](inp, state)
        return self.out(out), state                                      # (N, T, V)

    def nll(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-log p(x | z, y) per sentence (summed over its tokens, </s> included), each row through its own
        sentiment's decoder. -> (B,)"""
        out = torch.zeros(x.shape[0], device=x.device)
        for style in (0, 1):
            rows = (y == style).nonzero(as_tuple=True)[0]
            if len(rows):
                logits, _ = self(x[rows, :-1], z[rows], style)
                nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[rows, 1:].reshape(-1),
                                      ignore_index=data.PAD_ID, reduction="none")
                out = out.index_put((rows,), nll.view(len(rows), -1).sum(1))
        return out


class StyleModel(nn.Module):
    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        W, Z = cfg.prior_width, cfg.hidden
        self.encoder = Encoder(vocab_size, cfg)
        self.decoders = Decoders(vocab_size, cfg)
        # implicit prior p(z) = G_p(noise): the authors' MLP_G, Linear-BN-ReLU twice, then Linear
        self.prior = nn.Sequential(nn.Linear(cfg.prior_noise, W), nn.BatchNorm1d(W), nn.ReLU(),
                                   nn.Linear(W, W), nn.BatchNorm1d(W), nn.ReLU(), nn.Linear(W, Z))
        # critic nu(z): the authors' MLP_D sizes (128-128, LeakyReLU 0.2), without its BatchNorm (see above)
        self.nu = nn.Sequential(nn.Linear(Z, cfg.nu_width), nn.LeakyReLU(0.2),
                                nn.Linear(cfg.nu_width, cfg.nu_width), nn.LeakyReLU(0.2), nn.Linear(cfg.nu_width, 1))
        # adversarial classifier y from z: the authors' MLP_Classify (128-128, BatchNorm on the second layer)
        C = cfg.cls_width
        self.classifier = nn.Sequential(nn.Linear(Z, C), nn.ReLU(), nn.Linear(C, C), nn.BatchNorm1d(C), nn.ReLU(),
                                        nn.Linear(C, 1))
        self.prior_noise = cfg.prior_noise

    def prior_sample(self, n: int, device, generator=None) -> torch.Tensor:
        return self.prior(torch.randn(n, self.prior_noise, device=device, generator=generator))   # (n, Z)

    def critic(self, z: torch.Tensor) -> torch.Tensor:
        return self.nu(z).squeeze(-1).float()                            # (n,), fp32 before exp(nu)

    def class_logit(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(z).squeeze(-1).float()                    # (n,), logit of "positive"


def make_optimizers(model: StyleModel, cfg: Config) -> dict:
    ae = list(model.encoder.parameters()) + list(model.decoders.parameters())
    adam = dict(lr=cfg.adv_lr, betas=(0.5, 0.999))
    return {"ae": torch.optim.SGD(ae, lr=cfg.ae_lr), "nu": torch.optim.Adam(model.nu.parameters(), **adam),
            "prior": torch.optim.Adam(model.prior.parameters(), **adam),
            "cls": torch.optim.Adam(model.classifier.parameters(), **adam)}


# ----------------------------------------------------------------------------------------------------
# PAPER §3.2 + §5.2: one training iteration (a negative and a positive batch), the authors' structure;
# the loop
# ----------------------------------------------------------------------------------------------------

def noise_at(iteration: int, cfg: Config) -> float:
    """The reconstruction noise on h: noise_r, multiplied by noise_anneal every 100 iterations (authors)."""
    return cfg.noise_r * cfg.noise_anneal ** (iteration // 100)


def step(opt, loss: torch.Tensor, clip: float = 0.0) -> float:
    """One update of `opt`'s parameters from `loss`; with `clip`, their gradient norm is clipped first.
    Returns that norm before clipping (0 without clip)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = 0.0
    if clip:
        params = [p for g in opt.param_groups for p in g["params"]]
        norm = float(nn.utils.clip_grad_norm_(params, clip))
    opt.step()
    return norm


def train_iteration(model: StyleModel, opts: dict, batches: tuple, cfg: Config, iteration: int,
                    autocast=contextlib.nullcontext) -> dict:
    """The authors' train_yelp.py on batches = (negative batch, positive batch): for each sentiment separate
    clipped SGD steps of encoder + decoders, never one summed loss (`g_*`: their gradient norms before
    clipping), in this order:
        1. reconstruction (mean NLL per token), Gaussian noise noise_r on h (annealed)   x2 (neg, pos)
        2. classifier: tell y from z (Adam)                                               x2
        3. encoder fools the classifier (flipped label)                                   x2
        4. critic nu(z): nu_steps updates of the dual KL, batches alternating neg / pos   x4
        5. prior generator: one Adam step down the dual KL                                x1
        6. encoder: down E_q nu(z), the only part of the dual KL that depends on it       x2
    Forward passes run under `autocast`; losses, nu and exp(nu) are fp32; backward is outside."""
    out = {k: 0.0 for k in ("rec", "kl", "cls_loss", "fool", "g_rec", "g_fool", "g_kl")}
    for b in batches:                                                  # 1. reconstruction
        with autocast():
            z = model.encoder(b.tokens, b.lengths, noise_r=noise_at(iteration, cfg)).squeeze(1)   # (B, Z)
            # -log p(x | z, y), the mean over tokens (</s> included) as the authors' masked cross-entropy
            rec = model.decoders.nll(b.tokens, z, b.labels).sum() / (b.lengths - 1).sum()
        out["g_rec"] += step(opts["ae"], rec, cfg.clip) / 2
        out["rec"] += float(rec.detach()) / 2
    for b in batches:                                                  # 2. L_class, classifier's side
        with torch.no_grad(), autocast():
            z = model.encoder(b.tokens, b.lengths).squeeze(1)
        with autocast():
            cls_loss = F.binary_cross_entropy_with_logits(model.class_logit(z), b.labels.float())
        step(opts["cls"], cls_loss)
        out["cls_loss"] += float(cls_loss.detach()) / 2
    for b in batches:                                                  # 3. L_class, encoder's side
        with autocast():
            z = model.encoder(b.tokens, b.lengths).squeeze(1)
            fool = F.binary_cross_entropy_with_logits(model.class_logit(z), 1.0 - b.labels.float())
        out["g_fool"] += step(opts["ae"], cfg.class_weight * fool, cfg.clip) / 2
        out["fool"] += float(fool.detach()) / 2
    # 4. Eq. (13): the critic chases KL(q(z) || p(z)) = max_nu E_q nu(z) - E_p exp(nu(z)) + 1, with p the
    #    implicit prior; batches alternate negative / positive, fresh prior samples each update.
    for i in range(cfg.nu_steps):
        b = batches[i % 2]
        with torch.no_grad(), autocast():
            z_q = model.encoder(b.tokens, b.lengths).squeeze(1)         # (B, Z)
            z_p = model.prior_sample(z_q.shape[0], z_q.device)           # (B, Z)
        with autocast():
            kl = metrics.dual_kl(model.critic(z_q), model.critic(z_p))
        step(opts["nu"], -kl)
        out["kl"] += float(kl.detach()) / max(1, cfg.nu_steps)
    # 5. The implicit prior moves towards q(z): it minimises the same estimate through its samples (only
    #    the -E_p exp(nu) term depends on it).
    with autocast():
        z_p = model.prior_sample(batches[0].tokens.shape[0], batches[0].tokens.device)
        dual_p = -model.critic(z_p).exp().mean()                       # the dual's -E_p exp(nu) term
    step(opts["prior"], dual_p)
    for b in batches:                                                  # 6. Eq. (14): encoder's KL step
        with autocast():
            z = model.encoder(b.tokens, b.lengths).squeeze(1)
            # Eq. (14): min_phi E_q nu(z) (E_p exp(nu) has no phi); the critic's gradient is discarded
            kl_loss = cfg.kl_weight * model.critic(z).mean()
        out["g_kl"] += step(opts["ae"], kl_loss, cfg.clip) / 2
    return out


def train(cfg: Config, corpus: data.Corpus, model: StyleModel, opts: dict, batcher, clf, run: data.Run) -> None:
    """The iterations left (epochs or max_steps); after every epoch the fixed validation subset is scored
    and the model of the best G-score kept in best.pt (data.Run: checkpoints, the log, Ctrl-C)."""
    autocast = data.autocast_for(run.device, cfg.precision)              # bf16 where --precision says so

    def validate(step: int) -> dict:
        row, _ = evaluate(model, corpus, "valid", cfg, run.device, clf, limit=cfg.val_sentences, rppl=False)
        return {"data_split": cfg.split, **row}

    with run.training(len(batcher), validate if cfg.val_sentences else None):
        for batches in run.batches(batcher):                             # (negative batch, positive batch)
            out = train_iteration(model, opts, batches, cfg, run.step, autocast)
            run.after_step(out)


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
    """Word ids without <s>/</s>; a few epochs of Adam on the training split. Seeded by its own
    --classifier_seed (weights and batch order), so it does not depend on --seed or on what ran before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.classifier_seed)
        clf = FastText(vocab_size, cfg.fasttext_dim, cfg.fasttext_buckets).to(device)
    gen = torch.Generator().manual_seed(cfg.classifier_seed + 31)
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


def sentiment_classifier(corpus: data.Corpus, cfg: Config, device) -> tuple:
    """The Acc classifier of this split: loaded from --classifier_dir if it was trained before on the same
    training text with the same settings, else trained once and saved there. -> (classifier, path)"""
    key = hashlib.sha1(repr((cfg.split, cfg.fasttext_dim, cfg.fasttext_buckets, cfg.fasttext_epochs, cfg.fasttext_lr,
                             cfg.classifier_seed, corpus.vocab.itos, corpus.texts["train"])).encode()).hexdigest()[:12]
    path = os.path.join(cfg.classifier_dir, f"fasttext_{cfg.split}_{key}.pt")
    clf = FastText(len(corpus.vocab), cfg.fasttext_dim, cfg.fasttext_buckets).to(device)
    if os.path.exists(path):
        clf.load_state_dict(data.load_checkpoint(path, device)["model"])
        print(f"Acc classifier: loaded {path}")
        return clf.eval(), path
    train_text = [corpus.vocab.encode(w, add_markers=False) for w in corpus.texts["train"]]
    clf = train_fasttext(train_text, [e.label for e in corpus.examples["train"]], len(corpus.vocab), cfg, device)
    os.makedirs(cfg.classifier_dir, exist_ok=True)
    data.save_checkpoint({"model": clf.state_dict(), "split": cfg.split, "seed": cfg.classifier_seed}, path)
    print(f"Acc classifier: trained on the {cfg.split} training split and saved to {path}")
    return clf, path


@torch.no_grad()
def classify(clf: FastText, sentences: list) -> list:
    return [p for i in range(0, len(sentences), 1024) for p in clf(sentences[i:i + 1024]).argmax(-1).tolist()]


@torch.no_grad()
def decode(model: StyleModel, z: torch.Tensor, style: int, max_len: int, temperature: float = 0.0,
           generator=None) -> list:
    """Decodes of z (N, Z) with one sentiment's decoder -> token-id lists (read them up to </s>).
    temperature 0: greedy (argmax); > 0: sample each token from softmax(logits / temperature)."""
    N = z.shape[0]
    token = torch.full((N, 1), data.BOS_ID, dtype=torch.long, device=z.device)
    state, out = None, []
    for _ in range(max_len):
        logits, state = model.decoders(token, z, style, state)          # (N, 1, V)
        if temperature > 0:
            token = torch.multinomial(F.softmax(logits[:, -1] / temperature, -1), 1, generator=generator)
        else:
            token = logits[:, -1].argmax(-1, keepdim=True)               # (N, 1)
        out.append(token)
        if bool((torch.cat(out, 1) == data.EOS_ID).any(1).all()):
            break
    return torch.cat(out, 1).tolist()


def text_scores(sources: list, transfers: list, targets: list, predicted: list, references: list,
                vocabulary: tuple = (), rppl: bool = True) -> dict:
    """Table 7's automatic columns from words: Acc (share predicted == target), BLEU (x100, mean over
    sentences, method7, n = 3) against the sources and, where given, the human references; with `rppl`
    the reverse perplexities: `rppl` the authors' way (metrics.rppl_authors: per direction, </s> not
    scored, averaged), `rppl_pooled` one 5-gram LM of all transfers scored on all sources with </s>,
    `rppl_vocab` the same with every vocabulary word prepended once (as Table 5's reverse PPL)."""
    bleu = lambda old: 100 * sum(metrics.sentence_bleu(s, t, 3, old) for s, t in zip(sources, transfers)) / len(sources)
    out = {"acc": 100.0 * sum(p == t for p, t in zip(predicted, targets)) / len(targets), "bleu": bleu(False),
           "bleu_nltk34": bleu(True)}
    if rppl:
        out.update(metrics.rppl_authors(sources, transfers, targets))
        out["rppl_pooled"] = metrics.NGramLM(order=5).fit(transfers).perplexity(sources)
        if vocabulary:
            out["rppl_vocab"] = metrics.NGramLM(order=5).fit([[w] for w in vocabulary] + list(transfers)).perplexity(sources)
    pairs = [(r, t) for r, t in zip(references, transfers) if r]
    if pairs:
        out["bleu_ref"] = 100.0 * sum(metrics.sentence_bleu(r, t, n=3) for r, t in pairs) / len(pairs)
    return out


@torch.no_grad()
def evaluate(model: StyleModel, corpus: data.Corpus, split: str, cfg: Config, device, clf=None,
             limit: int = 0, rppl: bool = True) -> tuple:
    """Transfers of `limit` sentences of `split` (0: all) and their scores; PPL by teacher forcing.
    Returns (metrics, transfer lines)."""
    model.eval()
    autocast = data.autocast_for(device, cfg.precision)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    every = corpus.examples[split]
    keep = data.spread(range(len(every)), limit)                      # both sentiments: negatives come first
    examples = [every[i] for i in keep]
    refs = [corpus.references[split][i] for i in keep] if split in corpus.references else [None] * len(keep)
    nll, words, kl_q, kl_p, m = 0.0, 0, 0.0, 0.0, 0
    sources, transfers, targets, order = [], [], [], []
    for idx in data.batch_plan([len(e.ids) for e in examples], cfg.batch_size, 0, 0, shuffle=False):
        batch = data.collate([examples[i] for i in idx]).to(device)
        with autocast():                                                 # --precision
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
                    ids = decode(model, z[rows], 1 - style, cfg.max_decode_len, cfg.temperature, gen)
                    for r, out in zip(rows.tolist(), ids):
                        order.append(idx[r])
                        sources.append(corpus.vocab.decode(examples[idx[r]].ids))
                        transfers.append(corpus.vocab.decode(out))
                        targets.append(1 - style)
    # Eq. (13) at evaluation: KL(q(z) || p(z)) ~ E_q nu - E_p exp(nu) + 1 with the trained critic
    result = {"ppl": metrics.perplexity(nll, words), "kl_agg": kl_q / m - kl_p / m + 1.0, "n_sentences": len(examples)}
    if clf is not None:
        predicted = classify(clf, [corpus.vocab.encode(t, add_markers=False) for t in transfers])
        vocab = tuple(w for w in corpus.vocab.itos if w not in (data.PAD, data.BOS, data.EOS))
        result.update(text_scores(sources, transfers, targets, predicted, [refs[i] for i in order], vocab, rppl))
        # G-score (Xu et al. 2018): the geometric mean of Acc and self-BLEU, our selection criterion
        result["gscore"] = math.sqrt(max(result["acc"], 0.0) * max(result["bleu"], 0.0))
    lines = [f"{1 - t}->{t}\t{' '.join(s)}\t{' '.join(tr)}" + (f"\t{' '.join(refs[i])}" if refs[i] else "")
             for s, tr, t, i in zip(sources, transfers, targets, order)]
    model.train()
    return result, lines


def acc_ceiling(clf: FastText, corpus: data.Corpus, split: str) -> dict:
    """The classifier on Li et al.'s human rewrites: % labelled with the target (flipped) sentiment. A
    perfect transfer would score about this Acc; empty when the split has no rewrites."""
    pairs = [(r, e.label) for r, e in zip(corpus.references.get(split, []), corpus.examples[split]) if r]
    if not pairs:
        return {}
    predicted = classify(clf, [corpus.vocab.encode(r, add_markers=False) for r, _ in pairs])
    return {"acc_ceiling": 100.0 * sum(p == 1 - y for p, (_, y) in zip(predicted, pairs)) / len(pairs)}


# ----------------------------------------------------------------------------------------------------
# Table 6 for your own sentences: --eval_only --transfer "..." (or --transfer - to read stdin)
# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def transfer_sentences(model: StyleModel, vocab: data.Vocab, sentences: list, cfg: Config, device) -> list:
    """Each sentence, tokenised as Shen et al.'s data (lower case, "it 's", "_num_"), transferred to both
    sentiments. Words outside the vocabulary are read as <unk>, with a note on stderr. -> [(words,
    to-negative words, to-positive words)]"""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 4242)
    out = []
    for text in sentences:
        words = data.reference_words(text)
        if not words:
            print(f"skipped an empty sentence: {text!r}", file=sys.stderr)
            continue
        if unknown := [w for w in words if w not in vocab]:
            print(f"not in the vocabulary (read as <unk>): {', '.join(unknown)}", file=sys.stderr)
        ids = vocab.encode(words)
        x = torch.tensor([ids], device=device)                           # (1, T)
        with data.autocast_for(device, cfg.precision)():
            z = model.encoder(x, torch.tensor([len(ids)], device=device), cfg.eval_samples, gen).mean(1)   # (1, Z)
            neg, pos = (vocab.decode(decode(model, z, s, cfg.max_decode_len, cfg.temperature, gen)[0]) for s in (0, 1))
        out.append((words, neg, pos))
    return out


# ----------------------------------------------------------------------------------------------------
# PLUMBING: the report line, main() (the run's plumbing: data.Run; the balanced batches: data.Batcher)
# ----------------------------------------------------------------------------------------------------

def report(tag: str, row: dict) -> None:
    """An evaluation row in one line: Table 7's columns, the critic's KL, the G-score (the selection)."""
    names = {"acc": "Acc", "acc_ceiling": "Acc of the human rewrites", "bleu": "BLEU", "bleu_ref": "BLEU-ref",
             "bleu_nltk34": "BLEU smoothed as nltk 3.4", "ppl": "PPL", "rppl": "RPPL",
             "rppl_pooled": "RPPL pooled with </s>", "kl_agg": "KL(q(z)||p)", "gscore": "G-score",
             "classifier_acc": "the classifier's own test accuracy"}
    print(f"{tag} ({row['n_sentences']} sentences, split {row['data_split']}): "
          + " | ".join(f"{name} {row[k]:.2f}" for k, name in names.items() if k in row), flush=True)


def parse(argv=None) -> tuple:
    """(cfg, parser, sentences): the Config flags, checked, and --transfer, which may be given several
    times (it is no setting, so not in Config)."""
    parser = data.config_parser(Config, "Sentiment transfer with iVAE_MI (Fang et al. 2019, §5.2)")
    parser.add_argument("--transfer", action="append", default=[],
                        help="with --eval_only: a sentence to transfer to both sentiments (repeat the flag for "
                             "more; '-' reads stdin, one sentence per line)")
    args = vars(data.parse_args(parser, argv))
    sentences = args.pop("transfer")
    cfg = Config(**args)
    data.check_bounds(cfg, parser)                                       # option(low=...); NaN and inf
    for bad, message in ((cfg.batch_size < 2, f"--batch_size must be >= 2 (BatchNorm in the prior and the classifier "
                                              f"cannot train on one sentence), got {cfg.batch_size}"),
                         (not 0 < cfg.noise_anneal <= 1, f"--noise_anneal must be in (0, 1], got {cfg.noise_anneal}"),
                         (cfg.fasttext_lr <= 0, f"--fasttext_lr must be > 0, got {cfg.fasttext_lr}"),
                         (sentences and not cfg.eval_only, "--transfer needs --eval_only (and a trained model in --out_dir)")):
        if bad:
            parser.error(message)
    if "-" in sentences:
        sentences = [s for s in sentences if s != "-"] + [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not sentences:
            parser.error("--transfer -: stdin held no sentence")
    return cfg, parser, sentences


def main(argv=None) -> dict:
    cfg, parser, sentences = parse(argv)
    run = data.Run(cfg, parser, score=lambda row: row["gscore"], maximise=True, report=report,
                   hint="Lower --ae_lr or --adv_lr.")                     # selection: the highest G-score
    if sentences:                                                        # your own sentences: no corpus needed
        vocab = data.Vocab.from_state_dict(run.ckpt["vocab"])
        model = StyleModel(len(vocab), cfg).to(run.device)
        run.restore(model=model)
        rows = transfer_sentences(model, vocab, sentences, cfg, run.device)
        for words, neg, pos in rows:
            print(f"input:       {' '.join(words)}\n-> negative: {' '.join(neg)}\n-> positive: {' '.join(pos)}")
        return {"transfers": [{"input": w, "negative": n, "positive": p} for w, n, p in rows], "step": run.step}
    corpus = run.load_corpus(data.SPLITS, split=cfg.split)
    try:                                                   # every iteration needs a batch of each sentiment
        batcher = None if cfg.eval_only else data.Batcher(corpus.examples["train"], cfg.batch_size, cfg.seed, balanced=True)
    except data.DataError as err:
        parser.error(str(err))
    model = StyleModel(len(corpus.vocab), cfg).to(run.device)
    opts = make_optimizers(model, cfg)
    run.restore(model=model, opts=opts)
    # The Acc classifier: trained once per split (its own seed), saved, reused; it never sees the model.
    with torch.random.fork_rng(devices=[]):
        clf, clf_path = sentiment_classifier(corpus, cfg, run.device)
    if not cfg.eval_only:
        train(cfg, corpus, model, opts, batcher, clf, run)

    def test() -> tuple:                                                 # Table 7 on the test split
        text = [corpus.vocab.encode(w, add_markers=False) for w in corpus.texts["test"]]
        clf_acc = 100.0 * sum(p == e.label for p, e in zip(classify(clf, text), corpus.examples["test"])) / len(text)
        row, lines = evaluate(model, corpus, "test", cfg, run.device, clf, limit=cfg.eval_limit)
        return {"data_split": cfg.split, **row, "classifier_acc": clf_acc, **acc_ceiling(clf, corpus, "test"),
                "classifier": clf_path}, lines
    result, lines = run.test(test)                                       # best.pt's model
    run.write_results(result)
    with open(os.path.join(cfg.out_dir, "transfers.txt"), "w", encoding="utf-8") as f:
        f.write(f"# split {cfg.split}, step {result['selected_step']}: direction (0 negative, 1 positive)\tsource\t"
                "transfer" + ("\thuman rewrite" if corpus.references.get("test") else "") + "\n" + "\n".join(lines) + "\n")
    for line in lines[:3] + lines[-3:]:
        print("transfer:", line)
    # samples.txt: the implicit prior's samples decoded by each sentiment's decoder (same z on a line).
    model.eval()
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed + 777)
    with data.autocast_for(run.device, cfg.precision)():
        z = model.prior_sample(10, run.device, gen)
        neg, pos = [decode(model, z, style, cfg.max_decode_len, cfg.temperature, gen) for style in (0, 1)]
    with open(os.path.join(cfg.out_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("# z from the implicit prior\tnegative decoder\tpositive decoder\n" + "".join(
            f"{i}\t{' '.join(corpus.vocab.decode(a))}\t{' '.join(corpus.vocab.decode(b))}\n"
            for i, (a, b) in enumerate(zip(neg, pos))))
    metrics.plot_curves(run.valid_rows(), ["ppl", "kl_agg", "acc", "bleu"], os.path.join(cfg.out_dir, "curves.png"))
    run.wrote()
    return result


if __name__ == "__main__":
    data.run_script(main)

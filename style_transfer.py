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

One training iteration (the authors' train_yelp.py): a negative and a positive batch, and for each
sentiment separate clipped SGD steps of encoder + decoders, never one summed loss:
    1. reconstruction (mean NLL per token), Gaussian noise noise_r on h (annealed)   x2 (neg, pos)
    2. classifier: tell y from z (Adam)                                               x2
    3. encoder fools the classifier (flipped label)                                   x2
    4. critic nu(z): nu_steps updates of the dual KL, batches alternating neg / pos   x4
    5. prior generator: one Adam step down the dual KL                                x1
    6. encoder: down E_q nu(z), the only part of the dual KL that depends on it       x2

Evaluation (Table 7), on the test split:
    Acc     share of transfers that a fastText-style classifier (Joulin et al. 2017: mean of unigram and
            hashed bigram embeddings -> linear) labels with the target sentiment. The classifier is trained
            once per split with its own seed (--classifier_seed), saved under --classifier_dir and reused by
            every run; `classifier_acc` is its accuracy on the test sources and `acc_ceiling` its accuracy
            on Li et al.'s human rewrites (what a perfect human transfer would score; no_train split).
    BLEU    nltk sentence BLEU (method7, n = 3, as the authors' code), x100, mean over sentences, between
            each source and its transfer; `bleu_ref` against Li et al.'s human rewrites where present.
    PPL     reconstruction perplexity of the test sentences, teacher-forced with their own sentiment's
            decoder, z the mean of `eval_samples` posterior samples; words counting </s>.
    RPPL    `rppl`, the authors' way (metrics.rppl_authors): one 5-gram LM per direction fitted on that
            direction's transfers (`<unk>` deleted), the direction's sources scored without </s>, the two
            directions averaged. `rppl_pooled`: one LM on all transfers, </s> scored and counted (ours
            before); `rppl_vocab`: the same with every vocabulary word prepended once.
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
    * bf16 autocast by default where the hardware has it natively (--precision auto; the authors: fp32):
      1.5-1.7x the iterations per second on the 2-core CPU, losses within seed noise (results/bench/README.md).
"""
import contextlib
import hashlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import metrics
from data import STYLE_SPLITS, option


@dataclass
class Config(data.RunConfig):
    # the run: the command-line contract every script shares is data.RunConfig (--data --seed --out_dir
    # --epochs --max_steps --resume --eval_only --threads ...); here what differs for this task
    data: str = option("yelp_style", "corpus (only yelp_style: Shen et al.'s sentiment data)", choices=["yelp_style"])
    out_dir: str = option("runs/style", "where config.json, log.csv, metrics.json, checkpoints, transfers go", run=True)
    epochs: int = option(25, "training epochs (authors: 25)", low=1, run=True)
    eval_only: bool = option(False, "no training: evaluate out_dir/best.pt (else checkpoint.pt) on test, or "
                                    "transfer the --transfer sentences", run=True)
    split: str = option("standard", "standard (Shen et al.) or no_train (opt-in: see the docstring)",
                        choices=list(STYLE_SPLITS))
    # model (the authors' transfer_yelp sizes)
    emb_dim: int = option(128, "word embedding size (authors: 128)")
    hidden: int = option(128, "LSTM hidden size of the encoder and of each decoder; also the code z (authors: 128)")
    noise_dim: int = option(128, "dimensions of the encoder's noise eps in G(h, eps) (authors: randn_like(h), 128)")
    prior_noise: int = option(32, "dimensions of the implicit prior's input noise (authors' z_size: 32)")
    prior_width: int = option(128, "width of the implicit prior's two hidden layers (authors' arch_g 128-128)")
    nu_width: int = option(128, "width of the critic nu(z)'s two hidden layers (authors' arch_d 128-128)")
    cls_width: int = option(128, "width of the classifier's two hidden layers (authors' arch_classify 128-128)")
    # training (the authors' schedule)
    batch_size: int = option(64, "sentences per batch; each iteration takes one negative and one positive batch")
    ae_lr: float = option(1.0, "SGD learning rate of encoder, G and decoders (each of their steps)")
    clip: float = option(1.0, "gradient-norm clip of each encoder/decoder step")
    noise_r: float = option(0.1, "std of the Gaussian noise on h during the reconstruction step (authors: 0.1)")
    noise_anneal: float = option(0.9995, "noise_r is multiplied by this every 100 iterations (authors)")
    adv_lr: float = option(1e-4, "Adam learning rate of prior generator, critic and classifier (betas 0.5, 0.999)")
    nu_steps: int = option(4, "critic updates per iteration (authors' niters_gan_d: 4)")
    kl_weight: float = option(1.0, "weight of E_q nu(z), the dual KL(q(z) || p(z)), in the encoder's KL step")
    class_weight: float = option(1.0, "weight of the encoder's fool-the-classifier step (ARAE lambda_class)")
    # evaluation
    eval_samples: int = option(16, "posterior samples averaged into the z of a transfer / reconstruction", run=True)
    eval_limit: int = option(0, "evaluate on N test sentences only, spread over both sentiments (0: all)", run=True)
    val_sentences: int = option(1000, "fixed validation subset scored after every epoch (0: skip validation)", run=True)
    max_decode_len: int = option(30, "longest transfer, in tokens", run=True)
    temperature: float = option(0.0, "decoding: 0 greedy (Table 7); > 0 sample from softmax(logits / T)", run=True)
    classifier_dir: str = option("runs/classifiers", "where the Acc classifier is saved once per split and reused",
                                 run=True)
    classifier_seed: int = option(0, "seed of the Acc classifier (its own: independent of --seed)", run=True)
    fasttext_dim: int = option(64, "fastText classifier: embedding size", run=True)
    fasttext_buckets: int = option(2 ** 18, "fastText classifier: hash buckets for bigrams", run=True)
    fasttext_epochs: int = option(3, "fastText classifier: training epochs", run=True)
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
# PAPER §3.2 + §5.2: one training iteration (a negative and a positive batch), the authors' structure
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
    """batches = (negative batch, positive batch). Every encoder/decoder loss is its own clipped SGD step,
    once per sentiment batch; `g_*` are the gradient norms of encoder + decoders before clipping. Forward
    passes run under `autocast` (bf16 matrix products with --precision bf16 / auto); the losses, the
    critic's nu and exp(nu) are fp32 (Decoders.nll, StyleModel.critic / class_logit); backward is outside."""
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
    sentences, method7, n = 3) against the sources and, where given, against the human references, and
    with `rppl` the reverse perplexities: `rppl` the authors' way (metrics.rppl_authors: per direction,
    </s> not scored, averaged), `rppl_pooled` one 5-gram LM of all transfers scored on all sources with
    </s>, and `rppl_vocab` the pooled one with every vocabulary word prepended once (as the reverse PPL of
    Table 5), which keeps words apart and penalises transfers that repeat a few words."""
    out = {"acc": 100.0 * sum(p == t for p, t in zip(predicted, targets)) / len(targets),
           "bleu": 100.0 * sum(metrics.sentence_bleu(s, t, n=3) for s, t in zip(sources, transfers)) / len(sources)}
    if rppl:
        out.update(metrics.rppl_authors(sources, transfers, targets))
        out["rppl_pooled"] = metrics.NGramLM(order=5).fit(transfers).perplexity(sources)
        if vocabulary:
            out["rppl_vocab"] = metrics.NGramLM(order=5).fit([[w] for w in vocabulary] + list(transfers)).perplexity(sources)
    pairs = [(r, t) for r, t in zip(references, transfers) if r]
    if pairs:
        out["bleu_ref"] = 100.0 * sum(metrics.sentence_bleu(r, t, n=3) for r, t in pairs) / len(pairs)
    return out


def spread(n_total: int, limit: int) -> range:
    """`limit` indices evenly spread over 0..n_total-1 (both sentiments: the examples are negatives first)."""
    if not limit or limit >= n_total:
        return range(n_total)
    return range(0, n_total, max(1, n_total // limit))[:limit]


@torch.no_grad()
def evaluate(model: StyleModel, corpus: data.Corpus, split: str, cfg: Config, device, clf=None,
             limit: int = 0, rppl: bool = True) -> tuple:
    """Transfers of `limit` sentences of `split` (0: all) and their scores; PPL by teacher forcing.
    Returns (metrics, transfer lines)."""
    model.eval()
    autocast = data.autocast_for(device, cfg.precision)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)
    every = corpus.examples[split]
    keep = spread(len(every), limit)
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
        unknown = [w for w in words if w not in vocab]
        if unknown:
            print(f"not in the vocabulary (read as <unk>): {', '.join(unknown)}", file=sys.stderr)
        ids = vocab.encode(words)
        x = torch.tensor([ids], device=device)                           # (1, T)
        with data.autocast_for(device, cfg.precision)():
            z = model.encoder(x, torch.tensor([len(ids)], device=device), cfg.eval_samples, gen).mean(1)   # (1, Z)
            neg, pos = (vocab.decode(decode(model, z, s, cfg.max_decode_len, cfg.temperature, gen)[0]) for s in (0, 1))
        out.append((words, neg, pos))
    return out


# ----------------------------------------------------------------------------------------------------
# PLUMBING: balanced batches, training loop, checkpoints, main()
# ----------------------------------------------------------------------------------------------------

def balanced_plan(examples: list, batch_size: int, seed: int, epoch: int) -> list:
    """One epoch of (negative batch, positive batch) index pairs, as the authors' loop: max(#negative
    batches, #positive batches) iterations; the shorter side's extra batches are drawn at random from its
    own. Each side: padded length buckets, shuffled. A pure function of (seed, epoch), so a resumed run
    sees the same batches.

    BatchNorm (in the prior and the classifier) cannot train on a batch of one sentence: when a side's
    count leaves one sentence alone in its last bucket (65 at batch 64), it joins the bucket of the next
    longest sentences, which then holds batch_size + 1 (lone_sentence_note says so once per run)."""
    sides = [[i for i, e in enumerate(examples) if e.label == y] for y in (0, 1)]
    plans = []
    for y, side in enumerate(sides):
        name = "negative" if y == 0 else "positive"
        if len(side) < 2:
            raise data.DataError(f"the training split holds {len(side)} {name} sentence(s): each iteration trains "
                                 f"on a {name} batch of at least two (BatchNorm in the prior and the classifier)")
        lengths = [len(examples[i].ids) for i in side]
        plan = data.batch_plan(lengths, batch_size, seed + y, epoch, equal_length=False)
        lone = [b for b in plan if len(b) == 1]
        if lone:                                           # at most one: the longest sentence, cut off last
            plan.remove(lone[0])
            host = max(plan, key=lambda b: max(lengths[i] for i in b))   # the bucket that came before it
            host.append(lone[0][0])
        plans.append([[side[i] for i in b] for b in plan])
    n = max(len(p) for p in plans)
    rng = np.random.default_rng([seed, epoch, 2])
    for p in plans:
        p += [p[j] for j in rng.integers(0, len(p), n - len(p))]
    return list(zip(*plans))


def lone_sentence_note(examples: list, batch_size: int) -> str:
    """The line that says which side's last sentence balanced_plan merges into another batch ('' if none)."""
    notes = []
    for y, name in enumerate(("negative", "positive")):
        n = sum(e.label == y for e in examples)
        if n % batch_size == 1:
            notes.append(f"{n:,} {name} sentences at --batch_size {batch_size} leave one alone in the last batch: "
                         f"it joins the batch of the next longest {name} sentences")
    return "note: " + "; ".join(notes) + " (BatchNorm cannot train on one sentence)" if notes else ""


def checkpoint_state(cfg, vocab, model, opts, step_, best=None) -> dict:
    return {"script": data.script_of(cfg), "config": asdict(cfg), "vocab": vocab.state_dict(),
            "model": model.state_dict(),
            "opts": {k: o.state_dict() for k, o in opts.items()}, "step": step_, "best": best,
            "rng": data.rng_state()}


def train(cfg, corpus, model, opts, state, device, log: data.CsvLog, clf) -> int:
    """Train from state["step"] to the end (epochs or max_steps); after every epoch score the fixed
    validation subset and keep the checkpoint with the best G-score in best.pt. Returns the last step."""
    examples = corpus.examples["train"]
    steps_per_epoch = len(balanced_plan(examples, cfg.batch_size, cfg.seed, 0))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    step_, best = state["step"], state["best"]
    ckpt_path, best_path = os.path.join(cfg.out_dir, "checkpoint.pt"), os.path.join(cfg.out_dir, "best.pt")
    t_begin = time.time() - state["train_time_s"]                        # train_time_s sums every process
    autocast = data.autocast_for(device, cfg.precision)                  # bf16 where --precision says so

    def save(path=ckpt_path, validated=True):
        ckpt = checkpoint_state(cfg, corpus.vocab, model, opts, step_, best)
        data.save_checkpoint({**ckpt, "validated": validated, "train_time_s": time.time() - t_begin}, path)

    def validate():                                                      # selection on G-score
        nonlocal best
        print(f"validating at step {step_}", flush=True)
        with stop.interruptible():                                       # the first Ctrl-C stops it at once
            row, _ = evaluate(model, corpus, "valid", cfg, device, clf, limit=cfg.val_sentences, rppl=False)
        row = {"step": step_, "epoch": step_ / steps_per_epoch, "split": "valid", "data_split": cfg.split, **row}
        print(f"valid @ step {step_} ({row['n_sentences']} sentences): reconstruction PPL {row['ppl']:.2f} | "
              f"KL(q(z)||p) {row['kl_agg']:.2f} | Acc {row['acc']:.1f} | BLEU {row['bleu']:.1f} | "
              f"G-score {row['gscore']:.2f}", flush=True)
        log.write(row)
        if best is None or row["gscore"] > best:
            best = row["gscore"]
            save(best_path)

    print(f"training: {steps_per_epoch} iterations (negative + positive batch) per epoch, steps {step_} -> {total}",
          flush=True)
    acc, n_acc, t0 = {}, 0, time.time()
    with data.GracefulInterrupt() as stop:
        if not state["validated"]:                         # resumed from a checkpoint that awaits its validation
            validate()
            save()
        while step_ < total and not stop.requested:
            plan = balanced_plan(examples, cfg.batch_size, cfg.seed, step_ // steps_per_epoch)
            for pair in plan[step_ % steps_per_epoch:]:
                batches = tuple(data.collate([examples[i] for i in idx]).to(device) for idx in pair)
                out = train_iteration(model, opts, batches, cfg, step_, autocast)
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
                    print(f"step {step_:>6}/{total} | ep {step_ / steps_per_epoch:5.2f} | rec/token {means['rec']:5.2f} | "
                          f"KLq {means['kl']:6.2f} | cls {means['cls_loss']:.3f} | fool {means['fool']:.3f} | "
                          f"|g| rec {means['g_rec']:.2f} fool {means['g_fool']:.2f} kl {means['g_kl']:.2f} | "
                          f"{n_acc / dt:5.2f} it/s | ETA {(total - step_) * dt / n_acc / 60:5.1f} min", flush=True)
                    acc, n_acc, t0 = {}, 0, time.time()
                if end_of_epoch and cfg.val_sentences:
                    save(validated=False)                  # first the epoch's checkpoint: nothing is lost
                    validate()                             # if the validation is interrupted or killed
                if saving:
                    save()
                if step_ >= total or stop.requested:
                    break
    if stop.requested:
        raise SystemExit(f"interrupted at step {step_}: checkpoint saved to {ckpt_path}; continue with --resume")
    return step_


def parse(argv=None) -> tuple:
    """(cfg, parser, sentences): the Config flags plus --transfer, which may be given several times
    (data.parse_config knows only Config fields, so --transfer is added here; it is not a setting)."""
    parser = data.config_parser(Config, "Sentiment transfer with iVAE_MI (Fang et al. 2019, §5.2)")
    parser.add_argument("--transfer", action="append", default=[],
                        help="with --eval_only: a sentence to transfer to both sentiments (repeat the flag for "
                             "more; '-' reads stdin, one sentence per line)")
    args = vars(data.parse_args(parser, argv))
    sentences = args.pop("transfer")
    cfg = Config(**args)
    data.check_bounds(cfg, parser)                                       # the declared bounds; NaN and inf
    for name in ("epochs", "emb_dim", "hidden", "noise_dim", "prior_noise", "prior_width",
                 "nu_width", "cls_width", "eval_samples", "max_decode_len", "fasttext_dim", "fasttext_buckets",
                 "fasttext_epochs", "log_every", "save_every"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "eval_limit", "val_sentences", "nu_steps", "ae_lr", "adv_lr", "clip", "noise_r",
                 "kl_weight", "class_weight", "temperature"):
        if getattr(cfg, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.batch_size < 2:
        parser.error(f"--batch_size must be >= 2 (BatchNorm in the prior and the classifier cannot train on one "
                     f"sentence), got {cfg.batch_size}")
    if not 0 < cfg.noise_anneal <= 1:
        parser.error(f"--noise_anneal must be in (0, 1], got {cfg.noise_anneal}")
    if cfg.fasttext_lr <= 0:
        parser.error(f"--fasttext_lr must be > 0, got {cfg.fasttext_lr}")
    if cfg.resume and cfg.eval_only:
        parser.error("--resume and --eval_only exclude each other")
    if sentences and not cfg.eval_only:
        parser.error("--transfer needs --eval_only (and a trained model in --out_dir)")
    if "-" in sentences:
        sentences = [s for s in sentences if s != "-"] + [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not sentences:
            parser.error("--transfer -: stdin held no sentence")
    return cfg, parser, sentences


def main(argv=None) -> dict:
    cfg, parser, sentences = parse(argv)
    device = data.pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
    ckpt = data.open_run(cfg, parser, data.run_control(Config), device)
    state = {"step": 0, "best": None, "validated": True, "train_time_s": 0.0}       # a fresh run; or resumed:
    state.update({k: ckpt[k] for k in state if k in ckpt} if ckpt else {})
    data.set_seed(cfg.seed)
    if sentences:                                                        # your own sentences: no corpus needed
        vocab = data.Vocab.from_state_dict(ckpt["vocab"])
        model = StyleModel(len(vocab), cfg).to(device)
        model.load_state_dict(ckpt["model"])
        rows = transfer_sentences(model, vocab, sentences, cfg, device)
        for words, neg, pos in rows:
            print(f"input:       {' '.join(words)}\n-> negative: {' '.join(neg)}\n-> positive: {' '.join(pos)}")
        return {"transfers": [{"input": w, "negative": n, "positive": p} for w, n, p in rows], "step": ckpt["step"]}
    try:
        vocab = data.Vocab.from_state_dict(ckpt["vocab"]) if ckpt else None
        corpus = data.load_style_corpus(cfg.data_dir, cfg.split, vocab=vocab, allow_bad_lines=cfg.allow_bad_lines)
    except data.DataError as err:
        hint = (" -- for a copy without Shen et al.'s training files (sentiment.train.*), try --split no_train"
                if cfg.split == "standard" else "")
        parser.error(str(err) + hint)
    if not cfg.eval_only:
        try:                                               # every iteration needs a batch of each sentiment
            balanced_plan(corpus.examples["train"], cfg.batch_size, cfg.seed, 0)
        except data.DataError as err:
            parser.error(str(err))
        if lone_sentence_note(corpus.examples["train"], cfg.batch_size):
            print(lone_sentence_note(corpus.examples["train"], cfg.batch_size))
    os.makedirs(cfg.out_dir, exist_ok=True)
    print(f"device: {data.describe_device(device)}, precision {data.precision_in_use(device, cfg.precision)}")
    print(f"corpus yelp_style, split {cfg.split}: " + ", ".join(f"{s} {len(e):,}" for s, e in corpus.examples.items())
          + f" sentences, vocabulary {len(corpus.vocab):,}")
    model = StyleModel(len(corpus.vocab), cfg).to(device)
    opts = make_optimizers(model, cfg)
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
                      resume_step=state["step"] - (not state["validated"]) if ckpt else None)
    # The Acc classifier: trained once per split (its own seed), saved, reused; it never sees the model.
    with torch.random.fork_rng(devices=[]):
        clf, clf_path = sentiment_classifier(corpus, cfg, device)
    t_start = time.time()
    if not cfg.eval_only:
        try:
            state["step"] = train(cfg, corpus, model, opts, state, device, log, clf)
        except FloatingPointError as err:
            raise SystemExit(f"stopped: {err}")
        best_path = os.path.join(cfg.out_dir, "best.pt")
        if os.path.exists(best_path):                                    # report the selected model
            sel = data.load_checkpoint(best_path, device)
            model.load_state_dict(sel["model"])
            state["selected_step"] = sel["step"]
    elif ckpt:
        state["selected_step"] = ckpt["step"]
    train_time = state["train_time_s"] + time.time() - t_start                # over every process of the run

    # Table 7 on the test split.
    test_text = [corpus.vocab.encode(w, add_markers=False) for w in corpus.texts["test"]]
    labels = [e.label for e in corpus.examples["test"]]
    clf_acc = 100.0 * sum(p == y for p, y in zip(classify(clf, test_text), labels)) / len(labels)
    result, lines = evaluate(model, corpus, "test", cfg, device, clf, limit=cfg.eval_limit)
    step_ = state["step"]
    result = {"split": "test", "data_split": cfg.split, "step": step_, "selected_step": state.get("selected_step", step_),
              **result, "classifier_acc": clf_acc, **acc_ceiling(clf, corpus, "test"), "classifier": clf_path,
              "train_time_s": round(train_time, 1), "device": data.describe_device(device)}
    print(f"test ({cfg.split} split, model of step {result['selected_step']}): Acc {result['acc']:.1f}"
          + (f" (human rewrites: {result['acc_ceiling']:.1f})" if "acc_ceiling" in result else "")
          + f" | BLEU {result['bleu']:.1f}" + (f" | BLEU-ref {result['bleu_ref']:.1f}" if "bleu_ref" in result else "")
          + f" | PPL {result['ppl']:.2f} | RPPL {result['rppl']:.1f} (pooled with </s> {result['rppl_pooled']:.1f})"
          f" | classifier's own test accuracy {clf_acc:.1f}")
    log.write({"epoch": "", **result})
    data.write_json(os.path.join(cfg.out_dir, "metrics.json"), result)
    with open(os.path.join(cfg.out_dir, "transfers.txt"), "w", encoding="utf-8") as f:
        f.write(f"# split {cfg.split}, step {result['selected_step']}: direction (0 negative, 1 positive)\tsource\t"
                "transfer" + ("\thuman rewrite" if corpus.references.get("test") else "") + "\n" + "\n".join(lines) + "\n")
    for line in lines[:3] + lines[-3:]:
        print("transfer:", line)
    # samples.txt: the implicit prior's samples decoded by each sentiment's decoder (same z on a line).
    model.eval()
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 777)
    with data.autocast_for(device, cfg.precision)():
        z = model.prior_sample(10, device, gen)
        neg, pos = [decode(model, z, style, cfg.max_decode_len, cfg.temperature, gen) for style in (0, 1)]
    with open(os.path.join(cfg.out_dir, "samples.txt"), "w", encoding="utf-8") as f:
        f.write("# z from the implicit prior\tnegative decoder\tpositive decoder\n" + "".join(
            f"{i}\t{' '.join(corpus.vocab.decode(a))}\t{' '.join(corpus.vocab.decode(b))}\n"
            for i, (a, b) in enumerate(zip(neg, pos))))
    rows = [r for r in log.rows() if r.get("split") == "valid"]
    metrics.plot_curves(rows, ["ppl", "kl_agg", "acc", "bleu"], os.path.join(cfg.out_dir, "curves.png"))
    names = "config.json log.csv metrics.json checkpoint.pt best.pt transfers.txt samples.txt curves.png".split()
    print(f"wrote {cfg.out_dir}/: " + " ".join(f for f in names if os.path.exists(os.path.join(cfg.out_dir, f))))
    return result


if __name__ == "__main__":
    data.run_script(main)

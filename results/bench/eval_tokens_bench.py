"""--eval_tokens on the CPU (issue 13): the test evaluation of a finished ivae.py run (its best.pt, bf16 autocast
as in the run) on an even spread of 120 PTB test sentences, 128 posterior samples and K importance samples, for
each chunk size given. Same random stream each time, so the numbers must agree; only the time may differ.
    PYTHONPATH=. python results/bench/eval_tokens_bench.py RUN_DIR THREADS 32768,2048 K"""
import json
import sys
import time

import torch

import data
import ivae

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
run = sys.argv[1]
cfgd = json.load(open(f"{run}/config.json")); cfgd.update(data_dir="../shared/data")
cfg = ivae.Config(**{k: v for k, v in cfgd.items() if k in ivae.Config.__dataclass_fields__})
ck = torch.load(f"{run}/best.pt", map_location="cpu", weights_only=False)
corpus = data.load_corpus("ptb", cfg.data_dir, ("test",), vocab=data.Vocab.from_state_dict(ck["vocab"]))
model, nu_xz, nu_z = ivae.build(cfg, len(corpus.vocab), torch.device("cpu"))
for n, o in [("model", model), ("nu_xz", nu_xz), ("nu_z", nu_z)]: o.load_state_dict(ck[n])
model.eval()
test = corpus.examples["test"]; test = test[::len(test) // 120][:120]
for et in [int(a) for a in sys.argv[3].split(",")]:
    cfg.eval_tokens = et
    torch.manual_seed(0)
    t = time.time(); r = ivae.evaluate(model, nu_xz, nu_z, test, cfg, torch.device("cpu"), 128, int(sys.argv[4]))[0]; dt = time.time() - t
    print(f"eval_tokens {et:6d}: {dt:6.1f} s  rec {r['rec']:.4f} iw {r.get('iw_nll', 0):.4f}", flush=True)

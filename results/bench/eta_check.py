"""Time per decoder pass of a validation (800 spread sentences, 8 + 8 samples) and of the test's settings
(128 + 500 samples, a spread of 120 test sentences), same model (RUN_DIR/best.pt), 2 threads. The progress line's
ETA assumes the two cost the same per pass (ivae.py, train: test_in_validations).
    PYTHONPATH=. python results/bench/eta_check.py RUN_DIR EVAL_TOKENS"""
import json
import sys
import time

import torch

import data
import ivae

torch.set_num_threads(2)
run = sys.argv[1]
cfgd = json.load(open(f"{run}/config.json")); cfgd.update(data_dir="../shared/data", eval_tokens=int(sys.argv[2]))
cfg = ivae.Config(**{k: v for k, v in cfgd.items() if k in ivae.Config.__dataclass_fields__})
ck = torch.load(f"{run}/best.pt", map_location="cpu", weights_only=False)
corpus = data.load_corpus("ptb", cfg.data_dir, ("valid", "test"), vocab=data.Vocab.from_state_dict(ck["vocab"]))
model, nu_xz, nu_z = ivae.build(cfg, len(corpus.vocab), torch.device("cpu"))
for n, o in [("model", model), ("nu_xz", nu_xz), ("nu_z", nu_z)]: o.load_state_dict(ck[n])
model.eval()
valid = corpus.examples["valid"]; valid = valid[::len(valid) // 800][:800]
test = corpus.examples["test"]; test = test[::len(test) // 120][:120]
def passes(n, S, K): return n * (max(S, K) if cfg.encoder_layers == 0 else S + K)
for name, ex, S, K in [("validation", valid, 8, 8), ("test settings", test, 128, 500), ("test, rec only", test, 128, 0)]:
    t = time.time(); ivae.evaluate(model, nu_xz, nu_z, ex, cfg, torch.device("cpu"), S, K); dt = time.time() - t
    p = passes(len(ex), S, K)
    print(f"{name:15s} {len(ex)} sentences S={S} K={K}: {dt:6.1f} s, {p:,} passes, {dt / p * 1e3:.3f} ms per pass", flush=True)

#!/bin/bash
# The GPU checks of one lent device call (tool `device run`, 2026-11-26): run from the repository root with
# the corpora copied into gpu_data/ and the nltk wheel in .whl/ (both carried, both git-ignored).
# 1. bench.py alone on the GPU, fp32 and bf16 (Table 3's GPU column);
# 2. then side by side, sharing the GPU: tests/test_cuda.py, and each script on its real corpus with --cuda,
#    capped by --max_steps, through its full test (timings under contention: seven jobs on one GPU).
# Everything but checkpoints comes back as $OUT/gpu_checks.tar.gz.
set -u
START=$(date +%s)
left() { echo $((START + $1 - $(date +%s))); }
export PYTHONUNBUFFERED=1 IVAE_DATA_DIR=$PWD/gpu_data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
G=$OUT/g; mkdir -p "$G"
nvidia-smi > "$G/nvidia-smi.txt" 2>&1
python3 -c "import torch, nltk; print('torch', torch.__version__, torch.cuda.get_device_name(), 'nltk', nltk.__version__)" | tee "$G/versions.txt"
nproc >> "$G/versions.txt"

for p in fp32 bf16; do
  timeout -s INT -k 10 100 python3 bench.py --data ptb --cuda --precision $p --out_dir "$G/bench" > "$G/bench_$p.log" 2>&1
  echo "bench $p rc=$? at $(( $(date +%s) - START )) s"; tail -6 "$G/bench_$p.log"
done

D="--data_dir gpu_data --cuda --threads 2"
job() {  # name, then the command; SIGINT at the deadline (the scripts save and say where they stopped)
  local name=$1; shift
  ( s=$(date +%s); timeout -s INT -k 20 "$(left 440)" "$@" > "$G/$name.log" 2>&1; rc=$?
    echo "$name rc=$rc wall $(( $(date +%s) - s )) s" | tee -a "$G/walls.txt" ) &
}
job pytest_cuda python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
job ivae_mi python3 ivae_mi.py --data ptb $D --max_steps 2718 --fwd_rev_ppl --out_dir "$G/ivae_mi"
job vae python3 vae.py --data ptb $D --max_steps 2718 --fwd_rev_ppl --out_dir "$G/vae"
job ivae python3 ivae.py --data ptb $D --max_steps 1359 --out_dir "$G/ivae"
job ivae_mi_affine python3 ivae_mi.py --data ptb $D --encoder_layers 0 --max_steps 1359 --out_dir "$G/ivae_mi_affine"
job style python3 style_transfer.py --split no_train $D --max_steps 1194 --classifier_dir /tmp/clf --out_dir "$G/style"
job dialog python3 dialog.py --data dailydialog $D --emb_dim 50 --embeddings gpu_data/glove/glove.6B.50d.dialog.txt \
  --max_steps 1000 --out_dir "$G/dialog"
wait
echo "== all jobs ended at $(( $(date +%s) - START )) s"; cat "$G/walls.txt"
tail -4 "$G/pytest_cuda.log"
for n in ivae_mi vae ivae ivae_mi_affine style dialog; do
  echo "== $n"; grep -m1 "^device" "$G/$n.log"; grep "step/s\|it/s" "$G/$n.log" | tail -2; tail -3 "$G/$n.log"
  [ -f "$G/$n/metrics.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in d.items() if not isinstance(v, (list, dict))})" "$G/$n/metrics.json"
done
tar czf "$OUT/gpu_checks.tar.gz" --exclude='*.pt' -C "$OUT" g && rm -rf "$G"
ls -la "$OUT"

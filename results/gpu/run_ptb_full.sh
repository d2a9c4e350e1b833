#!/bin/bash
# One full 40-epoch PTB run of Table 2 on a lent GPU, in one device call (fits one 600-s call on an H200
# with the critic updates replayed from a CUDA graph: the ivae_affine run took 533 s).
#   bash results/gpu/run_ptb_full.sh ivae.py ivae --fwd_rev_ppl                 # the MLP-G_phi iVAE
#   bash results/gpu/run_ptb_full.sh ivae.py ivae_affine --encoder_layers 0 --fwd_rev_ppl
# Run from the repository root with gpu_data/ (a copy of ../shared/data/ptb) and .whl/ (nltk) carried.
# The run is stopped with SIGINT at 570 s (it saves its checkpoint and says where), so the call ends in time.
# Back: $OUT/<name>.tar.gz (everything but checkpoints), and stdout / metrics.json / log.csv loose.
set -u
script=$1; name=$2; shift 2
export PYTHONUNBUFFERED=1 IVAE_DATA_DIR=$PWD/gpu_data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
s=$(date +%s); echo "start $(date -u +%FT%TZ)" > "$OUT/wall.txt"
timeout -s INT -k 10 570 python3 "$script" --data ptb "$@" --data_dir gpu_data --cuda --precision fp32 --threads 4 \
  --out_dir "runs/$name" > "$OUT/stdout.log" 2>&1
echo "rc=$? wall $(( $(date +%s) - s )) s, end $(date -u +%FT%TZ)" >> "$OUT/wall.txt"
cp "runs/$name/metrics.json" "runs/$name/log.csv" "$OUT/" 2>/dev/null
tar czf "$OUT/$name.tar.gz" --exclude='*.pt' -C runs "$name"
cat "$OUT/wall.txt"; grep -v "^step" "$OUT/stdout.log" | tail -12

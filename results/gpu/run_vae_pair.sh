#!/bin/bash
# Second device call (2026-11-26): the two vae.py PTB runs of issue 15 side by side on one H200, full
# length (40 epochs), fp32 (bench.py: bf16 autocast is slower than fp32 at these sizes on this GPU).
# SIGINT at 555 s if they have not ended (the device call's limit); results minus checkpoints come back.
set -u
START=$(date +%s)
export PYTHONUNBUFFERED=1 IVAE_DATA_DIR=$PWD/gpu_data
G=$OUT/g; mkdir -p "$G"
run() {
  local name=$1; shift
  ( s=$(date +%s); timeout -s INT -k 15 $((START + 555 - $(date +%s))) python3 vae.py --data ptb --data_dir gpu_data \
      --cuda --precision fp32 --threads 4 --fwd_rev_ppl --out_dir "$G/$name" "$@" > "$G/$name.log" 2>&1
    echo "$name rc=$? wall $(( $(date +%s) - s )) s" | tee -a "$G/walls.txt" ) &
}
run vae_beta0.5 --beta 0.5
run vae_cyclical --anneal cyclical
wait
for n in vae_beta0.5 vae_cyclical; do echo "== $n"; grep "step/s" "$G/$n.log" | tail -1; tail -2 "$G/$n.log"; done
tar czf "$OUT/gpu_vae_pair.tar.gz" --exclude='*.pt' -C "$OUT" g && rm -rf "$G"

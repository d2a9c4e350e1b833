#!/usr/bin/env bash
# fp32 vs bf16 on a short PTB run of ivae_mi.py (the headline model), and fp32 with another seed for the
# run-to-run noise. 600 steps, validation every 300, test on the first 1,000 test sentences.
export IVAE_DATA_DIR=/work/shared/data
COMMON="--data ptb --max_steps 600 --val_every 300 --eval_limit 1000 --eval_samples 32 --iw_samples 32 --threads 2 --log_every 100 --overwrite"
for spec in "fp32 0" "bf16 0" "fp32 1" "bf16 1"; do
  set -- $spec
  /usr/bin/time -f "wall %e s" python ivae_mi.py $COMMON --precision $1 --seed $2 --out_dir runs/prec_$1_seed$2 > runs/prec_$1_seed$2.log 2>&1
done

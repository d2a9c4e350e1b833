#!/bin/bash
# usage: eqruns.sh SRC_DIR OUT_PREFIX : ivae.py and vae.py, 20 steps, 40 sentences, every decoding output
export IVAE_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd $1
for s in ivae vae; do
  python $s.py --data ptb --data_dir /work/main/data --max_steps 20 --eval_limit 40 --val_limit 40 --fwd_rev_ppl --fwd_rev_samples 64 --num_samples 4 --iw_samples 16 --eval_samples 8 --interpolate "the company said" "i do n't know" --precision fp32 --threads 1 --out_dir $2_$s > $2_$s.log 2>&1
done
echo done

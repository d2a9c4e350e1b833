#!/bin/bash
# usage: cmp28.sh SRC_DIR OUT_PREFIX
cd $1
for s in ivae ivae_mi vae; do
  python $s.py --data ptb --data_dir /work/main/data --max_steps 20 --eval_limit 40 --val_limit 40 --fwd_rev_ppl --fwd_rev_samples 64 --num_samples 4 --iw_samples 16 --eval_samples 8 --interpolate "the company said" "i do n't know" --precision fp32 --threads 1 --out_dir $2_$s > $2_$s.log 2>&1
done
python ivae.py --data ptb --data_dir /work/main/data --kl_estimator ac --encoder_layers 0 --max_steps 20 --eval_limit 24 --val_limit 24 --resid_check_steps 20 --resid_check_sentences 4 --fwd_rev_ppl --fwd_rev_samples 64 --num_samples 4 --iw_samples 16 --eval_samples 8 --precision fp32 --threads 1 --out_dir $2_ivae_ac > $2_ivae_ac.log 2>&1
echo done

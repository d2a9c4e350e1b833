#!/bin/bash
# usage: lmcheck.sh CODE_DIR OUT   -- short LM runs (HEAD's scripts) with validations every 10 steps, and a resume
CODE=$1; OUT=$2; mkdir -p $OUT; cd $CODE
C="--data ptb --epochs 1 --val_every 10 --val_limit 40 --eval_limit 60 --eval_samples 8 --iw_samples 16 --log_every 5 --threads 1 --cpu --num_samples 3 --fwd_rev_samples 16"
python vae.py $C --max_steps 30 --fwd_rev_ppl --out_dir $OUT/vae > $OUT/vae.log 2>&1
python ivae.py $C --max_steps 30 --out_dir $OUT/ivae > $OUT/ivae.log 2>&1
python ivae_mi.py $C --max_steps 30 --encoder_layers 0 --out_dir $OUT/ivae_mi > $OUT/ivae_mi.log 2>&1
python ivae.py $C --max_steps 14 --out_dir $OUT/ivae_res > $OUT/ivae_res1.log 2>&1
python ivae.py $C --max_steps 30 --out_dir $OUT/ivae_res --resume > $OUT/ivae_res2.log 2>&1
echo done

#!/bin/bash
# usage: run_side.sh CODE_DIR OUT   -- the short runs compared before/after the data.py trim
CODE=$1; OUT=$2; mkdir -p $OUT; cd $CODE; export IVAE_DATA_DIR=/work/shared/data
S=/work/main/results/bench/refactor_check_2026-12-05/style_dialog/scripts
L="--data ptb --eval_limit 40 --val_limit 40 --val_every 10 --precision fp32 --threads 1"
python ivae_mi.py $L --max_steps 20 --out_dir $OUT/ivae_mi > $OUT/ivae_mi.log 2>&1
python vae.py $L --max_steps 20 --out_dir $OUT/vae > $OUT/vae.log 2>&1
python vae.py $L --max_steps 8 --out_dir $OUT/vae_res > $OUT/vae_res1.log 2>&1
python vae.py $L --max_steps 20 --resume --out_dir $OUT/vae_res > $OUT/vae_res2.log 2>&1
bash $S/runall.sh $CODE $OUT
echo done

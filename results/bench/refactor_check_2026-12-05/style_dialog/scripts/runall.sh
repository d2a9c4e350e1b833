#!/bin/bash
# usage: runall.sh CODE_DIR OUT_ROOT   (the same commands for the code before and after the refactor)
CODE=$1; OUT=$2; D=/tmp/rf/data; G=/work/shared/data/glove/glove.6B.50d.dialog.txt
export IVAE_DATA_DIR=/work/shared/data
cd $CODE; mkdir -p $OUT
ST="python style_transfer.py --data_dir $D --batch_size 16 --epochs 10 --val_sentences 30 --eval_limit 40 --log_every 5 --threads 1 --cpu --classifier_dir $OUT/clf"
DL="python dialog.py --data_dir $D --epochs 10 --eval_limit 30 --log_every 5 --threads 1 --cpu --embeddings $G --emb_dim 50 --utt_hidden 64 --ctx_hidden 64 --latent 32 --mlp_width 32 --critic_width 64"
set -x
PART=${3:-all}
[ $PART = dl ] || { $ST --split standard --max_steps 40 --out_dir $OUT/st_std > $OUT/st_std.log 2>&1
$ST --split standard --max_steps 13 --out_dir $OUT/st_res > $OUT/st_res1.log 2>&1
$ST --split standard --max_steps 40 --out_dir $OUT/st_res --resume > $OUT/st_res2.log 2>&1
$ST --split no_train --max_steps 30 --out_dir $OUT/st_nt > $OUT/st_nt.log 2>&1; }
[ $PART = st ] || { $DL --max_steps 40 --out_dir $OUT/dl > $OUT/dl.log 2>&1
$DL --max_steps 17 --out_dir $OUT/dl_res > $OUT/dl_res1.log 2>&1
$DL --max_steps 40 --out_dir $OUT/dl_res --resume > $OUT/dl_res2.log 2>&1; }
echo done

#!/bin/bash
# A run interrupted by the code before (--max_steps) and resumed by the code after: equal to an uninterrupted run.
D=/tmp/rf/data; G=/work/shared/data/glove/glove.6B.50d.dialog.txt; OUT=/tmp/rf/out_cross; rm -rf $OUT; mkdir -p $OUT
ST="style_transfer.py --data_dir $D --batch_size 16 --epochs 10 --val_sentences 30 --eval_limit 40 --log_every 5 --threads 1 --cpu --classifier_dir $OUT/clf --split standard"
DL="dialog.py --data_dir $D --epochs 10 --eval_limit 30 --log_every 5 --threads 1 --cpu --embeddings $G --emb_dim 50 --utt_hidden 64 --ctx_hidden 64 --latent 32 --mlp_width 32 --critic_width 64"
set -x
(cd /tmp/rf/before && python $ST --max_steps 13 --out_dir $OUT/st > $OUT/st1.log 2>&1)
(cd /work/main && python $ST --max_steps 40 --resume --out_dir $OUT/st > $OUT/st2.log 2>&1)
(cd /tmp/rf/before && python $DL --max_steps 17 --out_dir $OUT/dl > $OUT/dl1.log 2>&1)
(cd /work/main && python $DL --max_steps 40 --resume --out_dir $OUT/dl > $OUT/dl2.log 2>&1)

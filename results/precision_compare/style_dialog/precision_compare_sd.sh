#!/bin/bash
# fp32 vs bf16 for style_transfer.py and dialog.py: 2 precisions x 2 seeds, short runs, same settings.
cd /work/main
export IVAE_DATA_DIR=/work/shared/data
D=/work/shared/data
for s in 0 1; do for p in fp32 bf16; do
  /usr/bin/time -f "wall %e s" python style_transfer.py --split no_train --data_dir $D --max_steps 400 --val_sentences 0 \
      --eval_limit 500 --log_every 100 --threads 2 --precision $p --seed $s --out_dir runs/prec_sd/style_${p}_seed$s \
      > runs/prec_sd/style_${p}_seed$s.log 2>&1
done; done
for s in 0 1; do for p in fp32 bf16; do
  /usr/bin/time -f "wall %e s" python dialog.py --data dailydialog --data_dir $D --emb_dim 50 \
      --embeddings $D/glove/glove.6B.50d.dialog.txt --max_steps 400 --eval_limit 300 --log_every 100 --threads 2 \
      --precision $p --seed $s --out_dir runs/prec_sd/dialog_${p}_seed$s > runs/prec_sd/dialog_${p}_seed$s.log 2>&1
done; done

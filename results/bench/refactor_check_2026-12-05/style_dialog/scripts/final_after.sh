#!/bin/bash
# The "after" side of every comparison, with the final code (the "before" side is unchanged: HEAD a3da40b).
set -x
cd /tmp/rf && rm -rf out_after lm_out_after && ./runall.sh /work/main /tmp/rf/out_after && ./cross.sh
./lmcheck.sh /tmp/rf/lm_after /tmp/rf/lm_out_after
for d in /tmp/dlg_after /tmp/dlg_after_v; do rm -rf $d; mkdir -p $d; cp /tmp/rf/dlg_orig/* $d/; done
python -c "
import torch
c = torch.load('/tmp/dlg_after_v/checkpoint.pt', weights_only=True, map_location='cpu'); c['validated'] = False; torch.save(c, '/tmp/dlg_after_v/checkpoint.pt')"
A="--resume --max_steps 3030 --threads 1 --data_dir /work/shared/data --eval_limit 20"
(cd /work/main && python dialog.py --out_dir /tmp/dlg_after $A > /tmp/dlg_after.log 2>&1)
(cd /work/main && python dialog.py --out_dir /tmp/dlg_after_v $A > /tmp/dlg_after_v.log 2>&1)
echo finished

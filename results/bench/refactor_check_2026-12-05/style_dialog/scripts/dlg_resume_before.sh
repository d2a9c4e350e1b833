#!/bin/bash
# runs/dialog_authors' checkpoint (step 3000) resumed for 30 steps by the code before and after; the _v copies
# have validated=False, so each resume begins with a validation of the full valid split.
A="--resume --max_steps 3030 --threads 1 --data_dir /work/shared/data --eval_limit 20"
(cd /tmp/rf/before && python dialog.py --out_dir /tmp/dlg_before $A > /tmp/dlg_before.log 2>&1)
(cd /work/main && python dialog.py --out_dir /tmp/dlg_after $A > /tmp/dlg_after.log 2>&1)
(cd /tmp/rf/before && python dialog.py --out_dir /tmp/dlg_before_v $A > /tmp/dlg_before_v.log 2>&1)
(cd /work/main && python dialog.py --out_dir /tmp/dlg_after_v $A > /tmp/dlg_after_v.log 2>&1)
echo done

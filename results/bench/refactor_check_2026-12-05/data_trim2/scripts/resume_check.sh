#!/bin/bash
# usage: resume_check.sh CODE_DIR SIDE   -- resume a COPY of each long run's out_dir for 20 steps with CODE_DIR's code
CODE=$1; SIDE=$2; C=/tmp/dt2/ckpt; export IVAE_DATA_DIR=/work/shared/data
cd $CODE
for r in ${RUNS:-ivae_ac_affine ivae_ac_mlp256 dialog_authors}; do
  rm -rf $C/${SIDE}_$r; cp -r $C/$r.orig $C/${SIDE}_$r
  step=$(python -c "import torch; print(torch.load('$C/$r.orig/checkpoint.pt', map_location='cpu', weights_only=True)['step'])")
  if [ $r = dialog_authors ]; then
    EXTRA="--eval_limit 8 --samples_per_context 2 --responses_shown 4"; S=dialog.py
  else
    EXTRA="--val_limit 16 --eval_limit 8 --eval_samples 8 --iw_samples 8 --fit_samples 64 --fwd_rev_samples 16 --resid_check_steps 20 --num_samples 2"; S=ivae.py
  fi
  echo "## $SIDE $r: checkpoint step $step -> --max_steps $((step + 20))"
  /usr/bin/time -f "%e s wall" python $S --out_dir $C/${SIDE}_$r --resume --threads 1 --max_steps $((step + 20)) $EXTRA \
    > $C/${SIDE}_$r.log 2>&1; echo "exit status $?"; grep -E "^loaded|^step|^training|validating|wall|^Traceback|rror" $C/${SIDE}_$r.log | head -12
done

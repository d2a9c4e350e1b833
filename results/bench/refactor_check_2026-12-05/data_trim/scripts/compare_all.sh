#!/bin/bash
# usage: compare_all.sh BEFORE_OUT AFTER_OUT   -- every comparison of the data.py trim, printed
B=$1; A=$2; S=/work/main/results/bench/refactor_check_2026-12-05/style_dialog/scripts
echo "## before vs after: log.csv, metrics.json (all keys but wall times), text outputs, every checkpoint tensor"
python $S/compare.py $B $A ivae_mi vae vae_res st_std st_res st_nt dl dl_res
echo "## interrupted (--max_steps) + --resume vs straight, each side"
python $S/compare.py --pairs $B/vae $B/vae_res $A/vae $A/vae_res $B/st_std $B/st_res $A/st_std $A/st_res $B/dl $B/dl_res $A/dl $A/dl_res
echo "## console output, steps/s, tok/s, ETA and seconds masked; the evaluations' once-a-minute progress lines"
echo "## (data.EvalProgress: how many there are and where they fall depends on the wall clock) removed"
mask() { grep -Ev '^(test|valid[^:]*): +[0-9]+% \(' "$1" | sed -E -e "s#$B/#OUT/#g" -e "s#$A/#OUT/#g" \
  -e 's/ +[0-9.]+ step\/s +[0-9]+ tok\/s/ S step\/s T tok\/s/' \
  -e 's/ETA .*$/ETA .../' -e 's/\| [0-9,.]+ s( \||$)/| N s\1/g' -e 's/(seconds|_s)[ =:]+[0-9.]+/\1 N/g'; }
for f in ivae_mi vae vae_res1 vae_res2 st_std st_res1 st_res2 st_nt dl dl_res1 dl_res2; do
  diff <(mask $B/$f.log) <(mask $A/$f.log) > /dev/null && echo "$f.log IDENTICAL (wall times masked)" || \
    { echo "$f.log DIFFERS:"; diff <(mask $B/$f.log) <(mask $A/$f.log) | head -20; }
done

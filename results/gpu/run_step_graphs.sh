#!/bin/bash
# GPU checks of data.CudaGraphs (whole training steps replayed from CUDA graphs, one per batch shape) and
# the full 40-epoch ivae_mi.py PTB run of the speed issue, in ONE device call (the session had 15 min of
# device time). Run from the repository root with gpu_data/ (a copy of ../shared/data) and .whl/ (nltk)
# carried. In order, alone on the GPU:
# 1. tests/test_cuda.py, all of it (with the graph-vs-eager tests of every mode), then the ivae_mi step
#    case again with data.CudaGraphs' `graph.replay()` removed (it must fail);
# 2. bench.py --cuda --precision fp32 with --cuda_graph step, then critics;
# 3. `python ivae_mi.py --data ptb` full length (fp32, --cuda_graph step if its tests passed, else critics),
#    stopped with SIGINT before the call's 600 s end if it runs long (its checkpoint is saved);
# 4. if time is left: bench.py --cuda --precision bf16 --cuda_graph step.
# Back: $OUT/g.tar.gz holds everything but checkpoints; the logs also loose under $OUT/g.
set -u
START=$(date +%s)
export PYTHONUNBUFFERED=1 IVAE_DATA_DIR=$PWD/gpu_data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
G=$OUT/g; mkdir -p "$G"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$G/versions.txt"
stamp() { echo "== $1 at $(( $(date +%s) - START )) s" | tee -a "$G/stamps.txt"; }

stamp pytest
timeout 150 python3 -m pytest -q -rA -p no:cacheprovider tests/test_cuda.py > "$G/pytest_cuda.log" 2>&1
echo "pytest rc=$?"; grep -E "^(PASSED|FAILED|ERROR)" "$G/pytest_cuda.log"; tail -2 "$G/pytest_cuda.log"
mode=critics
grep -q "^PASSED.*test_steps_replayed_from_cuda_graphs_match_the_eager_ones\[ivae_mi-step\]" "$G/pytest_cuda.log" && mode=step
echo "mode for the full run: $mode" | tee "$G/mode.txt"
cp data.py /tmp/data.py.keep
sed -i 's/^        graph.replay()$/        pass  # broken on purpose/' data.py
grep -c "broken on purpose" data.py
timeout 60 python3 -m pytest -q -p no:cacheprovider "tests/test_cuda.py::test_steps_replayed_from_cuda_graphs_match_the_eager_ones[ivae_mi-step]" > "$G/pytest_broken.log" 2>&1
echo "broken replay: pytest rc=$? (must be 1)"; tail -2 "$G/pytest_broken.log"
cp /tmp/data.py.keep data.py

stamp bench
for g in step critics; do
  timeout 100 python3 bench.py --data ptb --data_dir gpu_data --cuda --precision fp32 --cuda_graph $g \
    --out_dir "$G/bench" > "$G/bench_$g.log" 2>&1
  echo "bench fp32 $g rc=$?"; tail -5 "$G/bench_$g.log"
done

stamp run
s=$(date +%s); left=$(( 545 - s + START ))
timeout -s INT -k 10 $left python3 ivae_mi.py --data ptb --data_dir gpu_data --cuda --precision fp32 --threads 4 \
  --cuda_graph $mode --out_dir runs/ivae_mi_gpu > "$G/ivae_mi_gpu.log" 2>&1
echo "ivae_mi full rc=$? wall $(( $(date +%s) - s )) s (limit $left s)" | tee "$G/wall.txt"
grep -v "^step" "$G/ivae_mi_gpu.log" | tail -12
cp -r runs/ivae_mi_gpu "$G/ivae_mi_gpu"; rm -f "$G"/ivae_mi_gpu/*.pt

stamp bf16
left=$(( 585 - $(date +%s) + START ))
if [ $left -gt 40 ]; then
  timeout $left python3 bench.py --data ptb --data_dir gpu_data --cuda --precision bf16 --cuda_graph step \
    --out_dir "$G/bench" > "$G/bench_bf16_step.log" 2>&1
  echo "bench bf16 step rc=$?"; tail -5 "$G/bench_bf16_step.log"
fi
stamp end
tar czf "$OUT/g.tar.gz" -C "$OUT" g

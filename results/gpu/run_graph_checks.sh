#!/bin/bash
# GPU checks of the CUDA-graph critic updates (CriticUpdates in ivae.py / ivae_mi.py), one device call,
# run from the repository root with gpu_data/ and .whl/ carried (see run_checks.sh). In order, alone on the GPU:
# 1. tests/test_cuda.py (all of it, with the new graph-vs-eager tests), then the graph test again with
#    the replay line broken (it must fail);
# 2. bench.py --cuda: fp32 with the graph, fp32 eager (--eager_critics), bf16 with the graph;
# 3. one real ivae_mi.py PTB run capped at 2 epochs (fp32): its steps/s, validation and test seconds.
# Everything but checkpoints comes back as $OUT/graph_checks.tar.gz.
set -u
START=$(date +%s)
export PYTHONUNBUFFERED=1 IVAE_DATA_DIR=$PWD/gpu_data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
G=$OUT/g; mkdir -p "$G"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$G/versions.txt"
stamp() { echo "== $1 at $(( $(date +%s) - START )) s"; }

stamp pytest
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$G/pytest_cuda.log" 2>&1
echo "pytest rc=$?"; tail -3 "$G/pytest_cuda.log"
cp ivae_mi.py /tmp/ivae_mi.py.keep
sed -i 's/^        self.graph.replay()$/        pass  # broken on purpose/' ivae_mi.py
grep -c "broken on purpose" ivae_mi.py
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "graph and ivae_mi" > "$G/pytest_broken.log" 2>&1
echo "broken replay: pytest rc=$? (must be 1)"; tail -2 "$G/pytest_broken.log"
cp /tmp/ivae_mi.py.keep ivae_mi.py

stamp bench
for args in "--precision fp32" "--precision fp32 --eager_critics" "--precision bf16"; do
  timeout 120 python3 bench.py --data ptb --data_dir gpu_data --cuda $args --out_dir "$G/bench" > "$G/bench.log.tmp" 2>&1
  echo "bench $args rc=$?"; tail -5 "$G/bench.log.tmp"; cat "$G/bench.log.tmp" >> "$G/bench.log"
done

stamp run
s=$(date +%s)
timeout -s INT -k 10 150 python3 ivae_mi.py --data ptb --data_dir gpu_data --cuda --precision fp32 --threads 2 \
  --max_steps 2718 --out_dir "$G/ivae_mi_2ep" > "$G/ivae_mi_2ep.log" 2>&1
echo "ivae_mi 2 epochs rc=$? wall $(( $(date +%s) - s )) s"
grep "step/s\|valid @\|validating" "$G/ivae_mi_2ep.log" | tail -8; tail -4 "$G/ivae_mi_2ep.log"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in ('train_time_s','test_seconds','nelbo','iw_nll','kl','mi','au')})" "$G/ivae_mi_2ep/metrics.json"
stamp end
tar czf "$OUT/graph_checks.tar.gz" --exclude='*.pt' -C "$OUT" g && rm -rf "$G"

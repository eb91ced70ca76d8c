#!/usr/bin/env bash
# The GPU checks in one go, sized for a short lease of one GPU (about 8 minutes):
#   1. tests/test_cuda.py (CUDA vs CPU: forward, separable loss, decoding; the training loop in
#      bf16 and fp32 on the GPU),
#   2. benchmarks/train_step.py on CUDA (tiny b16 and full b8, d2 = 64, fp32 and bf16),
#   3. benchmarks/accuracy_budget.py: test MPJPE per training budget, four variants side by side.
# Usage (from the repository root; PYTHON defaults to python3, RESULTS to ./gpu_results):
#   bash benchmarks/gpu_checks.sh [SECONDS_PER_ACCURACY_VARIANT]   (default 300)
set -u
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-gpu_results}
WORK=${WORK:-/tmp/c2f_gpu}
SECONDS_PER_VARIANT=${1:-300}
mkdir -p "$RESULTS" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
cores=$(nproc)

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
  echo "cores $cores"; } 2>&1 | tee "$RESULTS/gpu.txt"

# the default profile's embedded dataset (8,000 frames), made while the tests and benchmarks run
( $PY -m pose.tools.cli synth --out "$WORK/raw" --frames 8000 --workers $((cores - 2)) --quiet --force &&
  $PY -m pose.tools.cli prepare "$WORK/raw" --out "$WORK/packed" --split all --workers $((cores - 2)) --quiet --force
) > "$RESULTS/data.log" 2>&1 &
data_pid=$!

$PY -m pytest tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$RESULTS/pytest_cuda.log"

for size in tiny full; do
  batch=$([ $size = tiny ] && echo 16 || echo 8)
  for precision in fp32 bf16; do
    $PY benchmarks/train_step.py --size $size --d2 64 --batch $batch --repeats 20 --warmup 3 --device cuda \
      --precision $precision --json "$RESULTS/train_step_${size}_${precision}.json" 2>&1 | tee -a "$RESULTS/train_step.log"
  done
done

wait $data_pid || { echo "data generation failed:"; tail -5 "$RESULTS/data.log"; exit 1; }
tail -2 "$RESULTS/data.log"
# single d2 = 16 stage from scratch (Adam 2e-3, cosine, batch 16, default augmentation); the first is
# what the default profile's CPU budget buys (~3,000 iterations), the others how far more compute goes
$PY benchmarks/accuracy_budget.py --device cuda --data "$WORK/packed" --out "$WORK/runs" --stage d2_16 \
  --seconds "$SECONDS_PER_VARIANT" --parallel 4 --threads 1 --loader-workers 3 --val-size 448 \
  --variant "tiny64_3k lr=0.002 iterations=3000 data.loader_workers=2" \
  --variant "tiny64_15k lr=0.002 iterations=15000" \
  --variant "tiny128_15k lr=0.002 iterations=15000 model.input_size=128" \
  --variant "full256_bf16 lr=0.002 iterations=8000 model.preset=full precision=bf16 data.loader_workers=5" \
  --json "$RESULTS/accuracy_budget.json" 2>&1 | tee "$RESULTS/accuracy_budget.log"
cat "$WORK"/runs/*.log > "$RESULTS/accuracy_budget_runs.log"

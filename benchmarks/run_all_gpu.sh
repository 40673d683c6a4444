#!/usr/bin/env bash
# All three benchmarks on a CUDA GPU (a few minutes). JSON goes to $OUT when set, else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DEST="${OUT:-benchmarks/results}"
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" benchmarks/bench_loss_memory.py --device cuda --impls plain,fused,trl --repeats 2 \
    --out "$DEST/loss_memory_cuda.json" 2>&1 | tee "$DEST/loss_memory_cuda.log"
"$PY" benchmarks/bench_step_time.py --device cuda --repeats 50 --loss-impls fused,plain \
    --out "$DEST/step_time_cuda.json" 2>&1 | tee "$DEST/step_time_cuda.log"
"$PY" benchmarks/bench_throughput.py --device cuda --eval-repeats 2 --loss-impls fused,plain \
    --out "$DEST/throughput_cuda.json" 2>&1 | tee "$DEST/throughput_cuda.log"

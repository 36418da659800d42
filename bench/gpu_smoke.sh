#!/usr/bin/env bash
# The checks CPU-only CI cannot make, in one short run on a machine with one CUDA GPU:
# evaluation cost (digits and Inception FID over 10,000 samples), and the default job on the GPU
# in fp32, bf16 and fp16 (GradScaler) mixed precision, with its evaluation numbers.
#   bash bench/gpu_smoke.sh            (results under $OUT, default /tmp/gpu_smoke)
set -euo pipefail
OUT=${OUT:-/tmp/gpu_smoke}
mkdir -p "$OUT"
export GANKIT_LOG_DIR=$OUT/logs GANKIT_CACHE_DIR=$OUT/cache WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python bench/eval_cost.py --device cuda --inception random --train-steps 200 2>&1 | grep -v Warning | tee "$OUT/eval_cost.txt"
for precision in 32-true bf16-mixed 16-mixed; do
  SECONDS=0
  python train.py trainer=gpu trainer.precision=$precision logger=csv task_name=gpu_$precision \
    callbacks.progress.refresh_rate=200 >"$OUT/train_$precision.log" 2>&1 || echo "FAILED: $precision"
  echo "precision=$precision wall=${SECONDS}s (start-up and evaluations included)" | tee -a "$OUT/train.txt"
  tr '\r' '\n' <"$OUT/train_$precision.log" | grep -E "Evaluation at|Done|error|possible mode" | sed 's/.*\] - //' \
    | tee -a "$OUT/train.txt"
done

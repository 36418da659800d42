#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in one run of under 10 minutes on one CUDA GPU:
#   - the gpu tests (tests/test_gpu.py: penalties, recipes, ADA + LeCam in fp16 / bf16, fused Adam's unscale
#     before clipping, exact resume with deterministic kernels, StyleGAN2 in fp16 / bf16 / compiled);
#   - StyleGAN2's throughput and MFU (the small preset and the cifar config; compiled in bf16);
#   - the framework's tax on a GPU step (bench/step_overhead.py: DCGAN-32 and DCGAN-64, ratio to raw,
#     and Lightning's own floor: the raw step inside a minimal LightningModule);
#   - throughput and MFU (bench/throughput.py: DCGAN-32 / DCGAN-64 / SNGAN-32, batch 64 / 128 / 256,
#     fp32 / bf16, eager; compiled vs eager for DCGAN-64 at batch 256);
#   - the default job in fp32 and bf16, and the evaluation's share of training (bench/eval_cost.py);
#   - what DiffAugment, ADA (p 0 / 0.2 / 1) and LeCam add to a step (bench/piece_costs.py).
#   bash bench/gpu_checks.sh        results in $OUT (default /tmp/gpu_checks): report.txt
# QUICK=1: a dry run in a minute or two, also on a CPU (tiny lengths; what it prints is not a result).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_checks}
WORK=${WORK:-/tmp/gpu_work}
mkdir -p "$OUT" "$WORK"
export GANKIT_LOG_DIR=$WORK/logs GANKIT_CACHE_DIR=$WORK/cache WANDB_MODE=disabled PYTHONUNBUFFERED=1
REPORT=$OUT/report.txt
PY=${PY:-python}
say() { echo "$@" | tee -a "$REPORT"; }
filter() { grep -v -i -E "warning|tip:|available:|LeafSpec|rationality|set_vital|^ *$" ; }
TRAINER=trainer=gpu DEVICE=cuda STEPS=100 ROUNDS=3 TSTEPS=60 EXTRA=()
if [[ ${QUICK:-0} == 1 ]]; then
  STEPS=10 ROUNDS=1 TSTEPS=5 EXTRA=(trainer.max_epochs=1 metrics.evaluation.every_n_g_steps=1000)
  $PY -c "import torch; exit(not torch.cuda.is_available())" || { TRAINER=trainer=cpu; DEVICE=cpu; }
fi

say "== $(date -u) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
$PY -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, \
'torchmetrics', torchmetrics.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$REPORT"

say "== gpu tests"
SECONDS=0
if [[ $DEVICE == cuda ]]; then
  timeout 170 $PY -m pytest -q -n 0 -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -15 | tee -a "$REPORT"
fi
say "(${SECONDS}s)"

say "== framework tax per generator step (median of per-round ratios to the raw loop)"
SECONDS=0
CASES=(dcgan_mnist32)
[[ $DEVICE == cuda ]] && CASES+=(dcgan64_gpu)
timeout 150 $PY bench/step_overhead.py --device $DEVICE --rounds $ROUNDS --steps $STEPS --cases "${CASES[@]}" 2>&1 \
  | filter | grep -E "^\||device" | tee -a "$REPORT"
say "(${SECONDS}s)"

say "== throughput and MFU, eager"
SECONDS=0
timeout 120 $PY bench/throughput.py --device $DEVICE --steps $TSTEPS --no-compile 2>&1 | filter | grep -E "^\||device" \
  | tee -a "$REPORT"
say "(${SECONDS}s)"
say "== StyleGAN2 throughput and MFU (the small preset and NVlabs' cifar config at 32x32), eager, and compiled"
SECONDS=0
timeout 150 $PY bench/throughput.py --device $DEVICE --steps $TSTEPS --nets stylegan2_32 stylegan2_cifar --batches 64 \
  --no-compile --no-raw 2>&1 | filter | grep -E "^\||device" | tee -a "$REPORT"
timeout 120 $PY bench/throughput.py --device $DEVICE --steps $TSTEPS --nets stylegan2_cifar --batches 64 \
  --precisions bf16-mixed --no-raw --compile-mode max-autotune-no-cudagraphs 2>&1 | filter | grep -E "^\| stylegan|compiled" \
  | tee -a "$REPORT"
say "(${SECONDS}s)"
say "== compiled vs eager (DCGAN-64, batch 256; CUDA graphs through reduce-overhead)"
SECONDS=0
for mode in max-autotune-no-cudagraphs reduce-overhead; do
  timeout 100 $PY bench/throughput.py --device $DEVICE --steps $TSTEPS --nets dcgan64 --batches 256 \
    --precisions bf16-mixed --no-raw --compile-mode $mode 2>&1 | filter | grep -E "^\| dcgan|compiled" \
    | sed "s/$/ ($mode)/" | tee -a "$REPORT"
done
say "(${SECONDS}s)"

say "== the default job, fp32 and bf16 (wall includes start-up and evaluations)"
for precision in 32-true bf16-mixed; do
  SECONDS=0
  timeout 90 $PY train.py $TRAINER trainer.precision=$precision logger=csv task_name=gpu_$precision \
    callbacks.progress.refresh_rate=500 "${EXTRA[@]}" >"$WORK/train_$precision.log" 2>&1 \
    || say "FAILED or timed out: $precision"
  say "precision=$precision wall=${SECONDS}s"
  tr '\r' '\n' <"$WORK/train_$precision.log" | grep -E "Evaluation at|Error|error:|possible mode" \
    | sed 's/.*\] - //' | tail -3 | tee -a "$REPORT"
done

say "== evaluation cost (Inception, random weights: timing only)"
SECONDS=0
timeout 100 $PY bench/eval_cost.py --device $DEVICE --inception random --train-steps 200 2>&1 | filter | tail -14 \
  | tee -a "$REPORT"
say "(${SECONDS}s)"
say "== limited-data pieces per generator step (median of per-round ratios to the default job)"
SECONDS=0
timeout 90 $PY bench/piece_costs.py --device $DEVICE --rounds 2 --steps $STEPS 2>&1 | grep -E "^\||device" | tee -a "$REPORT"
say "(${SECONDS}s)"
say "== done $(date -u)"

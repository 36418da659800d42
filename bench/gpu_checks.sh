#!/usr/bin/env bash
# What CPU-only CI cannot check, in one run of about 9 minutes on a machine with one CUDA GPU:
#   - the gpu tests (tests/test_gpu.py: penalties and recipes under fp16 / bf16 mixed precision);
#   - Stacked MNIST (DCGAN, PacDCGAN2, PacDCGAN2 + EMA), three runs sharing the GPU, in the background,
#     each stopped by trainer.max_time at the latest (evaluated at the end either way);
#   - meanwhile the default job in fp32, bf16 and fp16, the evaluation cost and the data throughput
#     (their timings are taken while the Stacked MNIST runs share the GPU and the cores).
#   bash bench/gpu_checks.sh        results in $OUT (default /tmp/gpu_checks): report.txt and a few files
# Knobs: STACKED_TIME (dd:hh:mm:ss, default 00:00:06:40), STACKED_STEPS (20000), QUICK=1 (a dry run
# in a minute or two, also on a CPU: tiny lengths; what it prints is not a result).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_checks}
WORK=${WORK:-/tmp/gpu_work}
mkdir -p "$OUT" "$WORK"
export GANKIT_LOG_DIR=$WORK/logs GANKIT_CACHE_DIR=$WORK/cache WANDB_MODE=disabled PYTHONUNBUFFERED=1
REPORT=$OUT/report.txt
PY=${PY:-python}
say() { echo "$@" | tee -a "$REPORT"; }
STACKED_TIME=${STACKED_TIME:-00:00:06:40}
STACKED_STEPS=${STACKED_STEPS:-20000}
TRAINER=trainer=gpu DEVICE=cuda
EXTRA=() STACKED_EXTRA=()
if [[ ${QUICK:-0} == 1 ]]; then
  STACKED_TIME=00:00:00:40 STACKED_STEPS=60
  EXTRA=(trainer.max_epochs=1 metrics.evaluation.every_n_g_steps=1000) STACKED_EXTRA=(metrics.evaluation.num_samples=1000)
  $PY -c "import torch; exit(not torch.cuda.is_available())" || { TRAINER=trainer=cpu; DEVICE=cpu; }
fi

say "== $(date -u) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
$PY -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, \
'torchmetrics', torchmetrics.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$REPORT"

# Stacked MNIST, three variants at once (one seed each), in the background.
STACKED_KEYS=(val/modes val/mode_kl val/fid)
($PY scripts/seed_table.py experiment=stacked_mnist $TRAINER g_steps=$STACKED_STEPS \
  "+trainer.max_time=$STACKED_TIME" callbacks.progress.refresh_rate=500 "${STACKED_EXTRA[@]}" \
  --seeds 1 --parallel 3 --threads 4 --keys "${STACKED_KEYS[@]}" --out "$WORK/stacked" \
  --variant "DCGAN=" \
  --variant "PacDCGAN2=model.pack=2 data.batch_size=128" \
  --variant "PacDCGAN2+EMA=model.pack=2 data.batch_size=128 model.ema_decay=0.999" \
  >"$WORK/stacked.log" 2>&1; echo "stacked exit $?" >>"$WORK/stacked.log") &
STACKED_PID=$!

say "== gpu tests"
SECONDS=0
if [[ $TRAINER == trainer=gpu ]]; then
  timeout 150 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -15 | tee -a "$REPORT"
fi
say "(${SECONDS}s)"

say "== the default job in three precisions (wall includes start-up and evaluations)"
for precision in 32-true bf16-mixed 16-mixed; do
  SECONDS=0
  timeout 150 $PY train.py $TRAINER trainer.precision=$precision logger=csv task_name=gpu_$precision \
    callbacks.progress.refresh_rate=500 "${EXTRA[@]}" >"$WORK/train_$precision.log" 2>&1 \
    || say "FAILED or timed out: $precision"
  say "precision=$precision wall=${SECONDS}s"
  tr '\r' '\n' <"$WORK/train_$precision.log" | grep -E "Evaluation at|Error|error:|possible mode" \
    | sed 's/.*\] - //' | tail -4 | tee -a "$REPORT"
done

say "== evaluation cost"
SECONDS=0
timeout 120 $PY bench/eval_cost.py --device $DEVICE --inception random --train-steps 200 2>&1 \
  | grep -v -i -E "warning|tip:|available:|LeafSpec|rationality" | tail -20 | tee -a "$REPORT"
say "(${SECONDS}s)"

say "== data throughput"
SECONDS=0
timeout 120 $PY bench/data_throughput.py --device $DEVICE --images 5000 --workers 8 --root "$WORK/celeba" 2>&1 \
  | grep -v -i -E "warning|tip:|available:|LeafSpec|rationality" | tail -20 | tee -a "$REPORT"
say "(${SECONDS}s)"

say "== stacked MNIST (waiting for the background runs)"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null | tee -a "$REPORT"
wait $STACKED_PID
tail -12 "$WORK/stacked.log" | tee -a "$REPORT"
for run in "$WORK"/stacked/*/seed0; do
  say "-- $(basename "$(dirname "$run")")"
  grep -h -E "Evaluation at|max_time|possible mode" "$run"/*.log 2>/dev/null | sed 's/.*\] - //' | tee -a "$REPORT"
done
cp "$WORK/stacked/table.md" "$OUT/stacked_table.md" 2>/dev/null
for variant in DCGAN PacDCGAN2+EMA; do
  last=$(ls "$WORK/stacked/$variant/seed0/samples/"*.png 2>/dev/null | tail -1)
  [[ -n $last ]] && cp "$last" "$OUT/stacked_${variant//+/_}.png"
done
say "== done $(date -u)"

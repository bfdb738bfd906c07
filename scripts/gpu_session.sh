#!/usr/bin/env bash
# One prepared session on a lent GPU machine: train the demo model's networks (scripts/make_demo_model.sh,
# STAGE=train), then benchmark CUDA against CPU on a 512x512x300 phantom. Everything worth keeping lands
# in $OUT as it is produced, so a session cut short still returns what it finished.
#   OUT=... bash scripts/gpu_session.sh          (CASES, MAIN_STEPS, WORKERS, DEVICE override for a dry run)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
work=${WORK:-/tmp/work}
mkdir -p "$work" "$OUT"
log="$OUT/log.txt"
exec > >(tee -a "$log") 2>&1
export PYTHONPATH="$repo:$repo/TACEResponse:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
date; nvidia-smi -L 2>/dev/null | tee "$OUT/gpu.txt"
python3 "$repo/benchmarks/phantom.py" "$work/ph300.nii.gz" &
phantom=$!
if [ -z "${MAIN_STEPS:-}" ]; then
    per_step=$(python3 "$here/probe_step.py" "$here/demo_config.json" --device "${DEVICE:-cuda}")
    # the training budget: ~150 s of steps, at most 4000
    MAIN_STEPS=$(python3 -c "print(max(100, min(4000, int(150 / max($per_step * 1.6, 1e-3)))))")
    echo "probe: $per_step s/step on random data -> MAIN_STEPS=$MAIN_STEPS"
fi
export MAIN_STEPS WORKERS=${WORKERS:-16} DEVICE=${DEVICE:-cuda} STAGE=train
start=$(date +%s)
bash "$here/make_demo_model.sh" "$work" || echo "TRAINING FAILED"
echo "training stage took $(( $(date +%s) - start )) s"
for run in run_demo run_localizer; do
    cp "$work/$run/final.safetensors" "$OUT/${run}_final.safetensors" 2>/dev/null
    cp "$work/$run/run.json" "$OUT/${run}_run.json" 2>/dev/null
done
cp "$work/run_demo/history.jsonl" "$OUT/run_demo_history.jsonl" 2>/dev/null
cat "$work/localizer.log" 2>/dev/null | tail -5
wait $phantom
python3 -m TACEResponseTraining export "$work/run_demo" -o "$work/gpu_model" --name demo-gpu-check \
    --localizer "$work/run_localizer" && \
python3 "$repo/benchmarks/bench_devices.py" "$work/ph300.nii.gz" --model "$work/gpu_model" --repeats 3 \
    --json "$OUT/gpu_bench.json"
date

#!/usr/bin/env bash
# Fine-tunes a released demo model on a newer phantom generator instead of training it again from scratch:
# phantom cohorts -> cached preprocessing -> each main network trained on from the package's own weights (its
# own cosine learning-rate decay, scripts/finetune_config.json) -> response pathways refitted through the
# Predictor -> held-out test -> model package. The package's localiser is kept as it is.
#   bash scripts/finetune_demo_model.sh WORKDIR [MODELDIR]
# Environment: FROM (the package to start from, default the bundled demo model; copied to WORKDIR/start first,
# so that MODELDIR may be the same folder), STEPS (fine-tuning steps per network, default 1000), CASES
# (default 160), TEST_CASES (default 40), WORKERS (default 2), DEVICE (auto|cpu|cuda), VERSION (default
# 0.7.0), STAGE (all|train|package). WORKDIR/timings.tsv records the wall time of every stage.
set -euo pipefail
work=${1:?usage: finetune_demo_model.sh WORKDIR [MODELDIR]}
model=${2:-TACEResponse/Resources/Models/demo}
here=$(cd "$(dirname "$0")" && pwd)
steps=${STEPS:-1000}
. "$here/recipe_common.sh"
[ -f "$work/start/model.json" ] || cp -r "${FROM:-TACEResponse/Resources/Models/demo}" "$work/start"
runs=()
for weights in "$work"/start/weights_fold*.safetensors; do
    runs+=("$work/run_$(basename "$weights" .safetensors)")
done
if [ "$stage" != package ]; then
    cohorts "$cases" "$test_cases" "$workers"
    timed cache python3 "$here/warm_cache.py" "$work/synth$cases" "$work/cache" "$here/finetune_config.json" \
        --workers "$workers"
    for run in "${runs[@]}"; do  # one after the other: two trainings on a 2-core CPU slow each other down
        [ "$(steps_done "$run")" -ge "$steps" ] && continue
        start=(--init-weights "$work/start/$(basename "$run" | sed 's/^run_//').safetensors")
        [ -d "$run/checkpoint" ] && start=(--resume)
        timed "finetune_$(basename "$run")" $train train "$work/synth$cases" -o "$run" \
            --config "$here/finetune_config.json" --max-steps "$steps" --device "$device" --cache "$work/cache" \
            "${start[@]}"
    done
fi
if [ "$stage" != train ]; then
    cohorts "$cases" "$test_cases" "$workers"
    refit_test_export "$model" "$work/start" "${VERSION:-0.7.0}" "bash scripts/finetune_demo_model.sh WORKDIR" \
        "${runs[@]}"
fi

#!/usr/bin/env bash
# Rebuilds the bundled demo model from synthetic data only: phantom cohorts -> cached preprocessing ->
# coarse liver localiser + main network (bf16 autocast on the CPU, fp16 on a GPU) -> response pathway refitted
# on statistics computed as prediction computes them -> held-out test -> model package with the test metrics.
#   bash scripts/make_demo_model.sh WORKDIR [MODELDIR]
# Environment: WORKERS (parallel processes, default 2), DEVICE (auto|cpu|cuda), MAIN_STEPS (default
# "4000 6000"), SECOND_STEPS (default 7000; empty for one main network), LOC_STEPS (default "800 1600"), CASES
# (training cohort size, default 160), TEST_CASES (default 40), VERSION (default 0.6.0), STAGE
# (all|train|package). The package holds two main networks and averages them: the main run, and a copy of it
# trained on to SECOND_STEPS (on a GPU, train folds instead). A list of steps trains in stages: each
# resumes the previous one and runs its cosine learning-rate decay again to the stage's own end (a warm
# restart), so a model can be trained further without starting over. The same recipe with larger steps and
# CASES is what a GPU would run. WORKDIR/timings.tsv records the wall time of every stage.
set -euo pipefail
work=${1:?usage: make_demo_model.sh WORKDIR [MODELDIR]}
model=${2:-TACEResponse/Resources/Models/demo}
here=$(cd "$(dirname "$0")" && pwd)
second=${SECOND_STEPS-7000}  # empty: one main network
. "$here/recipe_common.sh"
staged() {  # staged NAME RUNDIR CONFIG STEPS...: train to each number of steps in turn; a reached stage is kept
    local name=$1 run=$2 config=$3 steps resume
    shift 3
    for steps in "$@"; do
        [ "$(steps_done "$run")" -ge "$steps" ] && continue
        resume=(); [ -d "$run/checkpoint" ] && resume=(--resume)
        timed "train_${name}_to_$steps" $train train "$work/synth$cases" -o "$run" --config "$config" \
            --max-steps "$steps" --device "$device" --cache "$work/cache" "${resume[@]}"
    done
}
if [ "$stage" != package ]; then
    cohorts "$cases" "$test_cases" "$workers"
    timed cache python3 "$here/warm_cache.py" "$work/synth$cases" "$work/cache" "$here/demo_config.json" \
        "$here/localizer_config.json" --workers "$workers"
    # one after the other: on a 2-core CPU two trainings in parallel only slow each other down
    staged localizer "$work/run_localizer" "$here/localizer_config.json" ${LOC_STEPS:-800 1600}
    staged main "$work/run_demo" "$here/demo_config.json" ${MAIN_STEPS:-4000 6000}
    if [ -n "$second" ]; then
        [ -d "$work/run_demo_second" ] || cp -r "$work/run_demo" "$work/run_demo_second"
        staged second "$work/run_demo_second" "$here/demo_config.json" $second
    fi
fi
if [ "$stage" != train ]; then
    cohorts "$cases" "$test_cases" "$workers"
    runs=("$work/run_demo"); [ -n "$second" ] && runs+=("$work/run_demo_second")
    refit_test_export "$model" "$work/run_localizer" "${VERSION:-0.6.0}" "bash scripts/make_demo_model.sh WORKDIR" \
        "${runs[@]}"
fi

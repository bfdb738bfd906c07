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
workers=${WORKERS:-2}
device=${DEVICE:-auto}
stage=${STAGE:-all}
cases=${CASES:-160}
test_cases=${TEST_CASES:-40}
second=${SECOND_STEPS-7000}  # empty: one main network
train="python3 -m TACEResponseTraining"
mkdir -p "$work"
timed() {  # timed NAME COMMAND...: run, and append "NAME<TAB>seconds" to WORKDIR/timings.tsv
    local name=$1 start
    shift
    start=$(date +%s)
    "$@"
    printf '%s\t%s\n' "$name" "$(( $(date +%s) - start ))" >> "$work/timings.tsv"
}
steps_done() {  # steps_done RUNDIR: the step its checkpoint reached (0 without one)
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["step"])' "$1/checkpoint/state.json" \
        2>/dev/null || echo 0
}
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
    [ -f "$work/synth$cases/cohort.json" ] || timed synth_train \
        $train synth -o "$work/synth$cases" --cases "$cases" --seed 0 --workers "$workers"
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
    [ -f "$work/synth_test$test_cases/cohort.json" ] || timed synth_test \
        $train synth -o "$work/synth_test$test_cases" --cases "$test_cases" --seed 1 --workers "$workers"
    # the response pathway again, on statistics computed as prediction computes them (localiser, region)
    refitted=()
    for run in run_demo ${second:+run_demo_second}; do
        timed "refit_$run" $train refit "$work/$run" "$work/synth$cases" -o "$work/${run}_refit" \
            --localizer "$work/run_localizer" --tile-size 128
        refitted+=("$work/${run}_refit")
    done
    $train export "${refitted[@]}" -o "$work/untested" --name demo --localizer "$work/run_localizer" \
        --tile-size 128
    timed test $train test "$work/untested" "$work/synth_test$test_cases" -o "$work/test$test_cases"
    # MODELDIR must not exist yet (export never overwrites): remove the old bundled model first on purpose
    $train export "${refitted[@]}" -o "$model" --name demo --version "${VERSION:-0.6.0}" \
        --localizer "$work/run_localizer" --tile-size 128 --training-data "$here/demo_training_data.json" \
        --test-metrics "$work/test$test_cases/metrics.json" \
        --reproduce "bash scripts/make_demo_model.sh WORKDIR"
fi

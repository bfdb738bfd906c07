# Settings and shell functions shared by the demo model's recipes (make_demo_model.sh, finetune_demo_model.sh).
# Sourced with $work (the work folder) and $here (the scripts folder) set.
workers=${WORKERS:-2}
device=${DEVICE:-auto}
stage=${STAGE:-all}
cases=${CASES:-160}
test_cases=${TEST_CASES:-40}
train="python3 -m TACEResponseTraining"
mkdir -p "$work"
timed() {  # timed NAME COMMAND...: run, and append "NAME<TAB>seconds" to $work/timings.tsv
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
cohorts() {  # cohorts CASES TEST_CASES WORKERS: the training cohort (seed 0) and the held-out one (seed 1)
    [ -f "$work/synth$1/cohort.json" ] || timed synth_train \
        $train synth -o "$work/synth$1" --cases "$1" --seed 0 --workers "$3"
    [ -f "$work/synth_test$2/cohort.json" ] || timed synth_test \
        $train synth -o "$work/synth_test$2" --cases "$2" --seed 1 --workers "$3"
}
refit_test_export() {  # refit_test_export MODELDIR LOCALIZER VERSION REPRODUCE RUNDIR...: each run's response
    # pathway refitted on statistics computed as prediction computes them (localiser, region), the ensemble
    # tested on the held-out cohort, and exported to MODELDIR with the test metrics in its card
    local model=$1 localizer=$2 version=$3 reproduce=$4 run refitted=()
    shift 4
    for run in "$@"; do
        [ -f "${run}_refit/run.json" ] || timed "refit_$(basename "$run")" $train refit "$run" "$work/synth$cases" \
            -o "${run}_refit" --localizer "$localizer" --tile-size 128
        refitted+=("${run}_refit")
    done
    [ -f "$work/untested/model.json" ] || $train export "${refitted[@]}" -o "$work/untested" --name demo \
        --localizer "$localizer" --tile-size 128
    [ -f "$work/test$test_cases/metrics.json" ] || timed test \
        $train test "$work/untested" "$work/synth_test$test_cases" -o "$work/test$test_cases"
    # MODELDIR must not exist yet (export never overwrites): remove the old bundled model first on purpose
    $train export "${refitted[@]}" -o "$model" --name demo --version "$version" --localizer "$localizer" \
        --tile-size 128 --training-data "$here/demo_training_data.json" \
        --test-metrics "$work/test$test_cases/metrics.json" --reproduce "$reproduce"
}

#!/usr/bin/env bash
# Rebuilds the bundled demo model exactly (about 1 hour on a 2-core CPU):
# synthetic cohorts -> training -> held-out test -> model package with the test metrics in its card.
#   bash scripts/make_demo_model.sh WORKDIR [MODELDIR]
set -euo pipefail
work=${1:?usage: make_demo_model.sh WORKDIR [MODELDIR]}
model=${2:-TACEResponse/Resources/Models/demo}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
tace-response-train synth -o "$work/synth200" --cases 200 --seed 0 --workers 2
tace-response-train synth -o "$work/synth_test60" --cases 60 --seed 1 --workers 2
tace-response-train train "$work/synth200" -o "$work/run_demo" --config "$here/demo_config.json" --max-steps 1600
tace-response-train export "$work/run_demo" -o "$work/untested" --name demo
tace-response-train test "$work/untested" "$work/synth_test60" -o "$work/test60"
tace-response-train export "$work/run_demo" -o "$model" --name demo --version 0.1.0 \
    --training-data "$here/demo_training_data.json" --test-metrics "$work/test60/metrics.json" \
    --reproduce "bash scripts/make_demo_model.sh WORKDIR"

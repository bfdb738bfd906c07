"""`export RUNDIR -o MODELDIR`: a finished run -> a verified model package."""

import json
from pathlib import Path

from safetensors.torch import load_file

from TACEResponseLib.errors import InputError
from TACEResponseLib.model_package import write_package

from .model_card import full_card

SYNTHETIC_USE = ("Research demonstration only. Trained on synthetic CT phantoms, not on patients: "
                 "trained on synthetic data - not for clinical use.")


def export_run(run_dir, out_dir, name=None, version="0.1.0", intended_use=None, training_data=None,
               license_text="Apache-2.0", reproduce=None, extra_metrics=None):
    run_dir = Path(run_dir)
    run_file, weights = run_dir / "run.json", run_dir / "final.safetensors"
    if not run_file.is_file() or not weights.is_file():
        raise InputError(run_dir, "not a finished training run (run.json and final.safetensors are missing)")
    with open(str(run_file), encoding="utf-8") as stream:
        run = json.load(stream)
    if extra_metrics:
        run.setdefault("metrics", {}).update(extra_metrics)
    config = run["config"]
    training_data = training_data or {
        "description": "see the training run",
        "cases": {"train": len(run["train_cases"]), "validation": len(run["validation_cases"])},
    }
    card = full_card(config, run, name or run_dir.name, version, intended_use or SYNTHETIC_USE, training_data,
                     license_text, reproduce)
    return write_package(out_dir, card, [load_file(str(weights))])

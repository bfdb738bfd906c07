"""`export RUNDIR [RUNDIR ...] -o MODELDIR [--localizer RUNDIR|MODELDIR]`: finished runs -> a verified model
package.

Several runs (e.g. the k folds of a cross-validation) become one fold ensemble: prediction averages their
probabilities and reports the spread. A localizer run (a small network trained at coarse spacing) lets
prediction find the liver first and run the main networks only around it; a model package's localiser can
be reused instead, so that fine-tuned main networks keep the localiser they were released with.
"""

import json
from pathlib import Path

from safetensors.torch import load_file

from TACEResponseLib import coarse_pass
from TACEResponseLib.errors import InputError
from TACEResponseLib.model_package import load_package, write_package

from .model_card import full_card

SYNTHETIC_USE = ("Research demonstration only. Trained on synthetic CT phantoms, not on patients: "
                 "trained on synthetic data - not for clinical use.")
DEFAULT_ROI_MARGIN_MM = 15.0
# the network's shape and input: every fold of an ensemble must agree on these
_SAME_ACROSS_FOLDS = ("phases", "spacing_mm", "intensity_window_hu", "channels", "head_hidden", "intensity_bins")


def read_run(run_dir):
    """(run.json as a dict, weights state dict) of a finished training run."""
    run_dir = Path(run_dir)
    run_file, weights = run_dir / "run.json", run_dir / "final.safetensors"
    if not run_file.is_file() or not weights.is_file():
        raise InputError(run_dir, "not a finished training run (run.json and final.safetensors are missing)")
    with open(str(run_file), encoding="utf-8") as stream:
        run = json.load(stream)
    return run, load_file(str(weights))


def _ensemble_run(runs, run_dirs):
    """One run description for k fold models: the shared config, the mean cutoff, metrics per fold."""
    first = runs[0]["config"]
    for run, run_dir in zip(runs[1:], run_dirs[1:]):
        differing = [key for key in _SAME_ACROSS_FOLDS if run["config"].get(key) != first.get(key)]
        if differing:
            raise InputError(run_dir, "cannot join into one ensemble with {}: different {}".format(
                run_dirs[0], ", ".join(differing)))
    cutoffs = [float(run["cutoff"]) for run in runs]
    return {
        "config": first,
        "cutoff": sum(cutoffs) / len(cutoffs),
        "cutoff_method": "mean of the {} fold models' cutoffs ({}), each the Youden index on its own training "
                         "cases".format(len(runs), ", ".join("{:.3f}".format(c) for c in cutoffs)),
        "metrics": {"folds": [run.get("metrics", {}) for run in runs]},
        "train_cases": sorted({c for run in runs for c in run["train_cases"]}),
        "validation_cases": sorted({c for run in runs for c in run["validation_cases"]}),
    }


def localizer_entry(run, roi_margin_mm=DEFAULT_ROI_MARGIN_MM):
    config = run["config"]
    return {
        "spacing_mm": list(config["spacing_mm"]),
        "channels": list(config["channels"]),
        "head_hidden": int(config["head_hidden"]),
        "intensity_bins": int(config.get("intensity_bins", 0)),
        "context_classes": list(config.get("context_classes", [])),
        "tile_size": list(config["tile_size"]),
        "tile_margin": int(config["tile_margin"]),
        "roi_margin_mm": float(roi_margin_mm),
        "organ_reach_mm": coarse_pass.DEFAULT_REACH_MM,
        "tumor_reach_mm": coarse_pass.DEFAULT_TUMOR_REACH_MM,
        "fill_missed_liver": True,
        "purpose": "coarse liver localisation: the main network runs only on the liver region plus the margin, "
                   "labels nothing farther than organ_reach_mm from it and no tumor farther than tumor_reach_mm; "
                   "with fill_missed_liver, thick parts it is sure of that the main network missed become organ",
        "metrics": run.get("metrics", {}),
    }


def read_localizer(path, roi_margin_mm=DEFAULT_ROI_MARGIN_MM):
    """(card entry, input phases, weights) of a localiser: its training run's, or a model package's own."""
    path = Path(path)
    if not (path / "model.json").is_file():
        run, state = read_run(path)
        return localizer_entry(run, roi_margin_mm), list(run["config"]["phases"]), state
    package = load_package(path)  # verifies every file's SHA-256; a ModelError names the file
    entry = package.card.get("localizer")
    if not entry:
        raise InputError(path, "model package has no localizer")
    entry = {key: value for key, value in entry.items() if key not in ("file", "sha256")}
    entry["roi_margin_mm"] = float(roi_margin_mm)
    return entry, list(package.card["inputs"]["phases"]), load_file(str(package.folder / package.card["localizer"]["file"]))


def export_run(run_dirs, out_dir, name=None, version="0.1.0", intended_use=None, training_data=None,
               license_text="Apache-2.0", reproduce=None, extra_metrics=None, localizer_dir=None,
               roi_margin_mm=DEFAULT_ROI_MARGIN_MM, tile_size=None):
    run_dirs = [Path(d) for d in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    loaded = [read_run(d) for d in run_dirs]
    runs, states = [r for r, _ in loaded], [s for _, s in loaded]
    run = runs[0] if len(runs) == 1 else _ensemble_run(runs, run_dirs)
    if extra_metrics:
        run.setdefault("metrics", {}).update(extra_metrics)
    config = run["config"]
    training_data = training_data or {
        "description": "see the training run",
        "cases": {"train": len(run["train_cases"]), "validation": len(run["validation_cases"])},
    }
    card = full_card(config, run, name or run_dirs[0].name, version, intended_use or SYNTHETIC_USE, training_data,
                     license_text, reproduce)
    if tile_size:  # inference tiling is not a property of training: bigger tiles waste less on margins
        card["inference"]["tile_size"] = [int(tile_size)] * 3
    localizer_state = None
    if localizer_dir:
        entry, phases, localizer_state = read_localizer(localizer_dir, roi_margin_mm)
        if phases != list(config["phases"]):
            raise InputError(localizer_dir, "localizer was trained on phases {} but the model takes {}".format(
                phases, config["phases"]))
        card["localizer"] = entry
    return write_package(out_dir, card, states, localizer_state)

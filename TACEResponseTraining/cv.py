"""`cv DATASET -o RUNDIR --folds K`: patient-level stratified k-fold cross-validation of the network
variants, the clinical logistic model and the combined model, with an optional external test cohort.

Layout of RUNDIR (every step skips what an earlier, interrupted call already finished):

- ``splits.json``: the folds' held-out case ids, written before any training;
- ``cv.json``: configuration, models and where their predictions are (read by ``evaluate``);
- ``folds/fold<k>/dataset.csv``: the fold's training cases (absolute paths), which ``train()`` splits
  into its inner training and validation cases as usual;
- ``<model>/fold<k>/``: a ``train()`` run, its exported ``package/`` and ``predictions.csv`` (the held-out
  cases through the shipped Predictor, scored on each case's own grid);
- ``<model>/oof_predictions.csv``: every case's out-of-fold prediction;
- ``<model>/external/package`` (the fold models as one fold-ensemble package: the Predictor averages their
  probabilities) and ``<model>/external_predictions.csv``;
- ``clinical/`` and ``combined/``: the logistic models, fitted within the same folds.
"""

import csv
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from TACEResponseLib import image_io, model_package, preprocessing
from TACEResponseLib.errors import InputError
from TACEResponseLib.predictor import Predictor

from . import metrics
from .clinical_model import DEFAULT_VARIABLES, LogisticModel
from .dataset import read_dataset
from .export import export_run
from .model_card import full_card
from .surface_metrics import case_scores
from .train import train

NETWORK_MODELS = ("multitask", "classification", "segmentation")
INTENDED_USE = "Cross-validation model for research evaluation; not for clinical use."
OUTCOME_COLUMNS = ("os_time", "os_event", "ttp_time", "ttp_event")


# ---------------------------------------------------------------- small file helpers

def _write_csv(path, rows, fields=None):
    """Write atomically (a finished file is complete); None and NaN become empty cells."""
    fields = fields or list(dict.fromkeys(k for row in rows for k in row))
    partial = Path(str(path) + ".partial")
    with open(str(partial), "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.items()})
    os.replace(str(partial), str(path))


def read_csv(path):
    with open(str(path), newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _write_json(path, document):
    partial = Path(str(path) + ".partial")
    with open(str(partial), "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=1)
    os.replace(str(partial), str(path))


def _read_json(path):
    with open(str(path), encoding="utf-8") as stream:
        return json.load(stream)


def as_float(value):
    try:
        return float(value) if value not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


# ---------------------------------------------------------------- folds

def stratified_folds(records, k, seed):
    """K patient-level folds stratified on response (1, 0, unknown as its own stratum): each stratum is
    shuffled and dealt round-robin, continuing where the previous stratum stopped, so fold sizes differ by
    at most one and so does each stratum's count per fold. Returns the held-out case ids per fold."""
    rng = np.random.default_rng([int(seed), 4099])
    folds = [[] for _ in range(k)]
    dealt = 0
    for stratum in (1, 0, None):
        members = sorted(r.case_id for r in records if r.response == stratum)
        for position, index in enumerate(rng.permutation(len(members))):
            folds[(dealt + position) % k].append(members[index])
        dealt += len(members)
    return [sorted(fold) for fold in folds]


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_splits(records, dataset_dir, run_dir, k, seed):
    """Write RUNDIR/splits.json, or check that an existing one fits this dataset and K, and return it."""
    path = Path(run_dir) / "splits.json"
    ids = sorted(r.case_id for r in records)
    if path.is_file():
        splits = _read_json(path)
        if splits["folds"] != k or sorted(i for fold in splits["test_cases"] for i in fold) != ids:
            raise InputError(path, "made for other folds or cases ({} folds, {} cases); use a new RUNDIR".format(
                splits["folds"], sum(len(f) for f in splits["test_cases"])))
        return splits
    test_cases = stratified_folds(records, k, seed)
    response = {r.case_id: r.response for r in records}
    splits = {
        "dataset": str(Path(dataset_dir).resolve()),
        "dataset_csv_sha256": _sha256(Path(dataset_dir) / "dataset.csv"),
        "folds": k, "seed": int(seed),
        "stratified_on": "response (1, 0; unknown response as its own stratum), patient level",
        "test_cases": test_cases,
        "counts": [{"cases": len(f), "responders": sum(response[i] == 1 for i in f),
                    "non_responders": sum(response[i] == 0 for i in f),
                    "unknown": sum(response[i] is None for i in f)} for f in test_cases],
    }
    _write_json(path, splits)
    return splits


def _fold_dataset(run_dir, dataset_dir, records, train_ids, fold):
    """A dataset folder holding only the fold's training cases (paths made absolute)."""
    folder = Path(run_dir) / "folds" / "fold{}".format(fold)
    folder.mkdir(parents=True, exist_ok=True)
    base = Path(dataset_dir).resolve()
    rows = []
    for record in records:
        if record.case_id not in train_ids:
            continue
        row = dict(record.row)
        for key, value in record.row.items():
            if (key.startswith("image_") or key == "label") and value and value.strip():
                row[key] = str(base / value.strip())
        rows.append(row)
    _write_csv(folder / "dataset.csv", rows, list(records[0].row))
    return folder


# ---------------------------------------------------------------- predictions through the shipped Predictor

def predict_cases(package, records, cohort, device, log, fold=None, score_segmentation=True, score_response=True):
    """Predict ``records`` with a model package through the Predictor (what a user gets) and score each case
    on its own grid: probability, risk group at the package's cutoff, Dice / HD95 / volume error."""
    predictor = Predictor(package, device=device)
    rows = []
    for index, record in enumerate(records):
        images = [image_io.read_image(p)[0] for p in record.images]
        prediction = predictor.predict(images, record.images)
        row = {"case_id": record.case_id, "cohort": cohort, "fold": fold, "response": record.response}
        row.update({c: record.row.get(c, "") for c in OUTCOME_COLUMNS})
        if score_response:
            row.update({"probability": prediction.response_probability, "cutoff": prediction.risk_cutoff,
                        "risk_group": prediction.risk_category})
            if len(prediction.fold_probabilities) > 1:
                row["fold_probabilities"] = ";".join("{:.6f}".format(p) for p in prediction.fold_probabilities)
        else:  # the segmentation-only baseline: its response output is untrained and not reported
            row.update({"probability": float("nan"), "cutoff": float("nan"), "risk_group": ""})
        if score_segmentation and record.label:
            reference = image_io.read_mask(record.label)
            predicted = prediction.label_image
            if not preprocessing.same_grid(predicted, reference):
                predicted = sitk.Resample(predicted, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                          predicted.GetPixelID())
            row.update(case_scores(sitk.GetArrayViewFromImage(predicted), sitk.GetArrayViewFromImage(reference),
                                   reference.GetSpacing()))
        rows.append(row)
        log("  {} {}/{} {}: p={:.3f}{}".format(cohort, index + 1, len(records), record.case_id,
                                                row["probability"], "  liver Dice {:.3f} tumor Dice {:.3f}".format(
                                                    row["liver_dice"], row["tumor_dice"]) if "liver_dice" in row else ""))
    return rows


def _fold_finished(fold_dir):
    return (fold_dir / "run.json").is_file() and (fold_dir / "final.safetensors").is_file()


def _train_fold(fold_data, fold_dir, config, device, cache_dir, log):
    if _fold_finished(fold_dir):
        log("  training already finished: {}".format(fold_dir))
        return
    resume = (fold_dir / "checkpoint").is_dir()
    if fold_dir.exists() and not resume:
        # started but stopped before its first checkpoint: nothing worth keeping
        shutil.rmtree(str(fold_dir))
    train(fold_data, fold_dir, config, resume=resume, device=device, cache_dir=cache_dir, log=log)


def _package(folder):
    return model_package.load_package(folder)


def run_network_model(model, records, folds, fold_data, run_dir, config, device, log, external_records=None):
    """Train one network variant on every fold, predict the held-out cases, and the external cohort."""
    model_dir = Path(run_dir) / model
    model_dir.mkdir(parents=True, exist_ok=True)
    config = dict(config, task=model)
    by_id = {r.case_id: r for r in records}
    oof = []
    for k, test_ids in enumerate(folds):
        fold_dir = model_dir / "fold{}".format(k)
        log("{} fold {}/{}: train on {} cases, hold out {}".format(model, k + 1, len(folds),
                                                                 len(records) - len(test_ids), len(test_ids)))
        _train_fold(fold_data[k], fold_dir, config, device, Path(run_dir) / "cache", log)
        package_dir = fold_dir / "package"
        if not (package_dir / model_package.CARD_NAME).is_file():
            export_run(fold_dir, package_dir, name="{}-fold{}".format(model, k), intended_use=INTENDED_USE,
                       reproduce="tace-response-train cv (fold {})".format(k),
                       training_data={"description": "cross-validation fold {} of {}".format(k, len(folds)),
                                      "task": model, "held_out_cases": list(test_ids)})
        predictions = fold_dir / "predictions.csv"
        if not predictions.is_file():
            rows = predict_cases(_package(package_dir), [by_id[i] for i in test_ids], "internal", device, log,
                                 fold=k, score_segmentation=model != "classification",
                                 score_response=model != "segmentation")
            _write_csv(predictions, rows)
        oof += read_csv(predictions)
    oof.sort(key=lambda row: row["case_id"])
    _write_csv(model_dir / "oof_predictions.csv", oof)
    files = {"internal": str(Path(model) / "oof_predictions.csv")}
    if external_records:
        out = model_dir / "external_predictions.csv"
        if not out.is_file():
            package = _ensemble_package(model_dir, len(folds))
            log("{}: external cohort, {} cases, fold ensemble of {}".format(model, len(external_records), len(folds)))
            rows = predict_cases(package, external_records, "external", device, log,
                                 score_segmentation=model != "classification", score_response=model != "segmentation")
            _write_csv(out, rows)
        files["external"] = str(Path(model) / "external_predictions.csv")
    return files


def _ensemble_package(model_dir, n_folds):
    """The fold models as one package (weights_fold<k>); the Predictor averages their probabilities. Its
    cutoff is the mean of the folds' cutoffs, each chosen by Youden on that fold's training cases."""
    from safetensors.torch import load_file

    folder = model_dir / "external" / "package"
    if (folder / model_package.CARD_NAME).is_file():
        return _package(folder)
    runs = [_read_json(model_dir / "fold{}".format(k) / "run.json") for k in range(n_folds)]
    cutoff = float(np.mean([run["cutoff"] for run in runs]))
    run = dict(runs[0], cutoff=cutoff, metrics={"folds": [r.get("metrics", {}) for r in runs]},
               cutoff_method="mean of the {} fold models' cutoffs (each the Youden index on its fold's training "
                             "cases)".format(n_folds))
    card = full_card(run["config"], run, "{}-cv-ensemble".format(model_dir.name), "0.1.0", INTENDED_USE,
                     {"description": "fold models of a cross-validation", "folds": n_folds,
                      "task": run["config"].get("task", "multitask")}, "Apache-2.0",
                     "tace-response-train cv")
    folder.parent.mkdir(parents=True, exist_ok=True)
    states = [load_file(str(model_dir / "fold{}".format(k) / "final.safetensors")) for k in range(n_folds)]
    return model_package.write_package(folder, card, states)


# ---------------------------------------------------------------- clinical and combined logistic models

def _logit(p):
    p = min(max(float(p), 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def _youden(labels, scores):
    if len(set(labels)) < 2:
        return 0.5
    return metrics.youden_cutoff(labels, scores)[0]


def run_logistic_model(name, variables, records, folds, run_dir, log, external_records=None, network=None):
    """Fit the logistic model within each fold (training cases with a known response), predict the fold's
    held-out cases and, averaged over the fold models, the external cases. ``network`` names a network
    variant whose out-of-fold score (logit) joins the variables: the combined model."""
    out_dir = Path(run_dir) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    source = str(Path(splits_dataset(run_dir)) / "dataset.csv")
    score_name = None
    internal_rows = {r.case_id: dict(r.row) for r in records}
    external_rows = {r.case_id: dict(r.row) for r in external_records or []}
    external_fold_scores = {}
    if network:
        score_name = "{}_score_logit".format(network)
        for row in read_csv(Path(run_dir) / network / "oof_predictions.csv"):
            internal_rows[row["case_id"]][score_name] = _logit(as_float(row["probability"]))
        if external_records:
            for row in read_csv(Path(run_dir) / network / "external_predictions.csv"):
                external_fold_scores[row["case_id"]] = [_logit(float(p)) for p in row["fold_probabilities"].split(";")] \
                    if row.get("fold_probabilities") else [_logit(as_float(row["probability"]))] * len(folds)
    all_variables = list(variables) + ([score_name] if score_name else [])
    response = {r.case_id: r.response for r in records}
    oof, fits, external_probabilities, cutoffs = [], [], [], []
    for k, test_ids in enumerate(folds):
        held_out = set(test_ids)
        train_ids = [r.case_id for r in records if r.case_id not in held_out and r.response is not None]
        model = LogisticModel(all_variables, source).fit([internal_rows[i] for i in train_ids],
                                                         [response[i] for i in train_ids])
        cutoff = _youden([response[i] for i in train_ids], model.predict([internal_rows[i] for i in train_ids]))
        cutoffs.append(cutoff)
        fits.append(dict(model.describe(), fold=k, cutoff=cutoff, training_cases=len(train_ids)))
        probabilities = model.predict([internal_rows[i] for i in test_ids])
        for case_id, p in zip(test_ids, probabilities):
            oof.append(_prediction_row(internal_rows[case_id], case_id, "internal", k, response[case_id], p, cutoff))
        if external_records:
            rows = []
            for record in external_records:
                row = dict(external_rows[record.case_id])
                if score_name:
                    row[score_name] = external_fold_scores[record.case_id][k]
                rows.append(row)
            external_probabilities.append(model.predict(rows))
    oof.sort(key=lambda row: row["case_id"])
    _write_csv(out_dir / "oof_predictions.csv", oof)
    files = {"internal": str(Path(name) / "oof_predictions.csv")}
    if external_records:
        mean_cutoff = float(np.mean(cutoffs))
        mean_p = np.mean(external_probabilities, axis=0)
        rows = [_prediction_row(external_rows[r.case_id], r.case_id, "external", None, r.response, p, mean_cutoff)
                for r, p in zip(external_records, mean_p)]
        _write_csv(out_dir / "external_predictions.csv", rows)
        files["external"] = str(Path(name) / "external_predictions.csv")
    # the odds-ratio table of the paper: the same model fitted once on every internal case with a response
    known = [r.case_id for r in records if r.response is not None]
    full = LogisticModel(all_variables, source).fit([internal_rows[i] for i in known], [response[i] for i in known])
    _write_json(out_dir / "model.json", {"variables": all_variables, "network_score": score_name,
                                         "all_internal_cases": dict(full.describe(), cases=len(known)),
                                         "folds": fits})
    log("{}: fitted in {} folds ({})".format(name, len(folds), ", ".join(sorted({f["method"] for f in fits}))))
    return files


def _prediction_row(source_row, case_id, cohort, fold, response, probability, cutoff):
    row = {"case_id": case_id, "cohort": cohort, "fold": fold, "response": response,
           "probability": float(probability), "cutoff": float(cutoff),
           "risk_group": "low" if probability >= cutoff else "high"}
    row.update({c: source_row.get(c, "") for c in OUTCOME_COLUMNS})
    return row


def splits_dataset(run_dir):
    return _read_json(Path(run_dir) / "splits.json")["dataset"]


# ---------------------------------------------------------------- the whole cross-validation

def _check_run_dir(run_dir, settings):
    """A RUNDIR is reused only for the same dataset, folds and training configuration (so finished folds
    can be skipped); models, the external cohort and clinical variables may change between calls."""
    path = Path(run_dir) / "cv.json"
    if not path.is_file():
        return {}
    saved = _read_json(path)
    for key in ("dataset", "folds", "config"):
        if saved.get(key) != settings[key]:
            raise InputError(path, "RUNDIR was started with another {}; use a new RUNDIR".format(key))
    if saved.get("external") and settings["external"] and saved["external"] != settings["external"]:
        # its predictions would be reused for the wrong cases
        raise InputError(path, "RUNDIR was started with the external cohort {}; use a new RUNDIR".format(
            saved["external"]))
    return saved


def cross_validate(dataset_dir, run_dir, config, folds, models=("multitask",), external=None,
                   clinical_variables=None, device="auto", log=print):
    """Run (or continue) the cross-validation; returns the cv.json document."""
    if int(folds) < 2:
        raise InputError(None, "--folds must be at least 2")
    unknown = [m for m in models if m not in NETWORK_MODELS]
    if unknown or not models:
        raise InputError(None, "--models takes a comma-separated list of {}".format(", ".join(NETWORK_MODELS)))
    run_dir = Path(run_dir)
    dataset_dir = Path(dataset_dir)
    records = read_dataset(dataset_dir, config["phases"])
    if len(records) < 2 * int(folds):
        raise InputError(dataset_dir / "dataset.csv", "{} cases are too few for {} folds".format(len(records), folds))
    if len({r.case_id for r in records}) != len(records):
        raise InputError(dataset_dir / "dataset.csv", "case_id values must be unique (folds are per patient)")
    if clinical_variables is None:  # default: the synthetic cohort's clinical columns that this dataset has
        columns = set(records[0].row)
        clinical_variables = [v for v in DEFAULT_VARIABLES if v.replace("log(", "").rstrip(")") in columns]
    settings = {"dataset": str(dataset_dir.resolve()), "folds": int(folds),
                "config": json.loads(json.dumps(config)),  # as cv.json stores it, to compare with a saved one
                "external": str(Path(external).resolve()) if external else None}
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = _check_run_dir(run_dir, settings)
    if not external and saved.get("external"):  # a RUNDIR keeps its external cohort
        external = settings["external"] = saved["external"]
    # case ids may repeat across cohorts (the synthetic generator numbers each cohort from 0): rows carry
    # their cohort
    external_records = read_dataset(external, config["phases"]) if external else None

    splits = make_splits(records, dataset_dir, run_dir, int(folds), config["seed"])
    test_folds = splits["test_cases"]
    fold_data = [_fold_dataset(run_dir, dataset_dir, records, {r.case_id for r in records} - set(test), k)
                 for k, test in enumerate(test_folds)]
    entries = dict(saved.get("models", {}))
    document = dict(settings, clinical_variables=list(clinical_variables), models=entries,
                    cohorts=["internal"] + (["external"] if external else []))
    _write_json(run_dir / "cv.json", document)  # before training: an interrupted run is recognised

    for model in models:
        files = run_network_model(model, records, test_folds, fold_data, run_dir, config, device, log,
                                  external_records)
        entries[model] = {"kind": "network", "task": model, "predictions": files}
        _write_json(run_dir / "cv.json", document)
    # every fold's training cases need both classes: at least two of each in the cohort
    class_counts = [sum(r.response == c for r in records) for c in (0, 1)]
    if clinical_variables and min(class_counts) >= 2:
        entries["clinical"] = {"kind": "logistic", "variables": list(clinical_variables), "predictions":
                               run_logistic_model("clinical", clinical_variables, records, test_folds, run_dir, log,
                                                  external_records)}
        # the network whose out-of-fold scores join the clinical variables: it needs every cohort's predictions
        network = next((m for m in ("multitask", "classification") if m in entries
                        and set(document["cohorts"]) <= set(entries[m]["predictions"])), None)
        if network:
            entries["combined"] = {"kind": "logistic", "variables": list(clinical_variables), "network": network,
                                   "predictions": run_logistic_model("combined", clinical_variables, records,
                                                                     test_folds, run_dir, log, external_records,
                                                                     network=network)}
    elif clinical_variables:
        log("clinical model skipped: the cohort needs at least two responders and two non-responders")
    _write_json(run_dir / "cv.json", document)
    return document

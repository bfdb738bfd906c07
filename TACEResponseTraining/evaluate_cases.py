"""`test MODEL DATASET -o OUT`: run the shipped Predictor on every case of a dataset and score it.

Scores are computed on each case's own image grid (what a user gets), not on the model grid.
"""

import csv
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from TACEResponseLib import image_io, model_package
from TACEResponseLib.errors import InputError
from TACEResponseLib.predictor import Predictor

from . import metrics
from .dataset import read_dataset


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows])) if rows else None


def test_model(model, dataset_dir, out_dir, device="cpu", case_ids=None, log=print, coarse_to_fine=True):
    package = model_package.resolve(model)
    records = read_dataset(dataset_dir, package.card["inputs"]["phases"])
    if case_ids:
        wanted = set(case_ids)
        records = [r for r in records if r.case_id in wanted]
    if not records:
        raise InputError(dataset_dir, "no cases to test")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(out_dir, "exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(package, device=device, coarse_to_fine=coarse_to_fine)
    rows = []
    for index, record in enumerate(records):
        started = time.perf_counter()
        images = [image_io.read_image(p)[0] for p in record.images]
        prediction = predictor.predict(images, record.images)
        predicted = sitk.GetArrayViewFromImage(prediction.label_image)
        row = {"case_id": record.case_id, "response": record.response,
               "probability": prediction.response_probability}
        if record.label:
            truth_image = image_io.read_mask(record.label)
            truth = sitk.GetArrayFromImage(truth_image)
            voxel_ml = float(np.prod(truth_image.GetSpacing())) / 1000.0
            row["liver_dice"] = metrics.dice(predicted >= 1, truth >= 1)
            row["has_tumor"] = bool((truth == 2).any())
            row["tumor_dice"] = metrics.dice(predicted == 2, truth == 2)
            row["true_tumor_ml"] = round(float((truth == 2).sum()) * voxel_ml, 2)
            row["extrahepatic_tumor_ml"] = round(metrics.extrahepatic_ml(predicted == 2, truth >= 1,
                                                                         truth_image.GetSpacing()), 2)
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        log("{}/{} {}: liver Dice {:.3f} tumor Dice {:.3f} p={:.2f} ({:.1f}s)".format(
            index + 1, len(records), record.case_id, row.get("liver_dice", float("nan")),
            row.get("tumor_dice", float("nan")), row["probability"], row["seconds"]))
    known = [r for r in rows if r["response"] is not None]
    tumor_rows = [r for r in rows if r.get("has_tumor")]
    large = [r for r in tumor_rows if r["true_tumor_ml"] >= metrics.SMALL_TUMOR_ML]
    small = [r for r in tumor_rows if r["true_tumor_ml"] < metrics.SMALL_TUMOR_ML]
    scored = [r for r in rows if "liver_dice" in r]
    summary = {
        "model": {"name": package.name, "version": package.version, "sha256": package.sha256},
        "dataset": Path(dataset_dir).name,
        "cases": len(rows),
        "liver_dice_mean": _mean(scored, "liver_dice"),
        "liver_dice_min": min(r["liver_dice"] for r in scored) if scored else None,
        "tumor_dice_mean": _mean(tumor_rows, "tumor_dice"),
        "tumor_dice_cases": len(tumor_rows),
        # by the size of the case's true tumor (metrics.SMALL_TUMOR_ML)
        "tumor_dice_mean_10ml_or_more": _mean(large, "tumor_dice"),
        "tumor_dice_cases_10ml_or_more": len(large),
        "tumor_dice_mean_under_10ml": _mean(small, "tumor_dice"),
        "tumor_dice_cases_under_10ml": len(small),
        # predicted tumor farther than metrics.EXTRAHEPATIC_MARGIN_MM from the true liver
        "extrahepatic_tumor_ml_mean": _mean(scored, "extrahepatic_tumor_ml"),
        "extrahepatic_tumor_ml_max": max(r["extrahepatic_tumor_ml"] for r in scored) if scored else None,
        "auc": metrics.roc_auc([r["response"] for r in known], [r["probability"] for r in known]),
        "auc_cases": len(known),
        "coarse_to_fine": predictor.localizer is not None,
        "seconds_per_case_median": float(np.median([r["seconds"] for r in rows])),
    }
    cohort_file = Path(dataset_dir) / "cohort.json"
    if cohort_file.is_file():
        with open(str(cohort_file), encoding="utf-8") as stream:
            truth = json.load(stream).get("true_probability", {})
        if truth and known:
            summary["bayes_auc"] = metrics.roc_auc([r["response"] for r in known],
                                                   [truth[r["case_id"]] for r in known])
    with open(str(out_dir / "metrics.json"), "w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=2)
    with open(str(out_dir / "per_case.csv"), "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return summary

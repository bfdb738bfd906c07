"""A synthetic cohort on disk: images, labels, context maps, dataset.csv and cohort.json."""

from __future__ import annotations

import csv
import json
import math
import os
from multiprocessing import get_context

import numpy as np
import SimpleITK as sitk

from . import outcome as rm
from ..metrics import roc_auc
from .case import _normalize_phases, generate_case
from .tissues import CONTEXT_NAMES


GENERATOR_NAME = "tace_response_synth"
GENERATOR_VERSION = "2.2.0"
CLINICAL_COLUMNS = ("age", "sex", "afp", "bclc", "child_pugh", "tumor_count", "max_diameter_mm")


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of case `index`: child `index` of SeedSequence(seed), so a
    case depends only on (seed, index), not on n_cases or workers."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def _init_worker():
    # Pool processes already use all cores; keep ITK single-threaded.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _cohort_case(task):
    seed, i, out_dir, phases, size_scale = task
    case_id = f"synth_{i:04d}"
    res = generate_case(case_rng(seed, i), case_id, phases, size_scale)
    row = {"case_id": case_id}
    for ph in phases:
        rel = f"images/{case_id}_{ph}.nii.gz"
        sitk.WriteImage(res.images[ph], os.path.join(out_dir, rel), True, 1)
        row[f"image_{ph}"] = rel
    rel = f"labels/{case_id}.nii.gz"
    sitk.WriteImage(res.label, os.path.join(out_dir, rel), True, 1)
    row["label"] = rel
    rel = f"context/{case_id}.nii.gz"
    sitk.WriteImage(res.context, os.path.join(out_dir, rel), True, 1)
    row["context_label"] = rel
    row["response"] = "" if res.response is None else int(res.response)
    row.update(os_time=res.os_time, os_event=res.os_event, ttp_time=res.ttp_time, ttp_event=res.ttp_event)
    for c in CLINICAL_COLUMNS:
        row[c] = res.clinical[c]
    p = res.response_probability
    info = {
        "true_probability": None if math.isnan(p) else p,
        "response": res.response,
        "features": res.features,
        "lesions": res.lesions,
        "meta": res.meta,
    }
    return row, info


def _auc_or_none(labels, scores):
    """AUC of the true probabilities, None (JSON null) when one class is absent."""
    auc = roc_auc(labels, scores)
    return None if auc != auc else auc


def generate_cohort(out_dir, n_cases, seed=0, phases=("portal_venous",), workers=1, size_scale=1.0, progress=None) -> dict:
    """Write a synthetic cohort to out_dir and return the cohort.json dict.

    Files: images/<case_id>_<phase>.nii.gz (int16 HU), labels/<case_id>.nii.gz
    (uint8), dataset.csv, cohort.json.  Refuses a non-empty out_dir.
    """
    phases = _normalize_phases(phases)
    n_cases = int(n_cases)
    if n_cases < 1:
        raise ValueError("n_cases must be >= 1")
    if int(seed) < 0:
        raise ValueError("seed must be a non-negative integer")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise ValueError(f"output path {out_dir!r} exists and is not a directory")
        if os.listdir(out_dir):
            raise ValueError(f"output directory {out_dir!r} is not empty; refusing to overwrite existing data")
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "labels"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "context"), exist_ok=True)
    tasks = [(int(seed), i, out_dir, phases, float(size_scale)) for i in range(n_cases)]
    results = []
    workers = max(1, min(int(workers), n_cases))
    if workers == 1:
        for t in tasks:
            results.append(_cohort_case(t))
            if progress:
                progress(len(results), n_cases)
    else:
        with get_context().Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap(_cohort_case, tasks):
                results.append(r)
                if progress:
                    progress(len(results), n_cases)

    columns = ["case_id"] + [f"image_{ph}" for ph in phases] + ["label", "context_label", "response", "os_time", "os_event", "ttp_time", "ttp_event"]
    columns += list(CLINICAL_COLUMNS)
    with open(os.path.join(out_dir, "dataset.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row, _ in results:
            w.writerow(row)

    probs = {row["case_id"]: info["true_probability"] for row, info in results}
    known = [(info["response"], info["true_probability"]) for _, info in results if info["response"] is not None]
    y = [k[0] for k in known]
    p = [k[1] for k in known]
    cohort = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "n_cases": n_cases,
        "phases": list(phases),
        "size_scale": float(size_scale),
        "label_values": {"0": "background", "1": "liver (incl. vessels)", "2": "tumour"},
        "context_values": {str(k + 1): name for k, name in enumerate(CONTEXT_NAMES)},
        "response_model": rm.describe(),
        "formula": rm.FORMULA,
        "coefficients": dict(rm.COEFFICIENTS),
        "n_with_response": len(y),
        "responder_rate": (float(np.mean(y)) if y else None),
        "bayes_auc": _auc_or_none(y, p),
        "os_event_rate": float(np.mean([row["os_event"] for row, _ in results])),
        "true_probability": probs,
        "cases": {row["case_id"]: info for row, info in results},
    }
    with open(os.path.join(out_dir, "cohort.json"), "w") as fh:
        json.dump(cohort, fh, indent=1, default=_json_default)
    return json.loads(json.dumps(cohort, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")

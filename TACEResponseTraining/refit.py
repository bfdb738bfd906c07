"""`refit RUNDIR DATASET -o NEWRUNDIR [--localizer RUNDIR] [--tile-size N] [--intensity-bins N]
[--head-hidden N]`: refit the response pathway on whole-case statistics computed by the shipped Predictor.

Training refits the response pathway on statistics of a whole-volume pass. A package with a localiser
runs the main network on the liver region only, and instance normalisation makes the features depend
on that context; so once the localiser is known, the statistics are recomputed exactly as prediction
computes them (same localiser, region, tiles) for the run's own training and validation cases, the pathway
is refitted on them and the risk cutoff is chosen again (Youden index on the training cases). The result
is a new run folder, exported like any other.

``--intensity-bins`` gives a trained run the lesion-to-liver intensity contrasts (or changes their bins) and
``--head-hidden 0`` makes its response pathway logistic: the encoder and decoders keep their weights and
the response pathway is fitted anew.
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from TACEResponseLib import image_io
from TACEResponseLib.errors import InputError
from TACEResponseLib.model_package import build_network
from TACEResponseLib.network import is_response_pathway_key
from TACEResponseLib.predictor import Predictor

from . import metrics
from .dataset import read_dataset
from .export import export_run, read_run
from .model_card import network_card
from .train import refit_head


def _statistics(predictor, records, case_ids, dataset_dir, log):
    sums, responses = [], []
    for index, case_id in enumerate(case_ids):
        record = records.get(case_id)
        if record is None:
            raise InputError(dataset_dir, "has no case {} that the run trained on".format(case_id))
        if record.response is None:
            continue
        images = [image_io.read_image(path)[0] for path in record.images]
        sums.append(predictor.response_statistics(images, record.images)[0])
        responses.append(int(record.response))
        log("statistics {}/{} {}".format(index + 1, len(case_ids), case_id))
    return (torch.cat(sums) if sums else torch.zeros(0)), responses


def _with_new_response_pathway(run, state, changes, target_dir):
    """A copy of the run whose response pathway has the configuration ``changes`` (intensity_bins,
    head_hidden): every other weight is kept, the pathway starts from the seeded initialisation. Returns the
    copy's folder."""
    run = dict(run, config=dict(run["config"], **changes))
    torch.manual_seed(int(run["config"]["seed"]))
    model = build_network(network_card(run["config"]))
    kept = {key: value for key, value in state.items() if not is_response_pathway_key(key)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or not all(is_response_pathway_key(key) for key in missing):
        raise InputError(target_dir, "the run's weights do not match its configuration")
    target_dir.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(target_dir / "final.safetensors"))
    with open(str(target_dir / "run.json"), "w", encoding="utf-8") as stream:
        json.dump(run, stream, indent=1)
    return target_dir


def refit_run(run_dir, dataset_dir, out_dir, localizer_dir=None, tile_size=None, device="cpu", log=print,
              intensity_bins=None, head_hidden=None):
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(out_dir, "exists and is not empty; choose a new folder")
    run, state = read_run(run_dir)
    # settings absent from older runs' configurations: what those runs were trained with
    current = {"intensity_bins": int(run["config"].get("intensity_bins", 0)),
               "head_hidden": int(run["config"].get("head_hidden", 32))}
    wanted = {"intensity_bins": intensity_bins, "head_hidden": head_hidden}
    changes = {key: int(value) for key, value in wanted.items() if value is not None and int(value) != current[key]}
    new_pathway = bool(changes)
    with tempfile.TemporaryDirectory() as tmp:
        if new_pathway:
            run_dir = _with_new_response_pathway(run, state, changes, Path(tmp) / "run")
            run, _ = read_run(run_dir)
        package = export_run(run_dir, Path(tmp) / "package", localizer_dir=localizer_dir, tile_size=tile_size)
        predictor = Predictor(package, device=device)
        records = {r.case_id: r for r in read_dataset(dataset_dir, package.card["inputs"]["phases"])}
        train_sums, train_y = _statistics(predictor, records, run["train_cases"], dataset_dir, log)
        val_sums, val_y = _statistics(predictor, records, run["validation_cases"], dataset_dir, log)
    if len(set(train_y)) < 2:
        raise InputError(dataset_dir, "the run's training cases need both responders and non-responders")
    model = predictor.networks[0].to("cpu")
    refit = refit_head(model, train_sums, train_y, val_sums, val_y, run["config"], int(run["config"]["seed"]),
                       keep_better_current=not new_pathway)
    with torch.no_grad():
        train_p = torch.sigmoid(model.response_logit(train_sums)).numpy()
        val_p = torch.sigmoid(model.response_logit(val_sums)).numpy() if len(val_y) else np.zeros(0)
    cutoff, youden_j = metrics.youden_cutoff(train_y, train_p)
    refit.update(statistics="through the Predictor (localiser {}, inference tiles {})".format(
        "yes" if localizer_dir else "no", package.card["inference"]["tile_size"]),
        intensity_bins=int(run["config"].get("intensity_bins", 0)),
        head_hidden=int(run["config"].get("head_hidden", 32)), new_response_pathway=new_pathway,
        train_auc=metrics.roc_auc(train_y, train_p),
        validation_auc=metrics.roc_auc(val_y, val_p) if len(set(val_y)) == 2 else None)
    run.update(cutoff=float(cutoff), head_refit=refit,
               cutoff_method="Youden index on the {} training cases' predicted probabilities (J = {:.3f}), "
                             "refitted through the Predictor".format(len(train_y), youden_j))
    run.setdefault("metrics", {})["validation_refit"] = {"auc": refit["validation_auc"], "cases": len(val_y)}
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=str(out_dir.parent.resolve())))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(staging / "final.safetensors"))
        with open(str(staging / "run.json"), "w", encoding="utf-8") as stream:
            json.dump(run, stream, indent=1)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    finally:
        shutil.rmtree(str(staging), ignore_errors=True)
    log("refit: validation AUC {} -> {}; cutoff {:.3f}".format(refit.get("val_auc_before"),
                                                                refit["validation_auc"], cutoff))
    return run

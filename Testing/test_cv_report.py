"""Cross-validation and its report at tiny scale: synth -> cv (three network variants, clinical, combined,
external cohort) -> evaluate; and the classification-only network's global pooling."""

import csv
import json
import time

import numpy as np
import pytest
import torch

from TACEResponseLib import inference
from TACEResponseLib.errors import InputError
from TACEResponseLib.model_package import build_network
from TACEResponseLib.network import GLOBAL_POOLING_KEY, MultiDL
from TACEResponseTraining import cli
from TACEResponseTraining.clinical_model import LogisticModel
from TACEResponseTraining.config import load_config, task_loss_weights
from TACEResponseTraining.model_card import network_card
from TACEResponseTraining.phantoms import generate_cohort

# small enough for one thread: coarse model grid, a three-level network, one tile per case
TINY = {"spacing_mm": [8.0, 8.0, 8.0], "channels": [4, 8, 16], "head_hidden": 8, "patch_size": [32, 32, 32],
        "batch_size": 2, "steps_per_epoch": 2, "validation_cases_per_epoch": 1, "head_refit_epochs": 20,
        "tile_size": [128, 128, 128], "tile_margin": 8, "num_threads": 1}
MODELS = ("multitask", "classification", "segmentation")


def _rows(path):
    with open(str(path), newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    generate_cohort(root / "internal", 12, seed=3, size_scale=3.0)
    generate_cohort(root / "external", 4, seed=8, size_scale=3.0)  # seed 8: two responders, two not
    (root / "tiny.json").write_text(json.dumps(TINY))
    args = ["cv", str(root / "internal"), "-o", str(root / "run"), "--folds", "2", "--max-steps", "2",
            "--config", str(root / "tiny.json"), "--external", str(root / "external"),
            "--models", ",".join(MODELS), "--device", "cpu"]
    assert cli.main(args) == 0
    assert cli.main(["evaluate", str(root / "run"), "-o", str(root / "report"), "--bootstrap", "500"]) == 0
    return {"root": root, "run": root / "run", "report": root / "report", "args": args}


def test_splits_are_saved_patient_level_and_stratified(run):
    splits = json.loads((run["run"] / "splits.json").read_text())
    cases = {r["case_id"]: r["response"] for r in _rows(run["root"] / "internal" / "dataset.csv")}
    folds = splits["test_cases"]
    assert sorted(i for f in folds for i in f) == sorted(cases)  # every case held out exactly once
    for stratum in ("1", "0", ""):
        counts = [sum(cases[i] == stratum for i in f) for f in folds]
        assert max(counts) - min(counts) <= 1, stratum
    for k, fold in enumerate(folds):  # the fold's training set is everything else
        trained_on = {r["case_id"] for r in _rows(run["run"] / "folds" / "fold{}".format(k) / "dataset.csv")}
        assert trained_on == set(cases) - set(fold)
        run_json = json.loads((run["run"] / "multitask" / "fold{}".format(k) / "run.json").read_text())
        assert set(run_json["train_cases"] + run_json["validation_cases"]) == trained_on  # inner split


def test_out_of_fold_predictions_cover_every_case_once(run):
    splits = json.loads((run["run"] / "splits.json").read_text())
    fold_of = {i: k for k, f in enumerate(splits["test_cases"]) for i in f}
    for model in MODELS + ("clinical", "combined"):
        rows = _rows(run["run"] / model / "oof_predictions.csv")
        assert sorted(r["case_id"] for r in rows) == sorted(fold_of), model
        assert all(int(r["fold"]) == fold_of[r["case_id"]] for r in rows), model
        probabilities = [r["probability"] for r in rows]
        if model == "segmentation":  # its response output is not reported
            assert set(probabilities) == {""} and {r["risk_group"] for r in rows} == {""}
        else:
            assert all(0.0 <= float(p) <= 1.0 for p in probabilities)
            assert all(r["risk_group"] == ("low" if float(r["probability"]) >= float(r["cutoff"]) else "high")
                       for r in rows)
        if model in ("multitask", "segmentation"):
            assert all(r["liver_dice"] != "" and r["liver_hd95_mm"] != "" for r in rows)
        if model == "multitask":  # each held-out case against its own fold's training cutoff
            cutoffs = [json.loads((run["run"] / model / "fold{}".format(k) / "run.json").read_text())["cutoff"]
                       for k in range(2)]
            assert all(float(r["cutoff"]) == pytest.approx(cutoffs[int(r["fold"])]) for r in rows)


def test_task_variants_train_as_documented(run):
    from safetensors.torch import load_file

    for model in MODELS:
        config = json.loads((run["run"] / model / "fold0" / "config.json").read_text())
        assert config["task"] == model
    assert GLOBAL_POOLING_KEY in load_file(str(run["run"] / "classification" / "fold0" / "final.safetensors"))
    assert GLOBAL_POOLING_KEY not in load_file(str(run["run"] / "multitask" / "fold0" / "final.safetensors"))
    segmentation_run = json.loads((run["run"] / "segmentation" / "fold0" / "run.json").read_text())
    assert segmentation_run["head_refit"] == {"kept": False}


def test_external_cohort_averages_the_fold_models(run):
    for model in ("multitask", "classification"):
        rows = _rows(run["run"] / model / "external_predictions.csv")
        assert len(rows) == 4
        cutoffs = [json.loads((run["run"] / model / "fold{}".format(k) / "run.json").read_text())["cutoff"]
                   for k in range(2)]
        for row in rows:
            folds = [float(p) for p in row["fold_probabilities"].split(";")]
            assert len(folds) == 2
            assert float(row["probability"]) == pytest.approx(np.mean(folds), abs=1e-6)
            assert float(row["cutoff"]) == pytest.approx(np.mean(cutoffs))
    clinical = json.loads((run["run"] / "clinical" / "model.json").read_text())
    external = _rows(run["run"] / "clinical" / "external_predictions.csv")
    assert float(external[0]["cutoff"]) == pytest.approx(np.mean([f["cutoff"] for f in clinical["folds"]]))


def test_clinical_model_is_fitted_within_each_fold(run):
    """Refitting fold 0's clinical model on fold 0's training cases reproduces its held-out predictions."""
    splits = json.loads((run["run"] / "splits.json").read_text())
    dataset = {r["case_id"]: r for r in _rows(run["root"] / "internal" / "dataset.csv")}
    held_out = set(splits["test_cases"][0])
    train_ids = [i for i in sorted(dataset) if i not in held_out and dataset[i]["response"] != ""]
    document = json.loads((run["run"] / "clinical" / "model.json").read_text())
    assert document["folds"][0]["training_cases"] == len(train_ids)
    model = LogisticModel(document["variables"]).fit([dataset[i] for i in train_ids],
                                                     [int(dataset[i]["response"]) for i in train_ids])
    oof = {r["case_id"]: float(r["probability"]) for r in _rows(run["run"] / "clinical" / "oof_predictions.csv")}
    test_ids = sorted(held_out)
    np.testing.assert_allclose(model.predict([dataset[i] for i in test_ids]), [oof[i] for i in test_ids], rtol=1e-9)
    combined = json.loads((run["run"] / "combined" / "model.json").read_text())
    assert combined["network_score"] == "multitask_score_logit"
    assert combined["variables"][-1] == "multitask_score_logit"


def test_rerun_skips_finished_folds(run):
    weights = run["run"] / "multitask" / "fold1" / "final.safetensors"
    before = weights.stat().st_mtime_ns, (run["run"] / "multitask" / "oof_predictions.csv").read_text()
    started = time.perf_counter()
    assert cli.main(run["args"]) == 0
    assert time.perf_counter() - started < 20  # nothing retrained, nothing re-predicted
    assert (weights.stat().st_mtime_ns, (run["run"] / "multitask" / "oof_predictions.csv").read_text()) == before


def test_report_auc_matches_scikit_learn(run):
    from sklearn.metrics import roc_auc_score

    report = json.loads((run["report"] / "report.json").read_text())
    rows = _rows(run["report"] / "predictions.csv")
    assert set(rows[0]) >= {"case_id", "response", "probability", "risk_group", "os_time", "os_event"}
    checked = 0
    for model in ("multitask", "classification", "clinical", "combined"):
        for cohort in ("internal", "external"):
            known = [r for r in rows if r["model"] == model and r["cohort"] == cohort and r["response"] != ""]
            expected = roc_auc_score([int(r["response"]) for r in known], [float(r["probability"]) for r in known])
            assert report["auc"][model][cohort] == pytest.approx(expected, abs=1e-12)
            lo, hi = report["auc_ci"][model][cohort]
            assert lo <= report["auc"][model][cohort] <= hi
            checked += 1
    assert checked == 8
    assert "segmentation" not in report["auc"]


def test_report_logrank_matches_lifelines(run):
    from lifelines.statistics import logrank_test

    report = json.loads((run["report"] / "report.json").read_text())
    rows = _rows(run["report"] / "predictions.csv")
    for model in ("multitask", "clinical"):
        mine = [r for r in rows if r["model"] == model and r["cohort"] == "internal"]
        low = [r for r in mine if r["risk_group"] == "low"]
        high = [r for r in mine if r["risk_group"] == "high"]
        if not low or not high:
            assert report["logrank_p"][model]["internal"] is None
            continue
        expected = logrank_test([float(r["os_time"]) for r in low], [float(r["os_time"]) for r in high],
                                event_observed_A=[int(r["os_event"]) for r in low],
                                event_observed_B=[int(r["os_event"]) for r in high]).p_value
        assert report["logrank_p"][model]["internal"] == pytest.approx(expected, rel=1e-9)


def test_report_files_and_table(run):
    report_dir = run["report"]
    for name in ("roc.png", "calibration.png", "km.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (report_dir / "report.md").read_text()
    assert "| Model | Internal validation (out-of-fold): AUC (95% CI) | Accuracy | Sensitivity | Specificity |" in text
    for name in ("Multi-task network", "Classification-only network", "Clinical model", "Combined model",
                 "DeLong", "log-rank", "HD95"):
        assert name in text
    report = json.loads((report_dir / "report.json").read_text())
    pairs = {(d["model_a"], d["model_b"], d["cohort"]) for d in report["delong"]}
    assert ("multitask", "classification", "internal") in pairs
    assert all(d["p"] is None or 0.0 <= d["p"] <= 1.0 for d in report["delong"])
    segmentation = _rows(report_dir / "segmentation.csv")
    assert {r["model"] for r in segmentation} == {"multitask", "segmentation"}
    assert all(float(r["liver_hd95_mm"]) >= 0 for r in segmentation)


def test_cli_errors_are_one_line(run, tmp_path, capsys):
    assert cli.main(["cv", str(run["root"] / "internal"), "-o", str(tmp_path / "r"), "--folds", "1"]) == 2
    assert cli.main(["evaluate", str(tmp_path), "-o", str(tmp_path / "rep")]) == 2
    assert cli.main(["cv", str(run["root"] / "internal"), "-o", str(tmp_path / "r2"), "--folds", "2",
                     "--models", "multitask,radiomics"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    # the same RUNDIR with another configuration is refused, not mixed
    assert cli.main(run["args"][:4] + ["--folds", "2", "--max-steps", "3"] + run["args"][8:]) == 2
    assert "another config" in capsys.readouterr().err


def test_task_weights_and_config_validation():
    assert task_loss_weights(load_config()) == (1.0, 0.5)
    assert task_loss_weights(load_config(task="segmentation")) == (1.0, 0.0)
    assert task_loss_weights(load_config(task="classification")) == (0.0, 1.0)
    with pytest.raises(InputError, match="task must be one of"):
        load_config(task="regression")


def test_global_pooling_sums_are_additive_and_use_deep_features_only():
    torch.manual_seed(0)
    net = MultiDL(channels=(4, 8, 16)).use_global_pooling().eval()
    with torch.no_grad():
        _, features, deep = net.forward_maps(torch.randn(1, 1, 32, 32, 32))
        liver, tumor = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
        whole = net.pooled_sums(features, deep, liver, tumor)
        # the segmentation does not enter: other weights, same statistics
        torch.testing.assert_close(whole, net.pooled_sums(features, deep, tumor * 0, liver * 0))
        halves = sum(net.pooled_sums(features[..., s, :, :], deep[..., d, :, :], liver[..., s, :, :],
                                     tumor[..., s, :, :])
                     for s, d in ((slice(0, 16), slice(0, 4)), (slice(16, 32), slice(4, 8))))
        torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-3)
        assert float(whole[0, -1]) == deep[0, 0].numel()
        # the head sees the mean deep feature vector and zeros where the region statistics would be
        pooled = torch.cat([torch.zeros(1, 2 * 4), deep.mean(dim=(2, 3, 4)), torch.zeros(1, 3)], dim=1)
        torch.testing.assert_close(net.response_logit(whole), net.head(pooled).squeeze(1), rtol=1e-4, atol=1e-5)


def test_global_pooling_travels_with_the_weights():
    """A loader that builds the default network from a card (the Predictor) gets the global-pooling one back;
    the multi-task network's weights keep their layout."""
    card = network_card(load_config(channels=[4, 8, 16]))
    torch.manual_seed(0)
    default = build_network(card)
    assert GLOBAL_POOLING_KEY not in default.state_dict()
    classification = build_network(card).use_global_pooling()
    state = classification.state_dict()
    assert set(state) == set(default.state_dict()) | {GLOBAL_POOLING_KEY}
    loaded = build_network(card)
    loaded.load_state_dict(state, strict=True)
    assert loaded.pools_globally and not default.pools_globally
    volume = np.random.default_rng(0).normal(size=(1, 32, 32, 32)).astype(np.float32)
    a = inference.run_network(classification.eval(), volume, "cpu", (32, 32, 32), 8)[2]
    b = inference.run_network(loaded.eval(), volume, "cpu", (32, 32, 32), 8)[2]
    torch.testing.assert_close(a, b)

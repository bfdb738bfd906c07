"""A two-phase model (arterial + portal venous as two input channels) end to end through the command lines:
synth --phases -> train -> export -> predict ART PV, at tiny scale on the CPU."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from TACEResponseLib import cli as predict_cli
from TACEResponseTraining import cli as train_cli

PHASES = ["arterial", "portal_venous"]
CONFIG = {"phases": PHASES, "spacing_mm": [4.0, 4.0, 4.0], "channels": [4, 8, 16, 32], "head_hidden": 8,
          "patch_size": [32, 32, 32], "batch_size": 2, "steps_per_epoch": 1, "validation_cases_per_epoch": 1,
          "validation_fraction": 0.25, "head_refit_epochs": 20, "num_threads": 1, "tile_size": [64, 64, 64],
          "tile_margin": 8}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiphase")
    threads = torch.get_num_threads()
    try:
        assert train_cli.main(["synth", "-o", str(root / "synth"), "--cases", "4", "--seed", "5",
                               "--size-scale", "3", "--phases", ",".join(PHASES)]) == 0
        (root / "config.json").write_text(json.dumps(CONFIG))
        assert train_cli.main(["train", str(root / "synth"), "-o", str(root / "run"), "--config",
                               str(root / "config.json"), "--max-steps", "3", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)  # the config's num_threads must not leak into later tests
    assert train_cli.main(["export", str(root / "run"), "-o", str(root / "model"), "--name", "two-phase"]) == 0
    return root


def images(root, case="synth_0000"):
    return [str(root / "synth" / "images" / "{}_{}.nii.gz".format(case, phase)) for phase in PHASES]


def predict(inputs, out_dir, root, capfd):
    code = predict_cli.main(["predict", *inputs, "-o", str(out_dir), "--model", str(root / "model"),
                             "--device", "cpu", "--progress", "none"])
    out, err = capfd.readouterr()
    return code, out, err


def test_synth_writes_one_column_per_phase(model):
    header = (model / "synth" / "dataset.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["case_id", "image_arterial", "image_portal_venous", "label"]
    for path in images(model):
        assert sitk.ReadImage(path).GetSize() == sitk.ReadImage(images(model)[0]).GetSize()


def test_trained_model_takes_both_phases_as_channels(model):
    card = json.loads((model / "model" / "model.json").read_text())
    assert card["inputs"]["phases"] == PHASES
    stem = load_file(str(model / "model" / "weights.safetensors"))["stem.0.0.weight"]
    assert stem.shape[1] == 2  # (out channels, in channels = phases, 3, 3, 3)
    cached = next((model / "run" / "cache").rglob("synth_0000.npz"))
    with np.load(str(cached)) as data:
        assert data["image"].shape[0] == 2


def test_predict_with_two_inputs(model, tmp_path, capfd):
    arterial, portal = images(model)
    code, out, err = predict([arterial, portal], tmp_path / "out", model, capfd)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert 0.0 <= result["response_probability"] <= 1.0
    assert result["inputs"] == [arterial, portal] and result["model"]["name"] == "two-phase"
    assert not any("geometry differs" in w for w in result["warnings"])
    segmentation = sitk.ReadImage(str(tmp_path / "out" / "segmentation.nii.gz"))
    reference = sitk.ReadImage(arterial)  # the output takes the first input's geometry
    assert segmentation.GetSize() == reference.GetSize()
    np.testing.assert_allclose(segmentation.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(segmentation.GetSpacing(), reference.GetSpacing(), atol=1e-5)


def test_one_input_for_a_two_phase_model_is_refused(model, tmp_path, capfd):
    code, _, err = predict(images(model)[:1], tmp_path / "out", model, capfd)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "expects 2 input(s)" in err
    assert not (tmp_path / "out").exists()


def test_phase_on_another_grid_is_resampled_with_a_warning(model, tmp_path, capfd):
    """The predictor resamples every phase onto one grid: a portal-venous phase stored with a larger field of
    view (padded with air, so other size and origin) gives the prediction of the original, plus a warning."""
    arterial, portal = images(model)
    padded = sitk.ConstantPad(sitk.ReadImage(portal), [3, 2, 1], [1, 4, 2], -1024)
    padded_path = str(tmp_path / "portal_padded.nrrd")
    sitk.WriteImage(padded, padded_path)
    code, out, err = predict([arterial, portal], tmp_path / "same", model, capfd)
    assert code == 0, err
    code, out, err = predict([arterial, padded_path], tmp_path / "padded", model, capfd)
    assert code == 0, err
    same = json.loads((tmp_path / "same" / "result.json").read_text())
    moved = json.loads((tmp_path / "padded" / "result.json").read_text())
    assert any(padded_path in w and "geometry differs" in w and "resampled" in w for w in moved["warnings"])
    assert "warning: {}: geometry differs".format(padded_path) in out
    assert moved["response_probability"] == pytest.approx(same["response_probability"], abs=1e-3)
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "same" / "segmentation.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "padded" / "segmentation.nii.gz")))
    assert a.shape == b.shape and (a == b).mean() > 0.999


def test_phases_that_do_not_overlap_are_refused(model, tmp_path, capfd):
    arterial, portal = images(model)
    away = sitk.ReadImage(portal)
    away.SetOrigin([o + 2000.0 for o in away.GetOrigin()])
    away_path = str(tmp_path / "portal_elsewhere.nrrd")
    sitk.WriteImage(away, away_path)
    code, _, err = predict([arterial, away_path], tmp_path / "out", model, capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + away_path) and "does not overlap" in lines[0]
    assert not (tmp_path / "out").exists()

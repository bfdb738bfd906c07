"""Coarse-to-fine prediction (localiser + region of interest), localiser packages and fold ensembles."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import save_file

from conftest import REPO, phantom_ct
from TACEResponseLib import cli, preprocessing
from TACEResponseLib.errors import ModelError
from TACEResponseLib.model_package import build_network, load_package
from TACEResponseLib.predictor import Predictor
from TACEResponseTraining.config import load_config
from TACEResponseTraining.export import export_run
from TACEResponseTraining.model_card import network_card

SAMPLE = REPO / "TACEResponse" / "Resources" / "SampleData" / "synthetic_ct.nii.gz"
SAMPLE_LABELS = REPO / "TACEResponse" / "Resources" / "SampleData" / "synthetic_ct_label.nii.gz"


def test_cropped_grid_lies_on_the_whole_grid_lattice():
    grid = preprocessing.Grid((-100.0, -50.0, 10.0), (2.0, 2.0, 2.0), (100, 80, 60))
    sub = grid.cropped(np.array([-61.3, 0.2, 30.9]), np.array([20.0, 70.0, 500.0]))
    offset = (np.asarray(sub.origin) - np.asarray(grid.origin)) / np.asarray(grid.spacing)
    assert np.allclose(offset, np.round(offset))  # same voxel centres as the whole grid
    assert np.all(np.asarray(sub.origin) <= [-61.3, 0.2, 30.9])  # covers the box's low corner
    top = np.asarray(sub.origin) + (np.asarray(sub.size) - 1) * np.asarray(sub.spacing)
    assert np.all(top[:2] >= [20.0, 70.0])
    assert top[2] == pytest.approx(grid.origin[2] + (grid.size[2] - 1) * 2.0)  # clipped to the grid's extent


def _oblique_reference():
    image = sitk.Image([60, 50, 40], sitk.sitkInt16)
    image.SetSpacing((1.3, 1.1, 2.5))
    image.SetOrigin((40.0, -30.0, 12.0))
    rotation = sitk.VersorTransform((0.3, -0.2, 1.0), 0.4).GetMatrix()
    flip = np.diag([-1.0, 1.0, -1.0])
    image.SetDirection(tuple((np.array(rotation).reshape(3, 3) @ flip).ravel()))
    return image


def test_labels_from_a_region_equal_labels_from_the_whole_grid():
    """Writing back only the region the fine pass covered gives the same label map as writing back the whole
    grid whose probabilities are zero outside that region (oblique, flipped input). As in prediction, where
    the region has a margin around the organ, the region's own rim holds background."""
    reference = _oblique_reference()
    grid = preprocessing.canonical_grid(reference, (2.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    shape = grid.size[::-1]
    liver, tumor = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    region = (slice(5, 20), slice(8, 30), slice(10, 33))
    organ = tuple(slice(r.start + 2, r.stop - 2) for r in region)
    liver[organ] = rng.uniform(0.4, 1.0, liver[organ].shape)
    lesion = (slice(9, 14), slice(14, 22), slice(16, 26))
    tumor[lesion], liver[lesion] = rng.uniform(0.6, 0.9, tumor[lesion].shape), 0.05
    whole = preprocessing.probabilities_to_image(liver, tumor, grid, reference)
    low = np.asarray(grid.origin) + np.array([r.start for r in region[::-1]]) * 2.0
    high = np.asarray(grid.origin) + np.array([r.stop - 1 for r in region[::-1]]) * 2.0
    sub = grid.cropped(low, high)
    part = preprocessing.probabilities_to_image(liver[region], tumor[region], sub, reference)
    assert preprocessing.same_grid(part, reference)
    a, b = sitk.GetArrayFromImage(whole), sitk.GetArrayFromImage(part)
    assert (a > 0).sum() > 1000 and (a == 2).sum() > 100
    assert np.array_equal(a, b)


def _fake_run(folder, config, seed, cutoff):
    """A finished run folder as training writes it: run.json and final.safetensors (random weights)."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    network = build_network(network_card(config))
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(folder / "final.safetensors"))
    run = {"cutoff": cutoff, "config": config, "metrics": {"validation": {"liver_dice": 0.5}},
           "train_cases": ["a", "b"], "validation_cases": ["c"]}
    (folder / "run.json").write_text(json.dumps(run))
    return folder


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("c2f")
    config = load_config(channels=[4, 8, 16, 32])
    localizer_config = load_config(channels=[4, 8, 16], spacing_mm=[6.0, 6.0, 6.0], tile_margin=8)
    runs = [_fake_run(root / "fold{}".format(i), config, i, cutoff) for i, cutoff in enumerate((0.4, 0.6))]
    localizer = _fake_run(root / "localizer", localizer_config, 7, 0.5)
    ensemble = export_run(runs, root / "ensemble", name="ensemble", localizer_dir=localizer, roi_margin_mm=12.0,
                          tile_size=64)
    single = export_run(runs[0], root / "single", name="single")
    return root, ensemble, single


def test_ensemble_package_records_every_fold_and_the_localizer(packages):
    _, ensemble, single = packages
    card = ensemble.card
    assert [w["file"] for w in card["weights"]] == ["weights_fold0.safetensors", "weights_fold1.safetensors"]
    assert card["risk"]["cutoff"] == pytest.approx(0.5)  # the mean of the folds' cutoffs
    assert card["localizer"]["file"] == "localizer.safetensors" and card["localizer"]["roi_margin_mm"] == 12.0
    assert card["inference"]["tile_size"] == [64, 64, 64]
    assert "localizer" not in single.card
    assert ensemble.sha256 != single.sha256
    assert len(ensemble.build_networks()) == 2 and ensemble.build_localizer() is not None


def test_ensemble_predicts_with_fold_spread(packages, tmp_path, capsys):
    _, ensemble, _ = packages
    image, _ = phantom_ct()
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    assert cli.main(["predict", str(path), "-o", str(tmp_path / "out"), "--model", str(ensemble.folder),
                     "--device", "cpu", "--progress", "none"]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    folds = result["fold_probabilities"]
    assert len(folds) == 2 and folds[0] != folds[1]
    assert result["response_probability"] == pytest.approx(np.mean(folds), abs=1e-4)
    assert result["fold_probability_spread"] == pytest.approx(max(folds) - min(folds), abs=2e-4)
    labels = sitk.ReadImage(str(tmp_path / "out" / "segmentation.nii.gz"))
    assert preprocessing.same_grid(labels, image)


def test_folds_with_different_networks_are_refused(packages, tmp_path):
    root, _, _ = packages
    other = _fake_run(tmp_path / "other", load_config(channels=[4, 8, 16]), 3, 0.5)
    with pytest.raises(Exception, match="different channels"):
        export_run([root / "fold0", other], tmp_path / "bad")


def test_localizer_checksum_and_card_are_verified(packages, tmp_path):
    _, ensemble, _ = packages
    copy = tmp_path / "copy"
    shutil.copytree(str(ensemble.folder), str(copy))
    with open(str(copy / "localizer.safetensors"), "r+b") as stream:
        stream.seek(-4, 2)
        stream.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="localizer.safetensors: SHA-256 mismatch"):
        load_package(copy)
    card = json.loads((ensemble.folder / "model.json").read_text())
    card["localizer"]["spacing_mm"] = [6.0, 0.0, 6.0]
    broken = tmp_path / "broken"
    shutil.copytree(str(ensemble.folder), str(broken))
    (broken / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="localizer"):
        load_package(broken)


def test_region_grows_to_hold_the_users_tumor_mask(packages):
    _, ensemble, _ = packages
    predictor = Predictor(ensemble, device="cpu")
    image, _ = phantom_ct()
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask[2:6, 3:7, 40:44] = 1  # a corner of the volume, far from any liver
    coarse, _ = predictor._locate([image], ["ct"], mask)
    if coarse is None:
        pytest.skip("random localiser found nothing, so the whole volume is used")
    corner = np.array(image.TransformIndexToPhysicalPoint((2, 3, 40)))
    assert np.all(coarse.low <= corner + 1e-6) and np.all(coarse.high >= corner - 1e-6)


def test_demo_coarse_to_fine_is_as_accurate_as_the_full_volume(demo_with_localizer):
    """The region pass sees less context, and instance normalisation makes the network notice, so the two
    label maps differ somewhat; what must hold is that the fast path is not less accurate."""
    image = sitk.ReadImage(str(SAMPLE))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_LABELS)))
    fast = Predictor(demo_with_localizer, device="cpu").predict([image], [str(SAMPLE)])
    full = Predictor(demo_with_localizer, device="cpu", coarse_to_fine=False).predict([image], [str(SAMPLE)])
    assert "localize" in fast.timings_s and "localize" not in full.timings_s
    assert preprocessing.same_grid(fast.label_image, image)

    def dice(predicted, expected):
        return 2.0 * np.logical_and(predicted, expected).sum() / (predicted.sum() + expected.sum())

    fast_labels, full_labels = sitk.GetArrayFromImage(fast.label_image), sitk.GetArrayFromImage(full.label_image)
    fast_organ, full_organ = dice(fast_labels >= 1, truth >= 1), dice(full_labels >= 1, truth >= 1)
    # demo 0.4.0 on this sample: organ 0.919 fast vs 0.930 full, tumor 0.736 fast vs 0.565 full
    assert fast_organ >= 0.9 and fast_organ >= full_organ - 0.02, (fast_organ, full_organ)
    fast_tumor, full_tumor = dice(fast_labels == 2, truth == 2), dice(full_labels == 2, truth == 2)
    assert fast_tumor >= full_tumor - 0.02, (fast_tumor, full_tumor)

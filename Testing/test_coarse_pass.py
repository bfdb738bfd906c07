"""The coarse pass bounds what the main networks may label: distances across grids, the restriction, the card."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from TACEResponseLib import coarse_pass, model_package, preprocessing
from TACEResponseLib.predictor import Predictor

SAMPLE = REPO / "TACEResponse" / "Resources" / "SampleData" / "synthetic_ct.nii.gz"


def _region(origin=(-30.0, 12.0, 40.0)):
    """A 6 mm grid holding a cube of 5 x 5 x 5 voxels (30 mm), voxel centres from origin + 6 * (3..7)."""
    array = np.zeros((12, 12, 12), np.uint8)
    array[3:8, 3:8, 3:8] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((6.0, 6.0, 6.0))
    image.SetOrigin(origin)
    low = np.asarray(origin) + 3 * 6.0
    return coarse_pass.CoarseRegion(image, low, low + 24.0), low


def test_distance_is_measured_in_mm_on_the_fine_grid():
    coarse, low = _region()
    # a fine grid that starts elsewhere and has another spacing: distances are physical
    fine = preprocessing.Grid(tuple(low - 31.0), (2.0, 2.0, 2.0), (50, 50, 50))
    distance = coarse.distance_mm(fine)
    centre = np.round((low + 12.0 - np.asarray(fine.origin)) / 2.0).astype(int)  # x, y, z index
    assert distance[centre[2], centre[1], centre[0]] == 0.0
    # 20 mm beyond the last voxel centre along +x: the region's boundary lies between voxel centres, so
    # the distance is 20 mm give or take half a coarse voxel
    beyond = centre + np.array([int((12 + 20) / 2), 0, 0])
    assert distance[beyond[2], beyond[1], beyond[0]] == pytest.approx(20.0, abs=3.5)
    assert distance.min() == 0.0 and distance.dtype == np.float32


def test_restrict_removes_only_what_lies_beyond_reach():
    coarse, low = _region()
    fine = preprocessing.Grid(tuple(low - 31.0), (2.0, 2.0, 2.0), (50, 50, 50))
    distance = coarse.distance_mm(fine)
    liver = np.full(distance.shape, 0.9, np.float32)
    tumor = np.zeros_like(liver)
    kept_liver, _, removed = coarse_pass.restrict(liver, tumor, distance, 10.0, fine.voxel_volume_ml)
    assert (kept_liver[distance <= 10.0] == 0.9).all() and (kept_liver[distance > 10.0] == 0.0).all()
    assert removed == pytest.approx((distance > 10.0).sum() * 0.008)
    unchanged, _, none = coarse_pass.restrict(liver, tumor, distance, None, fine.voxel_volume_ml)
    assert none == 0.0 and (unchanged == liver).all()


def test_restrict_tumor_holds_tumor_closer_than_the_organ():
    coarse, low = _region()
    fine = preprocessing.Grid(tuple(low - 31.0), (2.0, 2.0, 2.0), (50, 50, 50))
    distance = coarse.distance_mm(fine)
    # tumor everywhere, most likely class; the liver is second, above background only where it is 0.5+
    tumor = np.full(distance.shape, 0.6, np.float32)
    liver = np.where(distance > 8.0, 0.3, 0.1).astype(np.float32)
    kept_liver, kept_tumor, removed = coarse_pass.restrict_tumor(liver, tumor, distance, 5.0, fine.voxel_volume_ml)
    assert (kept_tumor[distance <= 5.0] == 0.6).all() and (kept_tumor[distance > 5.0] == 0.0).all()
    assert (kept_liver == liver).all()  # what was tumor is now liver only where the liver outweighs the rest
    assert removed == pytest.approx((distance > 5.0).sum() * fine.voxel_volume_ml)
    # a voxel labelled liver beyond the tumor reach is not counted as removed tumor
    liver_first = np.where(distance > 5.0, 0.7, 0.1).astype(np.float32)
    _, _, removed = coarse_pass.restrict_tumor(liver_first, np.full_like(liver, 0.2), distance, 5.0, 0.008)
    assert removed == 0.0
    _, same, none = coarse_pass.restrict_tumor(liver, tumor, distance, None, fine.voxel_volume_ml)
    assert none == 0.0 and (same == tumor).all()


def test_prediction_labels_nothing_beyond_the_reach(demo_with_localizer):
    image = sitk.ReadImage(str(SAMPLE))
    predictor = Predictor(demo_with_localizer, device="cpu")
    coarse, _ = predictor._locate([image], [str(SAMPLE)], None)
    prediction = predictor.predict([image], [str(SAMPLE)])
    labels = sitk.GetArrayFromImage(prediction.label_image)
    # distances on the input grid: labelled voxels lie within the reach plus the model grid's half voxel
    outside = sitk.SignedMaurerDistanceMap(coarse.region, insideIsPositive=False, squaredDistance=False,
                                           useImageSpacing=True)
    on_input = sitk.GetArrayFromImage(sitk.Resample(outside, image, sitk.Transform(), sitk.sitkLinear, 1e6))
    assert labels.any()
    assert on_input[labels > 0].max() <= predictor.reach_mm + 2.0
    tumor = labels == demo_with_localizer.label_value("Tumor")
    assert not tumor.any() or on_input[tumor].max() <= predictor.tumor_reach_mm + 2.0


def test_the_card_can_switch_the_restriction_off(demo_with_localizer, tmp_path):
    card = json.loads((demo_with_localizer.folder / "model.json").read_text())
    card["localizer"]["organ_reach_mm"] = None
    card["localizer"]["tumor_reach_mm"] = None
    copy = tmp_path / "no_reach"
    shutil.copytree(str(demo_with_localizer.folder), str(copy))
    (copy / "model.json").write_text(json.dumps(card))
    predictor = Predictor(model_package.load_package(copy), device="cpu")
    assert predictor.reach_mm is None and predictor.tumor_reach_mm is None
    prediction = predictor.predict([sitk.ReadImage(str(SAMPLE))], [str(SAMPLE)])
    assert not any("coarse pass" in w for w in prediction.warnings)

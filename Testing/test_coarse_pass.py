"""The coarse pass bounds what the main networks may label: distances across grids, the restriction, the card."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from TACEResponseLib import anatomy, coarse_pass, model_package, preprocessing
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


def test_coarse_probability_is_resampled_physically():
    coarse, low = _region()
    probability = sitk.Cast(coarse.region, sitk.sitkFloat32) * 0.95
    coarse.organ_probability = probability
    fine = preprocessing.Grid(tuple(low - 31.0), (2.0, 2.0, 2.0), (50, 50, 50))
    on_fine = coarse.probability_on(fine)
    distance = coarse.distance_mm(fine)
    assert on_fine.shape == distance.shape
    # the cube's value inside it; 0 beyond the linear interpolation's reach, a coarse voxel (6 mm) past the
    # last voxel centre along each axis (up to 6 * sqrt(3) mm off a corner)
    assert on_fine[distance == 0.0].max() == pytest.approx(0.95)
    assert (on_fine[distance > 11.0] == 0.0).all() and on_fine[distance > 3.0].max() > 0.0
    assert coarse_pass.CoarseRegion(coarse.region, low, low).probability_on(fine) is None


def _fill_case():
    """A 2 mm grid; the coarse pass is sure of the box [4:36]^3 (distance 0 there). The fine network labelled
    the half x < 20 liver and left out, at x >= 20: a thick block of liver HU, a thick block of fat HU, a thin
    slab of liver HU, and a thick block it rated tumor but below one half."""
    shape = (40, 40, 40)
    liver = np.zeros(shape, np.float32)
    tumor = np.zeros(shape, np.float32)
    hu = np.full(shape, 100.0, np.float32)
    coarse = np.zeros(shape, np.float32)
    coarse[4:36, 4:36, 4:36] = 0.95
    distance = np.where(coarse > 0, 0.0, 8.0).astype(np.float32)
    liver[4:36, 4:36, 4:20] = 0.9
    hu[4:36, 4:36, 20:36] = -500.0  # air: never filled, except where the blocks below put tissue
    hu[4:14, 4:16, 20:32] = 100.0  # thick parenchyma, 10 x 12 x 12 voxels
    hu[4:14, 20:32, 20:32] = -80.0  # thick fat
    hu[18:20, 4:32, 20:32] = 100.0  # a 4 mm slab
    hu[24:34, 4:16, 20:32] = 100.0  # thick, rated tumor at 0.35 (and liver 0.1: organ below one half)
    tumor[24:34, 4:16, 20:32] = 0.35
    liver[24:34, 4:16, 20:32] = 0.1
    return liver, tumor, coarse, distance, hu


def test_fill_adds_thick_parenchyma_the_coarse_pass_is_sure_of_and_keeps_the_tumor_share():
    liver, tumor, coarse, distance, hu = _fill_case()
    new_liver, new_tumor, added_ml = coarse_pass.fill_missed_liver(liver, tumor, coarse, distance, hu,
                                                                   (2.0, 2.0, 2.0), 0.008)
    organ = anatomy.organ_mask(new_liver, new_tumor)
    is_tumor = organ & (new_tumor > new_liver)
    # the blocks, but for a few corner voxels that the opening's ball does not reach
    parenchyma, lesion = (slice(4, 14), slice(4, 16), slice(20, 32)), (slice(24, 34), slice(4, 16), slice(20, 32))
    assert organ[parenchyma].mean() > 0.98 and not is_tumor[parenchyma].any()
    assert is_tumor[lesion].mean() > 0.98
    assert not organ[4:14, 20:32, 20:32].any()  # fat
    assert not organ[18:20, 4:32, 20:32].any()  # too thin to trust the coarse pass's 6 mm boundary
    before = anatomy.organ_mask(liver, tumor)
    assert (organ[before]).all() and (new_liver[before] == liver[before]).all()
    assert added_ml == pytest.approx((organ & ~before).sum() * 0.008)
    assert added_ml == pytest.approx(organ[parenchyma].sum() * 0.008 + organ[lesion].sum() * 0.008)


def test_fill_adds_nothing_outside_the_coarse_region_or_where_it_is_unsure():
    liver, tumor, coarse, distance, hu = _fill_case()
    beyond = np.full_like(distance, 8.0)
    for probability, dist in ((coarse, beyond), (coarse * 0.9, distance), (None, distance)):
        new_liver, new_tumor, added_ml = coarse_pass.fill_missed_liver(liver, tumor, probability, dist, hu,
                                                                       (2.0, 2.0, 2.0), 0.008)
        assert added_ml == 0.0 and (new_liver == liver).all() and (new_tumor == tumor).all()


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
    card["localizer"]["fill_missed_liver"] = False
    copy = tmp_path / "no_reach"
    shutil.copytree(str(demo_with_localizer.folder), str(copy))
    (copy / "model.json").write_text(json.dumps(card))
    predictor = Predictor(model_package.load_package(copy), device="cpu")
    assert predictor.reach_mm is None and predictor.tumor_reach_mm is None and not predictor.fill_from_coarse
    prediction = predictor.predict([sitk.ReadImage(str(SAMPLE))], [str(SAMPLE)])
    assert not any("coarse pass" in w for w in prediction.warnings)

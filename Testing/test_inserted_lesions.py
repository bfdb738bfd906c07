"""Lesions painted into a CT: the mask is where the HU changed, in physical space whatever the storage, and
on the real HCC_048 liver the demo model finds a 4 cm hypodense lesion."""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import HCC_048, phantom_ct, require
from TACEResponseLib import image_io, model_package
from TACEResponseLib.predictor import Predictor
from TACEResponseTraining.phantoms import inserted_lesions

KIND = inserted_lesions.LesionKind(25.0, -45.0)


def _ct_and_liver():
    ct, labels = phantom_ct(size=(80, 72, 56), spacing=(2.0, 2.0, 2.5), seed=3)
    return ct, labels == 1


def _voxel_ml(image):
    return float(np.prod(image.GetSpacing())) / 1000.0


def test_the_lesion_has_its_size_and_contrast_and_nothing_else_changes():
    ct, liver = _ct_and_liver()
    centre = inserted_lesions.lesion_centres(liver, [KIND], seed=1)[0]
    painted, mask = inserted_lesions.insert_lesion(ct, liver, KIND, centre, seed=1)
    assert painted.GetOrigin() == ct.GetOrigin() and painted.GetSpacing() == ct.GetSpacing()
    assert painted.GetPixelID() == ct.GetPixelID() and mask.GetSize() == ct.GetSize()
    before, after = sitk.GetArrayFromImage(ct).astype(float), sitk.GetArrayFromImage(painted).astype(float)
    lesion = sitk.GetArrayFromImage(mask) > 0
    sphere_ml = 4.0 / 3.0 * np.pi * (KIND.diameter_mm / 2.0) ** 3 / 1000.0
    assert lesion.sum() * _voxel_ml(ct) == pytest.approx(sphere_ml, rel=0.2)  # lobulated, on a coarse grid
    assert sitk.GetArrayFromImage(liver)[lesion].all()  # placed deep in the liver
    # the phantom's liver is 110 HU (noise 8): the lesion's inner part 45 HU darker
    inner = sitk.GetArrayFromImage(sitk.BinaryErode(mask, [2, 2, 2])) > 0
    assert np.mean(after[inner]) == pytest.approx(110.0 + KIND.contrast_hu, abs=6.0)
    far = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False,
                                                              useImageSpacing=True)) > 3.0
    assert (after[far] == before[far]).all()
    again, again_mask = inserted_lesions.insert_lesion(ct, liver, KIND, centre, seed=1)
    assert (sitk.GetArrayFromImage(again) == after).all()


def test_a_flipped_storage_gets_the_same_lesion_in_physical_space():
    ct, liver = _ct_and_liver()
    centre = inserted_lesions.lesion_centres(liver, [KIND], seed=2)[0]
    _, mask = inserted_lesions.insert_lesion(ct, liver, KIND, centre, seed=2)
    flipped, flipped_liver = (sitk.Flip(image, [True, False, True]) for image in (ct, liver))
    assert flipped.GetDirection() != ct.GetDirection()
    _, flipped_mask = inserted_lesions.insert_lesion(flipped, flipped_liver, KIND, centre, seed=2)
    back = sitk.GetArrayFromImage(sitk.Resample(flipped_mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    original = sitk.GetArrayFromImage(mask)
    assert original.sum() > 0 and (back == original).all()


def test_an_empty_liver_or_a_centre_far_from_it_is_refused():
    ct, liver = _ct_and_liver()
    with pytest.raises(ValueError, match="empty"):
        inserted_lesions.lesion_centres(liver * 0, [KIND])
    with pytest.raises(ValueError, match="not in or near the liver"):
        inserted_lesions.insert_lesion(ct, liver, KIND, np.asarray(ct.GetOrigin()) - 200.0)


def test_the_demo_model_finds_a_hypodense_lesion_in_a_real_liver(demo_with_localizer):
    """HCC_048 has no tumor mask; a 4 cm hypodense lesion painted into its right lobe has one. The model
    labels all of it tumor, and the halo rule gives back most of the liver the networks call tumor around
    it (with the 6 mm margin it used to keep: 2.4 times the lesion's volume, Dice 0.58; README 'Tumor on a
    real liver's background')."""
    ct = image_io.read_image(str(require(HCC_048)))[0]
    predictor = Predictor(demo_with_localizer, device="cpu")
    liver = predictor.predict([ct], [str(HCC_048)]).label_image > 0
    kind = inserted_lesions.KINDS["hypodense 40 mm"]
    centre = inserted_lesions.lesion_centres(liver, [kind], seed=0)[0]
    painted, mask = inserted_lesions.insert_lesion(ct, liver, kind, centre, seed=0)
    labels = sitk.GetArrayFromImage(predictor.predict([painted], ["HCC_048 with a lesion"]).label_image)
    tumor = labels == demo_with_localizer.label_value("Tumor")
    lesion = sitk.GetArrayFromImage(mask) > 0
    assert tumor[lesion].mean() > 0.9
    assert 2.0 * (tumor & lesion).sum() / (tumor.sum() + lesion.sum()) > 0.65
    beyond = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False,
                                                                 useImageSpacing=True)) > 15.0
    assert (tumor & beyond).sum() * _voxel_ml(ct) < 5.0

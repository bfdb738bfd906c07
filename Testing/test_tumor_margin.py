"""The halo rule: liver labelled tumor well beyond a clear lesion goes back to the liver; the lesion, its
near margin, a capsule and iso-dense lesions stay tumor."""

import numpy as np

from TACEResponseLib import anatomy, tumor_margin

SPACING = (2.0, 2.0, 2.0)


def _case(lesion_hu=60.0, predicted_mm=20.0, rim_hu=None, seed=0):
    """A 2 mm grid of liver (110 HU) with a 10 mm radius lesion at ``lesion_hu``; the prediction calls a
    sphere of ``predicted_mm`` tumor. ``rim_hu``: a capsule from 10 to 13 mm."""
    shape = (40, 40, 40)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * 2.0 for n in shape], indexing="ij")
    radius = np.sqrt((zz - 40.0) ** 2 + (yy - 40.0) ** 2 + (xx - 40.0) ** 2)
    hu = np.full(shape, 110.0, np.float32)
    hu[radius <= 10.0] = lesion_hu
    if rim_hu is not None:
        hu[(radius > 10.0) & (radius <= 13.0)] = rim_hu
    hu += np.random.default_rng(seed).normal(0.0, 5.0, shape).astype(np.float32)
    organ = np.ones(shape, bool)
    organ[:, :, :2] = False  # background at one side, so the organ is not the whole grid
    predicted = radius <= predicted_mm
    return organ, predicted, hu, radius


def test_liver_far_beyond_a_clear_lesion_goes_back_and_its_near_margin_stays():
    organ, predicted, hu, radius = _case()
    back = tumor_margin.halo(organ, predicted, hu, SPACING)
    assert not back[radius <= 10.0].any()  # the lesion
    assert not back[radius <= 12.0].any()  # within the kept margin (3 mm, measured from the lesion-like voxels)
    assert back[(radius > 14.0) & predicted].mean() > 0.95  # the halo beyond it, at the liver's HU
    assert not back[~predicted].any()


def test_a_capsule_and_an_iso_dense_lesion_and_an_exact_prediction_are_left_alone():
    organ, predicted, hu, radius = _case(rim_hu=150.0)
    back = tumor_margin.halo(organ, predicted, hu, SPACING)
    assert not back[radius <= 13.0].any()  # dark core and bright capsule
    assert back[(radius > 17.0) & predicted].mean() > 0.95
    organ, predicted, hu, _ = _case(lesion_hu=100.0)  # 10 HU from the liver: iso-dense
    assert not tumor_margin.halo(organ, predicted, hu, SPACING).any()
    organ, predicted, hu, _ = _case(predicted_mm=10.0)
    assert not tumor_margin.halo(organ, predicted, hu, SPACING).any()


def test_the_halo_becomes_liver_and_the_organ_stays():
    organ, predicted, hu, radius = _case()
    tumor = np.where(predicted, 0.8, 0.05).astype(np.float32)
    liver = np.where(predicted, 0.15, 0.9).astype(np.float32)
    new_liver, new_tumor, given_ml = tumor_margin.give_back_halo(liver, tumor, hu, SPACING)
    expected = tumor_margin.halo(anatomy.organ_mask(liver, tumor), predicted, hu, SPACING)
    assert given_ml == expected.sum() * 0.008 and given_ml > 10.0
    assert ((new_tumor > new_liver) == (predicted & ~expected)).all()
    assert np.allclose(new_liver + new_tumor, liver + tumor)
    unchanged = tumor_margin.give_back_halo(liver, np.zeros_like(tumor), hu, SPACING)
    assert unchanged[2] == 0.0 and (unchanged[0] == liver).all()

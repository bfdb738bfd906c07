"""Tumor margins. The halo rule: liver labelled tumor well beyond a clear lesion goes back to the liver; the
lesion, its near margin, a capsule, iso-dense lesions and the viable rim around necrosis stay tumor. The
viable-rim rule: parenchyma clearly darker than the liver, joined to a lesion, becomes tumor; vessels, the
organ's edge and dark tissue apart from the lesion do not."""

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


def _necrotic_case(core_mm=8.0, rim_mm=16.0, predicted_mm=9.0, seed=0):
    """Liver at 110 HU around a necrotic core (20 HU) ringed by viable tumour at 75 HU (35 HU of washout); the
    prediction calls only a sphere of ``predicted_mm`` tumor, as the networks do."""
    organ, _, hu, radius = _case(seed=seed)
    hu = np.where(radius <= core_mm, 20.0, np.where(radius <= rim_mm, 75.0, 110.0)).astype(np.float32)
    hu += np.random.default_rng(seed).normal(0.0, 5.0, hu.shape).astype(np.float32)
    return organ, radius <= predicted_mm, hu, radius


def test_the_viable_rim_around_necrosis_is_taken_and_the_liver_beyond_it_is_not():
    organ, predicted, hu, radius = _necrotic_case()
    take = tumor_margin.viable_rim(organ, predicted, hu, SPACING)
    assert take[(radius > 9.0) & (radius <= 14.0)].mean() > 0.95
    assert not take[radius > 20.0].any() and not take[predicted].any()
    # the halo rule leaves a prediction of core and rim alone: the rim is far darker than the liver
    # (above the core-to-liver midpoint, it read as liver before)
    organ, predicted, hu, radius = _necrotic_case(predicted_mm=16.0)
    assert not tumor_margin.halo(organ, predicted, hu, SPACING)[radius <= 15.0].any()


def test_a_thin_dark_vessel_the_organ_edge_and_dark_tissue_apart_are_not_taken():
    organ, predicted, hu, radius = _case(lesion_hu=40.0, predicted_mm=10.0)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * 2.0 for n in hu.shape], indexing="ij")
    organ[:, :, :14] = False  # the organ ends 2 mm short of the lesion's side
    vessel = (np.hypot(zz - 40.0, xx - 40.0) <= 2.0) & (yy > 40.0)  # 4 mm across, from the lesion outwards
    apart = np.sqrt((zz - 40.0) ** 2 + (yy - 40.0) ** 2 + (xx - 68.0) ** 2) <= 6.0  # 12 mm of liver between
    edge = organ & (xx < 34.0) & ~predicted  # the organ's outermost 6 mm next to the lesion, darkened as
    hu[vessel | apart | edge] = 70.0         # partial volume with the fat outside darkens it
    take = tumor_margin.viable_rim(organ, predicted, hu, SPACING)
    assert not take[vessel].any() and not take[apart].any() and not take[edge].any()
    # an iso-dense lesion takes nothing, whatever lies around it
    organ, predicted, hu, _ = _necrotic_case()
    hu[predicted] = 100.0
    assert not tumor_margin.viable_rim(organ, predicted, hu, SPACING).any()


def test_the_viable_rim_becomes_tumor_and_the_organ_stays():
    organ, predicted, hu, radius = _necrotic_case()
    tumor = np.where(predicted, 0.8, 0.05).astype(np.float32)
    liver = np.where(predicted, 0.15, 0.9).astype(np.float32)
    new_liver, new_tumor, taken_ml = tumor_margin.take_viable_rim(liver, tumor, hu, SPACING)
    expected = tumor_margin.viable_rim(anatomy.organ_mask(liver, tumor), predicted, hu, SPACING)
    assert taken_ml == expected.sum() * 0.008 and taken_ml > 10.0
    assert ((new_tumor > new_liver) == (predicted | expected)).all()
    assert np.allclose(new_liver + new_tumor, liver + tumor)

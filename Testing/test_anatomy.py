"""Anatomical post-processing on constructed probability maps: one liver, tumor in or on it, no holes."""

import numpy as np
import pytest

from TACEResponseLib import anatomy

SPACING = (2.0, 2.0, 2.0)
SHAPE = (60, 80, 100)  # z, y, x


def _ball(centre, radius):
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _maps(liver_mask, tumor_mask=None, confidence=0.9):
    """Probability maps where the given masks are the most likely class."""
    liver = np.where(liver_mask, confidence, 0.02).astype(np.float32)
    tumor = np.zeros(liver_mask.shape, np.float32)
    if tumor_mask is not None:
        tumor[tumor_mask] = confidence
        liver[tumor_mask] = 0.05
    return liver, tumor


def _labels(liver, tumor):
    background = 1.0 - liver - tumor
    return np.where((tumor > liver) & (tumor > background), 2, np.where(liver + tumor > background, 1, 0))


LIVER = _ball((30, 40, 35), 18)


def test_a_blob_in_the_stomach_is_removed():
    stomach = _ball((30, 40, 80), 10)  # separate from the liver: a false tumor in the stomach
    liver, tumor = _maps(LIVER, stomach)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert not labels[stomach].any()
    assert (labels[LIVER] == 1).all()
    assert report.removed_organ_ml == pytest.approx(stomach.sum() * 8 / 1000, rel=0.01)
    assert any("removed" in w for w in report.warnings())


def test_a_spleen_joined_by_a_thin_bridge_is_removed():
    spleen = _ball((30, 40, 80), 12)
    bridge = np.zeros(SHAPE, bool)
    bridge[29:31, 39:41, 50:70] = True  # 4 mm thick: what a leaking network draws along an organ contact
    liver, tumor = _maps(LIVER | spleen | bridge)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert not labels[spleen].any()
    assert (labels[LIVER] == 1).mean() > 0.99
    assert report.removed_organ_ml > 0.9 * spleen.sum() * 8 / 1000


def _liver_with_a_neighbour(offset_zyx, radius, neck_voxels, shape=(90, 80, 100)):
    """A liver ball, a second ball at ``offset_zyx`` from its centre, and a square neck of ``neck_voxels``
    between them; boolean masks on a grid of ``shape``."""
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    centre = np.array([30, 40, 40])
    other_centre = centre + np.asarray(offset_zyx)
    liver = (z - 30) ** 2 + (y - 40) ** 2 + (x - 40) ** 2 <= 18 ** 2
    other = ((z - other_centre[0]) ** 2 + (y - other_centre[1]) ** 2 + (x - other_centre[2]) ** 2
             <= radius ** 2)
    neck = np.zeros(shape, bool)
    axis = int(np.argmax(np.abs(offset_zyx)))
    box = [slice(c - neck_voxels // 2, c + (neck_voxels + 1) // 2) for c in centre]
    box[axis] = slice(min(centre[axis], other_centre[axis]), max(centre[axis], other_centre[axis]))
    neck[tuple(box)] = True
    return liver, other, neck


def test_the_heart_over_the_dome_joined_by_a_12_mm_neck_is_removed():
    # HCC_048: the fine network carries the liver over the diaphragm into the heart through a 10-15 mm neck
    liver_ball, heart, neck = _liver_with_a_neighbour((32, 0, 0), 11, 6)
    liver, tumor = _maps(liver_ball | heart | neck)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert not labels[heart].any()
    assert (labels[liver_ball] == 1).mean() > 0.99
    assert report.removed_over_dome_ml > 0.9 * heart.sum() * 8 / 1000
    assert any("dome" in w for w in report.warnings())


def test_a_left_lobe_beside_the_liver_joined_by_a_12_mm_isthmus_is_kept():
    # the same neck beside the liver, not above it: a left lobe whose segment IV has atrophied (cirrhosis)
    liver_ball, lobe, isthmus = _liver_with_a_neighbour((0, 0, 34), 11, 6)
    liver, tumor = _maps(liver_ball | lobe | isthmus)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert (labels[liver_ball | lobe | isthmus] == 1).all()
    assert report.warnings() == []


def test_an_exophytic_lesion_is_kept():
    lesion = _ball((30, 40, 55), 9)  # centred 2 mm outside the liver's surface, broad base inside it
    assert (lesion & ~LIVER).sum() > 0.4 * lesion.sum()
    liver, tumor = _maps(LIVER | lesion, lesion)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert (labels[lesion] == 2).all()
    assert report.removed_tumor_ml == 0 and report.removed_organ_ml == 0
    assert report.warnings() == []


def test_a_tumor_touching_the_liver_at_a_point_is_removed():
    # a bowel loop called tumor, touching the liver through a narrow column (3 x 3 voxels)
    loop = _ball((30, 40, 66), 10)
    contact = np.zeros(SHAPE, bool)
    contact[29:32, 39:42, 52:57] = True
    liver, tumor = _maps(LIVER, loop | contact)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING, bridge_mm=1.0)  # keep the bridge rule out
    labels = _labels(liver, tumor)
    assert not labels[loop].any()
    assert report.removed_tumor_regions == 1


def test_enclosed_background_becomes_liver_and_intrahepatic_tumor_stays():
    vessel = _ball((30, 40, 35), 3)
    lesion = _ball((30, 40, 25), 5)
    liver, tumor = _maps(LIVER & ~vessel, lesion & LIVER)
    liver[vessel] = 0.0
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert (labels[vessel] == 1).all()
    assert (labels[lesion & LIVER] == 2).all()
    assert report.filled_ml == pytest.approx(vessel.sum() * 8 / 1000, abs=0.01)


def test_soft_boundaries_survive_and_nothing_changes_on_a_clean_map():
    liver, tumor = _maps(LIVER)
    liver[~LIVER] = 0.3  # soft background just outside
    new_liver, new_tumor, report = anatomy.constrain(liver, tumor, SPACING)
    shell = anatomy._array(anatomy.sitk.BinaryDilate(anatomy._image(LIVER), [1, 1, 1], anatomy.sitk.sitkBall)) & ~LIVER
    assert np.array_equal(new_liver[shell], liver[shell])
    assert np.array_equal(_labels(new_liver, new_tumor), _labels(liver, tumor))
    assert report.removed_organ_ml == 0


def test_empty_maps_pass_through():
    liver = np.zeros(SHAPE, np.float32)
    tumor = np.zeros(SHAPE, np.float32)
    new_liver, new_tumor, report = anatomy.constrain(liver, tumor, SPACING)
    assert not new_liver.any() and not new_tumor.any() and report.warnings() == []


def _hu(liver_hu=110.0):
    """An image in HU: fat everywhere, liver parenchyma inside LIVER."""
    hu = np.full(SHAPE, -100.0, np.float32)
    hu[LIVER] = liver_hu
    return hu


def test_contrast_filled_stomach_labelled_liver_is_removed():
    stomach = _ball((30, 40, 62), 12) & ~LIVER  # oral contrast pressed against the liver, labelled liver
    hu = _hu()
    hu[stomach] = 240.0
    liver, tumor = _maps(LIVER | stomach)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING, hu)
    labels = _labels(liver, tumor)
    assert not labels[stomach].any()
    assert (labels[LIVER] == 1).mean() > 0.99
    assert report.removed_bright_ml == pytest.approx(stomach.sum() * 8 / 1000, rel=0.05)
    assert any("brighter than liver" in w for w in report.warnings())
    # without the image the rule cannot apply: the stomach stays (what the other rules alone do)
    _, _, blind = anatomy.constrain(*_maps(LIVER | stomach), SPACING)
    assert blind.removed_ml == 0


def test_bright_inside_the_liver_and_bright_tumor_stay():
    deposit = _ball((30, 40, 35), 6)  # a dense lipiodol deposit or a wide vessel, enclosed by parenchyma
    lesion = _ball((30, 40, 50), 7)  # a hyper-enhancing lesion at the surface, labelled tumor
    vessel = np.zeros(SHAPE, bool)
    vessel[28:31, 38:41, 10:30] = True  # a 6 mm vessel entering the liver: thinner than the rule's 8 mm
    hu = _hu()
    hu[deposit | lesion | vessel] = 280.0
    liver, tumor = _maps(LIVER | vessel, lesion)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING, hu)
    labels = _labels(liver, tumor)
    assert (labels[deposit] == 1).all()
    assert (labels[lesion] == 2).mean() > 0.99
    assert (labels[vessel & LIVER] == 1).all()
    assert report.removed_bright_ml == 0


def test_stomach_contents_labelled_liver_next_to_the_lumen_are_removed_and_the_liver_beside_them_stays():
    """The network carries the liver a few mm into a contrast-filled stomach: a layer too thin for the
    thickness test, continuous with the lumen left outside the organ. It goes; the parenchyma it touches, and
    a thin bright vessel entering the liver from outside, stay."""
    stomach = _ball((30, 40, 62), 12) & ~LIVER
    near_liver = LIVER.copy()
    for _ in range(3):
        near_liver = anatomy.grown(near_liver)
    leak = stomach & near_liver  # 6 mm of the stomach's contents
    vessel = np.zeros(SHAPE, bool)
    vessel[28:31, 50:80, 34:37] = True  # 6 mm, from the back of the grid 8 voxels into the liver
    hu = _hu()
    hu[stomach | vessel] = 240.0
    labelled = LIVER | leak
    liver, tumor, report = anatomy.constrain(*_maps(labelled), SPACING, hu)
    labels = _labels(liver, tumor)
    assert leak.sum() * 8 / 1000 > 2.0 and not labels[leak].any()
    assert (labels[LIVER & ~vessel] == 1).mean() > 0.99
    assert (vessel & LIVER).sum() >= 50 and (labels[vessel & LIVER] == 1).all()
    assert report.removed_bright_ml == pytest.approx(leak.sum() * 8 / 1000, rel=0.05)
    # the thickness test alone leaves such a layer
    _, _, alone = anatomy.constrain(*_maps(labelled), SPACING, hu, lumen_reach_mm=0.0)
    assert alone.removed_bright_ml == 0


def test_the_hearts_blood_on_the_dome_is_removed_but_not_a_vessel_just_above_the_liver():
    heart = _ball((30, 40, 62), 12) & ~LIVER  # the blood pool, 165 HU, above a 110 HU portal venous liver
    vessel = np.zeros(SHAPE, bool)
    vessel[28:31, 38:41, 10:30] = True  # 6 mm, as bright: thinner than the rule's 8 mm
    hu = _hu(110.0)
    hu[heart | vessel] = 165.0
    liver, tumor, report = anatomy.constrain(*_maps(LIVER | heart | vessel), SPACING, hu)
    labels = _labels(liver, tumor)
    assert not labels[heart].any()
    assert (labels[vessel & LIVER] == 1).all()
    assert report.removed_bright_ml == pytest.approx(heart.sum() * 8 / 1000, rel=0.05)
    # just under the floor (and 35 HU above the liver): left alone
    hu[heart] = 145.0
    _, _, report = anatomy.constrain(*_maps(LIVER | heart), SPACING, hu)
    assert report.removed_bright_ml == 0


def test_the_bright_threshold_follows_the_liver():
    """A strongly enhancing liver (170 HU) is not bright; a region 40 HU above it is."""
    stomach = _ball((30, 40, 62), 12) & ~LIVER
    hu = _hu(170.0)
    hu[stomach] = 200.0  # above the 150 HU floor but only 30 HU above this liver
    _, _, report = anatomy.constrain(*_maps(LIVER | stomach), SPACING, hu)
    assert report.removed_bright_ml == 0
    hu[stomach] = 240.0
    _, _, report = anatomy.constrain(*_maps(LIVER | stomach), SPACING, hu)
    assert report.removed_bright_ml > 0.9 * stomach.sum() * 8 / 1000


def _rim(thickness_mm, mask=LIVER):
    """The part of ``mask`` within ``thickness_mm`` of its surface on its medial side (x above the centre)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask, sampling=SPACING)
    rim = mask & (depth <= thickness_mm)
    rim[:, :, :35] = False
    rim[:12] = rim[48:] = False
    return rim


def test_a_tumor_drawn_as_a_rim_along_the_liver_edge_is_unlabelled():
    rim = _rim(6.0)  # a 6 mm shell, 70 mm across: partial volume against fat or bowel, not a mass
    plate = np.zeros(SHAPE, bool)
    plate[29:31, 32:48, 22:38] = True  # 4 mm x 32 mm x 32 mm inside the liver: the hilum's fat, enclosed
    assert (plate <= LIVER).all() and not (plate & rim).any()
    liver, tumor, report = anatomy.constrain(*_maps(LIVER, rim | plate), SPACING)
    labels = _labels(liver, tumor)
    assert not (labels[rim | plate] == 2).any()
    assert not labels[rim].any()  # on the surface: background
    assert (labels[plate] == 1).all()  # enclosed by parenchyma: liver again (rule 3)
    assert (labels[LIVER & ~rim] == 1).all()
    assert report.removed_flat_regions == 2
    assert report.removed_flat_tumor_ml == pytest.approx((rim | plate).sum() * 8 / 1000, rel=0.01)
    assert report.removed_organ_ml == 0  # not counted twice
    assert any("rim, not a mass" in w for w in report.warnings())


def test_round_and_lobulated_lesions_stay_tumor():
    round_lesion = _ball((30, 40, 30), 8)
    # two overlapping balls: a lobulated, elongated lesion (44 mm long, 20 mm thick)
    lobulated = (_ball((30, 30, 40), 5) | _ball((30, 42, 40), 5) | _ball((30, 52, 40), 4)) & LIVER
    liver, tumor = _maps(LIVER, round_lesion | lobulated)
    liver, tumor, report = anatomy.constrain(liver, tumor, SPACING)
    labels = _labels(liver, tumor)
    assert (labels[round_lesion] == 2).all() and (labels[lobulated] == 2).all()
    assert report.removed_flat_tumor_ml == 0


def test_tumor_at_water_density_is_unlabelled_but_a_solid_hypodense_lesion_stays():
    """The gallbladder on the liver's surface (bile, 10 HU) drawn as tumor becomes background, a cyst the liver
    encloses becomes liver, and a hypodense but enhancing lesion (60 HU in a 110 HU liver) stays tumor."""
    rng = np.random.default_rng(3)
    gallbladder = _ball((30, 40, 52), 8)  # half outside the liver's edge, in the fossa
    cyst = _ball((30, 34, 28), 6)
    lesion = _ball((30, 50, 30), 6)
    assert (cyst <= LIVER).all() and (lesion <= LIVER).all() and (gallbladder & ~LIVER).any()
    hu = _hu(110.0) + rng.normal(0.0, 15.0, SHAPE).astype(np.float32)  # a noisy portal venous scan
    hu[gallbladder] = 10.0 + rng.normal(0.0, 15.0, int(gallbladder.sum()))
    hu[cyst] = 5.0 + rng.normal(0.0, 15.0, int(cyst.sum()))
    hu[lesion] = 60.0 + rng.normal(0.0, 15.0, int(lesion.sum()))
    liver, tumor, report = anatomy.constrain(*_maps(LIVER | gallbladder, gallbladder | cyst | lesion), SPACING, hu)
    labels = _labels(liver, tumor)
    assert not labels[gallbladder & ~LIVER].any()
    assert (labels[cyst] == 1).all()
    assert (labels[lesion] == 2).all()
    assert report.removed_fluid_regions == 2
    assert any("water density" in w for w in report.warnings())
    # the same fluid in a dark (native, fatty) liver of 30 HU is within 30 HU of it: the rule stays off
    hu_native = hu - 80.0
    hu_native[cyst | gallbladder] = hu[cyst | gallbladder]
    hu_native[lesion] = hu[lesion] - 45.0  # a hypodense lesion at 15 HU in that liver
    _, _, native = anatomy.constrain(*_maps(LIVER | gallbladder, gallbladder | cyst | lesion), SPACING, hu_native)
    assert native.removed_fluid_regions == 0

"""Anatomical post-processing: the liver is one organ, and tumor sits in it or grows out of it.

Works on the model grid's liver and tumor probabilities, before they are mapped back onto the input grid.
The rules, in order (each one can only remove labels or turn enclosed background into liver):

0. **Contrast-bright is not parenchyma.** Positive oral contrast in the stomach or bowel and the blood of the
   heart chambers are brighter than enhancing liver. Voxels labelled liver that are brighter than
   ``max(bright_min_hu, liver median + bright_above_liver_hu)`` and form a region thicker than
   ``2 * bright_mm`` (vessels are thinner) leave the organ before rule 1 (150 HU and 40 HU: the heart's
   blood in the portal venous phase, 150-190 HU on HCC_048, sits on the dome and was labelled liver); rule 3 gives back what the liver
   encloses (a wide vessel, a lipiodol deposit). Voxels labelled tumor are left alone: a hyper-enhancing
   lesion is tumor. Needs the image in HU; skipped without it.
1. **One liver.** Liver and tumor together form one organ: the largest connected region, after cutting
   bridges thinner than ``2 * bridge_mm`` (a network that leaks along the contact with the stomach, the
   spleen or a bowel loop connects them by such a bridge). What lies beyond a cut bridge is removed.
2. **Tumor touches liver.** A tumor region whose boundary touches liver parenchyma over less than
   ``min_contact`` of its surface hangs off the organ by a point (a bowel loop or the stomach wall next to
   the liver) and is removed. Exophytic lesions grow out of the liver on a broad base and are kept.
3. **No holes.** Background fully enclosed by the organ (vessels at the hilum, an under-called
   iso-dense area) becomes liver.

Only SimpleITK and NumPy: this runs inside Slicer's Python as well.
"""

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass
class AnatomyReport:
    removed_organ_ml: float  # liver or tumor beyond the one liver (rule 1)
    removed_tumor_ml: float  # tumor hanging off the liver by a point (rule 2)
    filled_ml: float  # enclosed background made liver (rule 3)
    removed_tumor_regions: int
    removed_bright_ml: float = 0.0  # contrast-bright regions labelled liver, not enclosed by it (rule 0)

    @property
    def removed_ml(self):
        return self.removed_organ_ml + self.removed_tumor_ml + self.removed_bright_ml

    def warnings(self, min_ml=1.0):
        out = []
        if self.removed_bright_ml >= min_ml:
            out.append("removed {:.0f} mL labelled liver but brighter than liver can be (oral contrast, heart)".format(
                self.removed_bright_ml))
        if self.removed_organ_ml >= min_ml:
            out.append("removed {:.0f} mL labelled liver or tumor beyond the one liver region (stomach, spleen or "
                       "bowel next to it)".format(self.removed_organ_ml))
        if self.removed_tumor_ml >= min_ml:
            out.append("removed {} tumor region(s), {:.1f} mL, that touch the liver only at a point".format(
                self.removed_tumor_regions, self.removed_tumor_ml))
        return out


def _image(mask):
    return sitk.GetImageFromArray(mask.astype(np.uint8))


def _array(image):
    return sitk.GetArrayFromImage(image) > 0


def largest_component(mask):
    """The largest 26-connected component of a boolean mask (all False when the mask is empty)."""
    if not mask.any():
        return mask
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(_image(mask), True))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def organ_mask(liver, tumor):
    """Where liver or tumor is the most likely class (liver + tumor outweigh background)."""
    return (liver + tumor) > np.maximum(1.0 - liver - tumor, 0.0)


def _radius(mm, spacing_xyz):
    return [max(1, int(round(mm / float(s)))) for s in spacing_xyz]


def one_liver(organ, spacing_xyz, bridge_mm):
    """The largest connected part of ``organ`` after cutting bridges thinner than 2 * bridge_mm."""
    radius = _radius(bridge_mm, spacing_xyz)
    eroded = _array(sitk.BinaryErode(_image(organ), radius, sitk.sitkBall))
    if not eroded.any():  # a small organ: no bridge to cut
        return largest_component(organ)
    core = largest_component(eroded)
    reach = _array(sitk.BinaryDilate(_image(core), [r + 1 for r in radius], sitk.sitkBall))
    return largest_component(organ & reach)


def _point_contact_tumors(tumor, parenchyma, min_contact):
    """Tumor regions whose one-voxel outer shell is liver parenchyma for less than ``min_contact``."""
    remove = np.zeros_like(tumor)
    if not tumor.any():
        return remove, 0
    labels = sitk.ConnectedComponent(_image(tumor), True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    label_array = sitk.GetArrayViewFromImage(labels)
    count = 0
    for value in stats.GetLabels():
        x, y, z, sx, sy, sz = stats.GetBoundingBox(value)
        box = (slice(max(z - 1, 0), z + sz + 1), slice(max(y - 1, 0), y + sy + 1), slice(max(x - 1, 0), x + sx + 1))
        region = label_array[box] == value
        shell = _array(sitk.BinaryDilate(_image(region), [1, 1, 1], sitk.sitkCross)) & ~region
        if shell.sum() and parenchyma[box][shell].mean() < min_contact:
            remove[box] |= region
            count += 1
    return remove, count


def bright_regions(organ, is_tumor, hu, spacing_xyz, bright_mm, min_hu, above_liver_hu):
    """Rule 0's regions: liver-labelled voxels brighter than the threshold, in regions thicker than
    ``2 * bright_mm``."""
    parenchyma = organ & ~is_tumor
    if not parenchyma.any():
        return np.zeros_like(organ)
    threshold = max(float(min_hu), float(np.median(hu[parenchyma])) + float(above_liver_hu))
    bright = parenchyma & (hu > threshold)
    if not bright.any():
        return bright
    thick = _array(sitk.BinaryMorphologicalOpening(_image(bright), _radius(bright_mm, spacing_xyz), sitk.sitkBall))
    # the opening trims the corners of what it keeps: grow back by a voxel, within the bright voxels
    return _array(sitk.BinaryDilate(_image(thick), [1, 1, 1], sitk.sitkBall)) & bright


def constrain(liver, tumor, spacing_xyz, hu=None, bridge_mm=5.0, min_contact=0.05, bright_mm=4.0,
              bright_min_hu=150.0, bright_above_liver_hu=40.0):
    """Apply the rules to probability maps (z, y, x) on a grid of ``spacing_xyz`` mm (``hu``: the image on the
    same grid, for rule 0); returns the new maps and an :class:`AnatomyReport`. Voxels next to the kept organ
    keep their probabilities, so the soft boundary survives the mapping back onto the input grid."""
    organ = organ_mask(liver, tumor)
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    if not organ.any():
        return liver, tumor, AnatomyReport(0.0, 0.0, 0.0, 0)
    bright = np.zeros_like(organ)
    if hu is not None:
        bright = bright_regions(organ, tumor > liver, hu, spacing_xyz, bright_mm, bright_min_hu,
                                bright_above_liver_hu)
    kept = one_liver(organ & ~bright, spacing_xyz, bridge_mm)
    is_tumor = kept & (tumor > liver)
    hanging, n_hanging = _point_contact_tumors(is_tumor, kept & ~is_tumor, min_contact)
    kept &= ~hanging
    filled = _array(sitk.BinaryFillhole(_image(kept), True)) & ~kept
    gone = organ & ~kept & ~filled & ~hanging
    report = AnatomyReport(round(float((gone & ~bright).sum()) * voxel_ml, 2),
                           round(float((hanging & ~filled).sum()) * voxel_ml, 2),
                           round(float((filled & ~organ).sum()) * voxel_ml, 2),
                           n_hanging, round(float((gone & bright).sum()) * voxel_ml, 2))
    # the soft boundary stays, except into what a rule took out
    near = _array(sitk.BinaryDilate(_image(kept | filled), [1, 1, 1], sitk.sitkBall)) & ~hanging & ~(bright & ~filled)
    liver = np.where(near, liver, 0.0).astype(np.float32)
    tumor = np.where(near, tumor, 0.0).astype(np.float32)
    liver[filled] = np.maximum(liver[filled], 1.0 - tumor[filled])
    return liver, tumor, report

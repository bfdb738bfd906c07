"""Tumor margins follow the lesion's visible edge, both ways: liver labelled tumor around a lesion, well away
from anything that looks like lesion, goes back to the liver (the halo); and viable tumour labelled liver
around a lesion's dark core, clearly darker than the liver and joined to the lesion, becomes tumor.

On a real liver the networks draw a halo of confident "tumor" around a clear lesion: a 4 cm hypodense
lesion painted into HCC_048 came out at 3 times its volume, "tumor" reaching 10-15 mm beyond its edge at
the liver's own HU (``benchmarks/inserted_lesions.py``). The rule keeps what lies within ``KEEP_MM`` of
the lesion's visibly lesion-like voxels (a capsule, the partial-volume edge) and only acts on lesions that
differ clearly from the liver around them; iso-dense lesions and viable tumour clearly darker than the
liver are left alone. Phantoms of generator 2.1.0 and earlier held liver-like tumor near their margins
(a viable rim around necrosis at near-liver HU), which this cuts; 2.2.0's lesion edges are all visible.
"""

import numpy as np
import SimpleITK as sitk

from . import anatomy

# 3 mm (one voxel of the 2 mm grid and its diagonals): on lesions painted into a real liver 6 mm left a
# 40 mm lesion at 2.4 times its volume; the phantoms' liver-like margins (tumor Dice 0.565 -> 0.504) are
# the price, since real lesions are judged against their visible edge
KEEP_MM = 3.0
SHELL_MM = (4.0, 12.0)  # the liver around it: parenchyma this far outside the region
MIN_CONTRAST_HU = 20.0
LIVER_BAND_HU = 20.0  # how far beyond the liver's median, away from the lesion, still reads as liver
# how far from the liver's median towards the lesion still reads as liver: viable tumour ringing a necrotic
# core is darker than the liver by more than this, though it may lie above the core-to-liver midpoint
LIVER_TOLERANCE_HU = 12.0
SMOOTH_MM = 2.0
MIN_ML = 0.5
# viable rim: the networks label liver the viable tumour ringing a necrotic core when it is much brighter than
# the core (a 284 mL phantom lesion, washout 40 HU: tumor Dice 0.46); it is taken when it is this much darker
# than the liver, this far inside the organ, this thick, and within this reach of the lesion
RIM_CONTRAST_HU = 20.0
RIM_DEPTH_MM = 4.0
RIM_THICKNESS_MM = 2.0  # the opening's radius: at 2 mm spacing one voxel, so what is under 6 mm across goes
RIM_REACH_MM = 20.0


def _image(mask, spacing_xyz):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    return image


def _signed_distance_mm(mask, spacing_xyz):
    """Distance (mm) to the region's boundary, negative inside."""
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        _image(mask, spacing_xyz), insideIsPositive=False, squaredDistance=False, useImageSpacing=True))


def smoothed_hu(hu, spacing_xyz):
    """``hu`` smoothed as both rules read it; compute it once and pass it to both."""
    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    hu_image = sitk.GetImageFromArray(np.ascontiguousarray(hu, np.float32))
    hu_image.SetSpacing(spacing_xyz)
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(hu_image, SMOOTH_MM / 2.0))


def halo(organ, is_tumor, hu, spacing_xyz, smoothed=None):
    """Voxels of each tumor region (``MIN_ML`` or more) farther than ``KEEP_MM`` from its lesion-like voxels
    (those on the lesion's side of the midpoint between its core's and the surrounding liver's median HU)
    whose smoothed HU reads as liver. Masks and ``hu`` are (z, y, x) arrays on a grid of ``spacing_xyz``."""
    give_back = np.zeros_like(is_tumor)
    if not is_tumor.any():
        return give_back
    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    smoothed = smoothed_hu(hu, spacing_xyz) if smoothed is None else smoothed
    parenchyma = organ & ~is_tumor
    grow = int(np.ceil(SHELL_MM[1] / min(spacing_xyz))) + 1
    for box, region, voxels in anatomy.regions(is_tumor, grow=grow):
        if voxels * voxel_ml < MIN_ML:
            continue
        signed = _signed_distance_mm(region, spacing_xyz)
        # the deeper half (by distance from the edge): lesion even when the halo is as thick as the lesion
        core = region & (signed < signed.min() / 2.0)
        shell = parenchyma[box] & (signed > SHELL_MM[0]) & (signed <= SHELL_MM[1])
        if core.sum() < 8 or shell.sum() < 20:
            continue
        local = smoothed[box]
        lesion_hu, liver_hu = float(np.median(local[core])), float(np.median(local[shell]))
        if abs(lesion_hu - liver_hu) < MIN_CONTRAST_HU:
            continue
        midpoint = (lesion_hu + liver_hu) / 2.0
        darker = lesion_hu < liver_hu
        lesion_like = region & ((local <= midpoint) if darker else (local >= midpoint))
        if not lesion_like.any():
            continue
        liver_like = ((local > max(midpoint, liver_hu - LIVER_TOLERANCE_HU)) & (local < liver_hu + LIVER_BAND_HU)
                      if darker else
                      (local < min(midpoint, liver_hu + LIVER_TOLERANCE_HU)) & (local > liver_hu - LIVER_BAND_HU))
        far = _signed_distance_mm(lesion_like, spacing_xyz) > KEEP_MM
        give_back[box] |= region & far & liver_like
    return give_back


def viable_rim(organ, is_tumor, hu, spacing_xyz, smoothed=None):
    """Parenchyma joined to a darker-than-liver tumor region (``MIN_ML`` or more) through voxels whose smoothed
    HU is ``RIM_CONTRAST_HU`` or more below the liver's median, at least ``RIM_DEPTH_MM`` inside the organ
    (not the partial-volume edge), in parts that survive an opening of radius ``RIM_THICKNESS_MM`` (not a
    vessel) and within ``RIM_REACH_MM`` of the region. Masks and ``hu`` are (z, y, x) arrays on a grid of ``spacing_xyz``."""
    take = np.zeros_like(is_tumor)
    parenchyma = organ & ~is_tumor
    if not is_tumor.any() or parenchyma.sum() < 100:
        return take
    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    smoothed = smoothed_hu(hu, spacing_xyz) if smoothed is None else smoothed
    liver_hu = float(np.median(smoothed[parenchyma]))
    deep_dark = None  # parenchyma well inside the organ and clearly darker than the liver, made when needed
    grow = int(np.ceil(RIM_REACH_MM / min(spacing_xyz))) + 1
    for box, region, voxels in anatomy.regions(is_tumor, grow=grow):
        if voxels * voxel_ml < MIN_ML or float(np.median(smoothed[box][region])) > liver_hu - RIM_CONTRAST_HU:
            continue
        if deep_dark is None:
            deep_dark = (parenchyma & (smoothed <= liver_hu - RIM_CONTRAST_HU)
                         & (-_signed_distance_mm(organ, spacing_xyz) >= RIM_DEPTH_MM))
        dark = deep_dark[box].copy()
        dark &= _signed_distance_mm(region, spacing_xyz) <= RIM_REACH_MM
        dark = anatomy.opened(dark, spacing_xyz, RIM_THICKNESS_MM)
        if not dark.any():
            continue
        take[box] |= _joined_to(dark, region)  # the dark parts touching the region
    return take


def _joined_to(candidates, seed):
    """``candidates`` voxels connected (26-neighbourhood) to ``seed`` through ``candidates`` and ``seed``."""
    joined = sitk.GetImageFromArray((candidates | seed).astype(np.uint8))
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(joined, True))
    touching = np.unique(labels[seed & (labels > 0)])
    return candidates & np.isin(labels, touching)


def take_viable_rim(liver, tumor, hu, spacing_xyz, smoothed=None):
    """Liver and tumor probabilities with each :func:`viable_rim` voxel's two swapped, so it becomes tumor and
    the organ probability stays; returns the maps and the mL taken."""
    return _swapped(viable_rim, liver, tumor, hu, spacing_xyz, smoothed)


def give_back_halo(liver, tumor, hu, spacing_xyz, smoothed=None):
    """Liver and tumor probabilities with each :func:`halo` voxel's two swapped, so it becomes liver and the
    organ probability stays; returns the maps and the mL given back."""
    return _swapped(halo, liver, tumor, hu, spacing_xyz, smoothed)


def _swapped(rule, liver, tumor, hu, spacing_xyz, smoothed):
    """Liver and tumor probabilities swapped where ``rule`` (halo, viable_rim) finds voxels, so the organ
    probability stays; and the mL swapped."""
    organ = anatomy.organ_mask(liver, tumor)
    found = rule(organ, organ & (tumor > liver), hu, spacing_xyz, smoothed)
    if not found.any():
        return liver, tumor, 0.0
    swapped_liver = np.where(found, tumor, liver).astype(np.float32)
    swapped_tumor = np.where(found, liver, tumor).astype(np.float32)
    return swapped_liver, swapped_tumor, float(found.sum()) * float(np.prod(spacing_xyz)) / 1000.0

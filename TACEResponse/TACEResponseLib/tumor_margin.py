"""Tumor margins: liver labelled tumor around a lesion, well away from anything that looks like lesion,
goes back to the liver.

On a real liver the networks draw a halo of confident "tumor" around a clear lesion: a 4 cm hypodense
lesion painted into HCC_048 came out at 3 times its volume, "tumor" reaching 10-15 mm beyond its edge at
the liver's own HU (``benchmarks/inserted_lesions.py``). The rule keeps what lies within ``KEEP_MM`` of
the lesion's visibly lesion-like voxels (a capsule, the partial-volume edge) and only acts on lesions that
differ clearly from the liver around them; iso-dense lesions are left alone. The phantoms' lesions hold
liver-like tumor near their margins (a viable rim around necrosis at near-liver HU), which this cuts.
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
SMOOTH_MM = 2.0
MIN_ML = 0.5


def _image(mask, spacing_xyz):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    return image


def _signed_distance_mm(mask, spacing_xyz):
    """Distance (mm) to the region's boundary, negative inside."""
    return sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        _image(mask, spacing_xyz), insideIsPositive=False, squaredDistance=False, useImageSpacing=True))


def halo(organ, is_tumor, hu, spacing_xyz):
    """Voxels of each tumor region (``MIN_ML`` or more) farther than ``KEEP_MM`` from its lesion-like voxels
    (those on the lesion's side of the midpoint between its core's and the surrounding liver's median HU)
    whose smoothed HU reads as liver. Masks and ``hu`` are (z, y, x) arrays on a grid of ``spacing_xyz``."""
    give_back = np.zeros_like(is_tumor)
    if not is_tumor.any():
        return give_back
    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    hu_image = sitk.GetImageFromArray(np.ascontiguousarray(hu, np.float32))
    hu_image.SetSpacing(spacing_xyz)
    smoothed = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(hu_image, SMOOTH_MM / 2.0))
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
        liver_like = ((local > midpoint) & (local < liver_hu + LIVER_BAND_HU) if darker
                      else (local < midpoint) & (local > liver_hu - LIVER_BAND_HU))
        far = _signed_distance_mm(lesion_like, spacing_xyz) > KEEP_MM
        give_back[box] |= region & far & liver_like
    return give_back


def give_back_halo(liver, tumor, hu, spacing_xyz):
    """Liver and tumor probabilities with each :func:`halo` voxel's two swapped, so it becomes liver and the
    organ probability stays; returns the maps and the mL given back."""
    organ = anatomy.organ_mask(liver, tumor)
    found = halo(organ, organ & (tumor > liver), hu, spacing_xyz)
    if not found.any():
        return liver, tumor, 0.0
    swapped_liver = np.where(found, tumor, liver).astype(np.float32)
    swapped_tumor = np.where(found, liver, tumor).astype(np.float32)
    return swapped_liver, swapped_tumor, float(found.sum()) * float(np.prod(spacing_xyz)) / 1000.0

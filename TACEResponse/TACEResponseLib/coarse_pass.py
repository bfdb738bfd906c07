"""The coarse pass: a small network finds the liver on a coarse grid of the whole scan.

Its liver region does two jobs for the main networks, which see only a few centimetres around each voxel:
it bounds the box they run on, and it bounds what they may label. The coarse network sees the whole abdomen
at once, so it tells the liver from the spleen, a bowel loop or the kidney where the fine network, looking at
a patch of similar grey, cannot; the fine network then draws the boundary within ``reach_mm`` of it.
Tumor is held closer (``tumor_reach_mm``): the fine network's commonest real-CT error is "tumor" on a
neighbour that touches the liver (the upper pole of the kidney, the gallbladder, the stomach wall), which
the organ reach alone lets through because it lies within a centimetre of the liver.
The coarse pass also fills in (:func:`fill_missed_liver`): on real CT the fine network sometimes loses a
thick stretch of plain parenchyma (HCC_048's inferior right lobe, 43 mL) that the coarse network, seeing the
whole organ, is sure of.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

from . import anatomy, inference, preprocessing

DEFAULT_REACH_MM = 10.0
# chosen on held-out phantoms and the TotalSegmentator crop (README "The bundled demo model"): 3 mm removes
# more false tumor but cuts into real lesions at the liver's edge, which the coarse pass under-segments
DEFAULT_TUMOR_REACH_MM = 5.0
# filling: the coarse organ probability above which it is trusted, the opening that keeps only thick pieces
# (the coarse pass's 6 mm boundary blurs by about one voxel), the smallest piece, and the HU band around the
# fine network's own liver (its 5th to 99th percentile, widened by the margin) that keeps fat, gallbladder
# and bright bowel contents out
FILL_CONFIDENCE = 0.9
FILL_OPENING_MM = 6.0
FILL_MIN_ML = 1.0
FILL_HU_MARGIN = 10.0


@dataclass
class CoarseRegion:
    """The coarse liver region (uint8 image on the coarse grid) and the physical box around it."""

    region: sitk.Image
    low: np.ndarray
    high: np.ndarray
    warnings: List[str] = field(default_factory=list)
    organ_probability: Optional[sitk.Image] = None  # float32 liver + tumor probability on the coarse grid

    def distance_mm(self, grid):
        """Distance (mm) of each voxel of ``grid`` outside the coarse region (0 inside), (z, y, x) float32."""
        outside = sitk.SignedMaurerDistanceMap(self.region, insideIsPositive=False, squaredDistance=False,
                                               useImageSpacing=True)
        distance = sitk.Resample(outside, grid.reference_image(sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear,
                                 float(1e6), sitk.sitkFloat32)
        return np.maximum(sitk.GetArrayFromImage(distance), 0.0)

    def probability_on(self, grid):
        """The coarse organ probability linearly resampled onto ``grid``, (z, y, x) float32; None when absent."""
        if self.organ_probability is None:
            return None
        resampled = sitk.Resample(self.organ_probability, grid.reference_image(sitk.sitkFloat32), sitk.Transform(),
                                  sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(resampled)


def locate(localizer, spec, tile, margin, device, images, paths, roi_margin_mm, user_boxes=()):
    """Run the localiser on the whole scan. Returns (CoarseRegion or None when it found no liver, warnings).

    ``user_boxes``: physical boxes (low, high) of the user's masks, which the box must also cover."""
    coarse = preprocessing.prepare(images, spec, paths)
    warnings = list(coarse.warnings)
    volume, crop, _ = preprocessing.crop_to_body(coarse.array, spec.window, localizer.size_multiple)
    localizer.to(device)
    liver, tumor, _ = inference.run_network(localizer, volume, device, tile, margin)
    localizer.to("cpu")
    valid = tuple(slice(0, s.stop - s.start) for s in crop)
    region = np.zeros(coarse.array.shape[1:], bool)
    region[crop] = anatomy.largest_component(anatomy.organ_mask(liver[valid], tumor[valid]))
    if not region.any():
        warnings.append("the coarse pass found no liver; the whole field of view was processed")
        return None, warnings
    spacing, origin = np.asarray(coarse.grid.spacing), np.asarray(coarse.grid.origin)
    first, last = preprocessing.nonzero_index_box(region)
    # the coarse voxels' own half-width plus a margin for what the coarse pass under-segments
    reach = spacing / 2.0 + roi_margin_mm
    low, high = origin + first * spacing - reach, origin + last * spacing + reach
    for box in user_boxes:
        if box is not None:
            low, high = np.minimum(low, box[0] - reach), np.maximum(high, box[1] + reach)
    probability = np.zeros(region.shape, np.float32)
    probability[crop] = liver[valid] + tumor[valid]
    images = []
    for array in (region.astype(np.uint8), probability):
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(coarse.grid.origin)
        image.SetSpacing(coarse.grid.spacing)
        images.append(image)
    return CoarseRegion(images[0], low, high, organ_probability=images[1]), warnings


def restrict(liver, tumor, distance_mm, reach_mm: Optional[float], voxel_ml):
    """Liver and tumor probabilities set to 0 farther than ``reach_mm`` from the coarse region; returns the maps
    and the mL of organ (liver + tumor > background) removed. ``reach_mm`` None: unchanged."""
    if reach_mm is None or distance_mm is None:
        return liver, tumor, 0.0
    beyond = distance_mm > float(reach_mm)
    removed = float((anatomy.organ_mask(liver, tumor) & beyond).sum()) * voxel_ml
    liver = np.where(beyond, 0.0, liver).astype(np.float32)
    tumor = np.where(beyond, 0.0, tumor).astype(np.float32)
    return liver, tumor, removed


def restrict_tumor(liver, tumor, distance_mm, tumor_reach_mm: Optional[float], voxel_ml):
    """Tumor probability set to 0 farther than ``tumor_reach_mm`` from the coarse region (a voxel labelled
    tumor there becomes background: its liver probability was below the tumor's, so below one half);
    returns the maps and the mL that were labelled tumor there. ``tumor_reach_mm`` None: unchanged."""
    if tumor_reach_mm is None or distance_mm is None:
        return liver, tumor, 0.0
    beyond = distance_mm > float(tumor_reach_mm)
    was_tumor = anatomy.organ_mask(liver, tumor) & (tumor > liver) & beyond
    return liver, np.where(beyond, 0.0, tumor).astype(np.float32), float(was_tumor.sum()) * voxel_ml


def fill_missed_liver(liver, tumor, coarse_probability, distance_mm, hu, spacing_xyz, voxel_ml):
    """Label as organ the thick parts of the coarse region where the coarse pass is confident
    (``FILL_CONFIDENCE``) and the fine network did not label organ, within the HU band of the fine network's
    liver. The fine network's tumor share is kept, so a lesion it saw but under-called stays tumor.
    Returns the maps and the mL added. Unchanged without a coarse probability."""
    if coarse_probability is None or distance_mm is None:
        return liver, tumor, 0.0
    organ = anatomy.organ_mask(liver, tumor)
    parenchyma = hu[organ & (liver > tumor)]
    if parenchyma.size == 0:
        return liver, tumor, 0.0
    low, high = np.percentile(parenchyma, [5.0, 99.0])
    candidate = ((coarse_probability > FILL_CONFIDENCE) & (distance_mm <= 0.0) & ~organ
                 & (hu >= low - FILL_HU_MARGIN) & (hu <= high + FILL_HU_MARGIN))
    if not candidate.any():
        return liver, tumor, 0.0
    # one voxel back into the candidate: the opening's ball rounds off the edges of what it keeps
    thick = anatomy.grown(anatomy.opened(candidate, spacing_xyz, FILL_OPENING_MM)) & candidate
    added = np.zeros_like(candidate)
    min_voxels = FILL_MIN_ML / voxel_ml
    for box, piece, count in anatomy.regions(thick):
        if count >= min_voxels:
            added[box] |= piece
    if not added.any():
        return liver, tumor, 0.0
    # just above one half for the organ, split by the fine network's tumor share
    share = tumor / np.maximum(liver + tumor, 1e-6)
    liver = np.where(added, 0.6 * (1.0 - share), liver).astype(np.float32)
    tumor = np.where(added, 0.6 * share, tumor).astype(np.float32)
    return liver, tumor, float(added.sum()) * voxel_ml

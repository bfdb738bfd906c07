"""The coarse pass: a small network finds the liver on a coarse grid of the whole scan.

Its liver region does two jobs for the main networks, which see only a few centimetres around each voxel:
it bounds the box they run on, and it bounds what they may label. The coarse network sees the whole abdomen
at once, so it tells the liver from the spleen, a bowel loop or the kidney where the fine network, looking at
a patch of similar grey, cannot; the fine network then draws the boundary within ``reach_mm`` of it.
Tumor is held closer (``tumor_reach_mm``): the fine network's commonest real-CT error is "tumor" on a
neighbour that touches the liver (the upper pole of the kidney, the gallbladder, the stomach wall), which
the organ reach alone lets through because it lies within a centimetre of the liver.
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


@dataclass
class CoarseRegion:
    """The coarse liver region (uint8 image on the coarse grid) and the physical box around it."""

    region: sitk.Image
    low: np.ndarray
    high: np.ndarray
    warnings: List[str] = field(default_factory=list)

    def distance_mm(self, grid):
        """Distance (mm) of each voxel of ``grid`` outside the coarse region (0 inside), (z, y, x) float32."""
        outside = sitk.SignedMaurerDistanceMap(self.region, insideIsPositive=False, squaredDistance=False,
                                               useImageSpacing=True)
        distance = sitk.Resample(outside, grid.reference_image(sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear,
                                 float(1e6), sitk.sitkFloat32)
        return np.maximum(sitk.GetArrayFromImage(distance), 0.0)


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
    image = sitk.GetImageFromArray(region.astype(np.uint8))
    image.SetOrigin(coarse.grid.origin)
    image.SetSpacing(coarse.grid.spacing)
    return CoarseRegion(image, low, high), warnings


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

"""Per-case segmentation scores on a case's own grid: Dice, 95th-percentile Hausdorff distance in mm and
volume error in mL."""

import numpy as np
from scipy import ndimage

from .metrics import dice


def _surface(mask):
    """Boundary voxels: in the mask with a 6-neighbour outside it (or on the array's edge)."""
    return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), border_value=0)


def hd95(prediction, reference, spacing_zyx):
    """Symmetric 95th-percentile Hausdorff distance (mm) between the surfaces of two boolean (z, y, x) arrays:
    the larger of the two directed 95th percentiles of surface-to-surface distances. 0 when both are empty,
    NaN when only one is (no distance is defined)."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if not prediction.any() and not reference.any():
        return 0.0
    if not prediction.any() or not reference.any():
        return float("nan")
    # crop to both masks (with a voxel of margin): distances to surface voxels inside the crop are exact
    # and the distance transforms run on far fewer voxels
    both = np.nonzero(prediction | reference)
    box = tuple(slice(max(int(a.min()) - 1, 0), int(a.max()) + 2) for a in both)
    prediction, reference = prediction[box], reference[box]
    surface_p, surface_r = _surface(prediction), _surface(reference)
    spacing = [float(s) for s in spacing_zyx]
    to_reference = ndimage.distance_transform_edt(~surface_r, sampling=spacing)[surface_p]
    to_prediction = ndimage.distance_transform_edt(~surface_p, sampling=spacing)[surface_r]
    return float(max(np.percentile(to_reference, 95), np.percentile(to_prediction, 95)))


def case_scores(predicted_labels, reference_labels, spacing_xyz):
    """Scores of one case from two label arrays (z, y, x; 0 background, 1 liver, 2 tumor) on the same grid;
    spacing (x, y, z) as SimpleITK gives it. "liver" is the whole organ, tumor included."""
    spacing_zyx = tuple(reversed([float(s) for s in spacing_xyz]))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    scores = {}
    for name, predicted, reference in (
            ("liver", predicted_labels >= 1, reference_labels >= 1),
            ("tumor", predicted_labels == 2, reference_labels == 2)):
        scores[name + "_dice"] = dice(predicted, reference)
        scores[name + "_hd95_mm"] = hd95(predicted, reference, spacing_zyx)
        reference_ml = float(reference.sum()) * voxel_ml
        scores[name + "_volume_ml"] = float(predicted.sum()) * voxel_ml
        scores[name + "_reference_ml"] = reference_ml
        scores[name + "_volume_error_ml"] = scores[name + "_volume_ml"] - reference_ml
    scores["has_tumor"] = bool((reference_labels == 2).any())
    return scores

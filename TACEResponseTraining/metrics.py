"""Evaluation metrics written out so their definitions are explicit and testable."""

import numpy as np
import SimpleITK as sitk

# the accuracy goal for tumor outside the liver: predicted tumor farther than this from the true liver
EXTRAHEPATIC_MARGIN_MM = 10.0
# cases whose true tumor is smaller than this are scored apart: a few voxels missed there are a Dice of 0
SMALL_TUMOR_ML = 10.0


def dice(prediction, reference):
    """Dice of two boolean arrays; 1.0 when both are empty (nothing to find, nothing found)."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    total = prediction.sum() + reference.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(prediction, reference).sum() / total)


def roc_auc(labels, scores):
    """Area under the ROC curve via the Mann-Whitney statistic (ties count one half)."""
    labels = np.asarray(labels, int)
    scores = np.asarray(scores, float)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - len(positives) * (len(positives) + 1) / 2.0) / (len(positives) * len(negatives)))


def youden_cutoff(labels, scores):
    """The score threshold maximising sensitivity + specificity - 1 (predict positive when score >= cutoff)."""
    labels = np.asarray(labels, int)
    scores = np.asarray(scores, float)
    best_j, best_cut = -1.0, 0.5
    for cut in np.unique(scores):
        predicted = scores >= cut
        sensitivity = np.mean(predicted[labels == 1]) if (labels == 1).any() else 0.0
        specificity = np.mean(~predicted[labels == 0]) if (labels == 0).any() else 0.0
        j = sensitivity + specificity - 1.0
        if j > best_j:
            best_j, best_cut = j, float(cut)
    return best_cut, float(best_j)


def extrahepatic_ml(prediction, organ, spacing_xyz, margin_mm=EXTRAHEPATIC_MARGIN_MM):
    """mL of ``prediction`` (boolean, z y x) farther than ``margin_mm`` from ``organ`` (the true liver with its
    tumors): labels in the stomach, bowel, spleen or kidney rather than a boundary a few voxels off. With no
    organ at all, everything predicted counts."""
    prediction = np.asarray(prediction, bool)
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    if not prediction.any():
        return 0.0
    organ = np.asarray(organ, bool)
    if not organ.any():
        return float(prediction.sum()) * voxel_ml
    image = sitk.GetImageFromArray(organ.astype(np.uint8))
    image.SetSpacing([float(s) for s in spacing_xyz])
    # a copy, not a view: a view of the temporary distance image would outlive its buffer
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    return float((prediction & (distance > margin_mm)).sum()) * voxel_ml

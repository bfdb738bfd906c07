"""Evaluation metrics written out so their definitions are explicit and testable."""

import numpy as np


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

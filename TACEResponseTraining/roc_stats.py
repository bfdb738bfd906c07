"""Statistics for binary response predictions: AUC with a bootstrap CI, DeLong's test for two correlated
AUCs, operating-point metrics at a cutoff, Brier score and calibration bins.

DeLong et al., Biometrics 1988;44:837-845, written with the structural components ("placements") of
Sun and Xu, IEEE Signal Process Lett 2014;21:1389-1393.
"""

import math

import numpy as np

from .metrics import roc_auc


def _clean(labels, *score_sets):
    """Cases with a known label (0/1) and a finite score in every set."""
    labels = np.asarray(labels, float)
    scores = [np.asarray(s, float) for s in score_sets]
    keep = np.isin(labels, (0.0, 1.0))
    for s in scores:
        keep &= np.isfinite(s)
    return labels[keep].astype(int), [s[keep] for s in scores]


def _placements(positives, negatives):
    """psi(X_i, Y_j) = 1 if X > Y, 1/2 if tied, else 0; returns the row means (one per positive, V10) and
    the column means (one per negative, V01)."""
    psi = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def delong_covariance(labels, *score_sets):
    """AUCs of several scores on the same cases and DeLong's covariance matrix of those AUCs."""
    labels, scores = _clean(labels, *score_sets)
    pos, neg = labels == 1, labels == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        k = len(scores)
        return np.full(k, np.nan), np.full((k, k), np.nan)
    v10, v01 = zip(*(_placements(s[pos], s[neg]) for s in scores))
    v10, v01 = np.array(v10), np.array(v01)  # (models, m) and (models, n)
    aucs = v10.mean(axis=1)
    covariance = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, covariance


def _normal_two_sided_p(z):
    return math.erfc(abs(z) / math.sqrt(2.0))


def delong_test(labels, scores_a, scores_b):
    """DeLong's test of AUC(a) = AUC(b) on paired scores: dict with both AUCs, their difference, z and the
    two-sided p. Identical rankings (zero variance of the difference, no difference) give z = 0, p = 1."""
    aucs, cov = delong_covariance(labels, scores_a, scores_b)
    labels_kept, _ = _clean(labels, scores_a, scores_b)
    out = {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": float(aucs[0] - aucs[1]),
           "cases": int(len(labels_kept)), "z": float("nan"), "p": float("nan")}
    if not np.all(np.isfinite(aucs)):
        return out
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    difference = out["difference"]
    if variance <= 1e-15:
        # no sampling variability of the difference: either no difference at all, or a degenerate case
        out["z"], out["p"] = (0.0, 1.0) if abs(difference) < 1e-12 else (math.copysign(math.inf, difference), 0.0)
        return out
    out["z"] = difference / math.sqrt(variance)
    out["p"] = _normal_two_sided_p(out["z"])
    return out


def bootstrap_auc_ci(labels, scores, n_boot=2000, level=0.95, seed=0):
    """Percentile bootstrap CI of the AUC, resampling positives and negatives separately (each replicate
    keeps the cohort's class sizes, so every replicate has an AUC)."""
    labels, (scores,) = _clean(labels, scores)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        p = positives[rng.integers(len(positives), size=len(positives))]
        q = negatives[rng.integers(len(negatives), size=len(negatives))]
        values[b] = _placements(p, q)[0].mean()
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def auc_with_ci(labels, scores, n_boot=2000, seed=0):
    labels_kept, (scores_kept,) = _clean(labels, scores)
    auc = roc_auc(labels_kept, scores_kept) if len(labels_kept) else float("nan")
    return auc, bootstrap_auc_ci(labels_kept, scores_kept, n_boot=n_boot, seed=seed)


def roc_curve(labels, scores):
    """(false positive rate, true positive rate) over all thresholds, from (0, 0) to (1, 1)."""
    labels, (scores,) = _clean(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]  # last index of each threshold
    tps = np.cumsum(labels)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(labels.sum(), 1), max(len(labels) - labels.sum(), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def operating_point(labels, scores, cutoffs):
    """Accuracy, sensitivity and specificity when ``score >= cutoff`` predicts a responder. ``cutoffs`` is
    one number or one per case (each fold's cutoff for its own held-out cases)."""
    labels = np.asarray(labels, float)
    scores = np.asarray(scores, float)
    cutoffs = np.broadcast_to(np.asarray(cutoffs, float), scores.shape)
    keep = np.isin(labels, (0.0, 1.0)) & np.isfinite(scores) & np.isfinite(cutoffs)
    truth, predicted = labels[keep] == 1, scores[keep] >= cutoffs[keep]
    tp, tn = int((truth & predicted).sum()), int((~truth & ~predicted).sum())
    fp, fn = int((~truth & predicted).sum()), int((truth & ~predicted).sum())

    def ratio(a, b):
        return a / b if b else float("nan")

    return {"accuracy": ratio(tp + tn, tp + tn + fp + fn), "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "tp": tp, "tn": tn, "fp": fp, "fn": fn}


def brier_score(labels, probabilities):
    labels, (probabilities,) = _clean(labels, probabilities)
    return float(np.mean((probabilities - labels) ** 2)) if len(labels) else float("nan")


def calibration_bins(labels, probabilities, n_bins=5):
    """Reliability diagram points: equal-count bins of predicted probability -> (mean predicted, observed
    rate, cases) per bin. Equal-count bins keep every point estimable in small cohorts."""
    labels, (probabilities,) = _clean(labels, probabilities)
    if not len(labels):
        return []
    order = np.argsort(probabilities, kind="mergesort")
    bins = [b for b in np.array_split(order, min(n_bins, len(order))) if len(b)]
    return [(float(probabilities[b].mean()), float(labels[b].mean()), int(len(b))) for b in bins]

"""AUC statistics: DeLong's test against hand-computed values, bootstrap CIs, operating points, HD95."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from TACEResponseTraining import roc_stats
from TACEResponseTraining.surface_metrics import case_scores, hd95


def test_delong_equal_scores_gives_p_one():
    labels = [1, 1, 0, 0, 1, 0, 1]
    scores = [0.9, 0.4, 0.5, 0.1, 0.7, 0.3, 0.6]
    result = roc_stats.delong_test(labels, scores, list(scores))
    assert result["z"] == 0.0 and result["p"] == 1.0
    # a monotone transform ranks identically: same AUC, p = 1
    assert roc_stats.delong_test(labels, scores, np.log(scores))["p"] == 1.0


def test_delong_hand_computed_example():
    """3 responders, 2 non-responders. Placements (psi = 1 if X > Y, 1/2 tie):
    A: positives (0.9, 0.6, 0.4) vs negatives (0.5, 0.2): V10 = (1, 1, 1/2), V01 = (2/3, 1), AUC 5/6.
    B: positives (0.7, 0.3, 0.8) vs negatives (0.6, 0.4): V10 = (1, 0, 1), V01 = (2/3, 2/3), AUC 2/3.
    S10 = [[1/12, -1/12], [-1/12, 1/3]], S01 = [[1/18, 0], [0, 0]];
    S = S10/3 + S01/2 = [[1/18, -1/36], [-1/36, 1/9]]; var(A - B) = 1/18 + 1/9 + 2/36 = 2/9;
    z = (1/6) / sqrt(2/9) = 1 / (2 sqrt 2)."""
    labels = [1, 1, 1, 0, 0]
    a = [0.9, 0.6, 0.4, 0.5, 0.2]
    b = [0.7, 0.3, 0.8, 0.6, 0.4]
    aucs, cov = roc_stats.delong_covariance(labels, a, b)
    np.testing.assert_allclose(aucs, [5 / 6, 2 / 3])
    np.testing.assert_allclose(cov, [[1 / 18, -1 / 36], [-1 / 36, 1 / 9]], atol=1e-12)
    result = roc_stats.delong_test(labels, a, b)
    z = 1 / (2 * math.sqrt(2))
    assert result["z"] == pytest.approx(z)
    assert result["p"] == pytest.approx(2 * norm.sf(z))
    assert roc_stats.delong_test(labels, b, a)["z"] == pytest.approx(-z)


def test_delong_ties_and_missing_values():
    """Ties count 1/2; cases with an unknown label or a NaN score are left out of both models."""
    labels = [1, 1, 0, 0, None, 1]
    a = [0.5, 0.7, 0.5, 0.2, 0.9, float("nan")]
    b = [0.6, 0.6, 0.6, 0.1, 0.1, 0.3]
    result = roc_stats.delong_test(labels, a, b)
    assert result["cases"] == 4
    assert result["auc_a"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert result["auc_b"] == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)


def test_auc_and_bootstrap_ci():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = labels * 0.8 + rng.normal(size=60)
    auc, (lo, hi) = roc_stats.auc_with_ci(labels, scores, n_boot=500, seed=3)
    assert auc == pytest.approx(roc_auc_score(labels, scores))
    assert lo < auc < hi and 0 <= lo and hi <= 1
    assert (lo, hi) == roc_stats.bootstrap_auc_ci(labels, scores, n_boot=500, seed=3)  # seeded


def test_roc_curve_matches_scikit_learn():
    from sklearn.metrics import auc as trapezoid_area, roc_curve

    labels = [1, 0, 1, 1, 0, 0, 1, 0]
    scores = [0.8, 0.8, 0.7, 0.3, 0.2, 0.5, 0.9, 0.1]
    fpr, tpr = roc_stats.roc_curve(labels, scores)
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert trapezoid_area(fpr, tpr) == pytest.approx(roc_stats.auc_with_ci(labels, scores, n_boot=10)[0])


def test_operating_point_with_per_case_cutoffs():
    labels = [1, 1, 0, 0, 1]
    scores = [0.6, 0.4, 0.45, 0.2, 0.9]
    cutoffs = [0.5, 0.5, 0.5, 0.1, 0.95]  # each case against its own fold's cutoff
    point = roc_stats.operating_point(labels, scores, cutoffs)
    # predicted responder: 0.6>=0.5 yes, 0.4 no, 0.45 no, 0.2>=0.1 yes, 0.9>=0.95 no
    assert (point["tp"], point["fn"], point["tn"], point["fp"]) == (1, 2, 1, 1)
    assert point["sensitivity"] == pytest.approx(1 / 3)
    assert point["specificity"] == pytest.approx(1 / 2)
    assert point["accuracy"] == pytest.approx(2 / 5)


def test_brier_and_calibration_bins():
    labels = [0, 0, 1, 1]
    p = [0.1, 0.3, 0.6, 0.8]
    assert roc_stats.brier_score(labels, p) == pytest.approx((0.01 + 0.09 + 0.16 + 0.04) / 4)
    assert roc_stats.calibration_bins(labels, p, n_bins=2) == [(0.2, 0.0, 2), (0.7, 1.0, 2)]


def test_hd95_in_millimetres_with_anisotropic_spacing():
    reference = np.zeros((20, 20, 20), bool)
    reference[5:15, 5:15, 5:15] = True
    shifted = np.roll(reference, 2, axis=0)  # two slices along z
    # every surface point of the shifted cube lies 0 or 2 slices from the reference surface (z faces)
    assert hd95(shifted, reference, (3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(shifted, reference, (1.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert hd95(reference, reference, (2.0, 1.0, 1.0)) == 0.0
    assert hd95(np.zeros_like(reference), np.zeros_like(reference), (1, 1, 1)) == 0.0
    assert math.isnan(hd95(np.zeros_like(reference), reference, (1, 1, 1)))


def test_case_scores_volume_error():
    reference = np.zeros((10, 10, 10), np.uint8)
    reference[2:8, 2:8, 2:8] = 1
    reference[4:6, 4:6, 4:6] = 2
    predicted = reference.copy()
    predicted[2:8, 2:8, 8] = 1  # 36 extra liver voxels
    scores = case_scores(predicted, reference, (1.0, 2.0, 0.5))  # x, y, z spacing: 1 mm^3 voxels
    assert scores["liver_volume_error_ml"] == pytest.approx(0.036)
    assert scores["tumor_volume_error_ml"] == 0.0 and scores["tumor_dice"] == 1.0
    assert scores["liver_hd95_mm"] == pytest.approx(1.0)  # one voxel along x: 1 mm
    assert scores["has_tumor"]

"""Regression check on prediction speed, as a ratio against the SegResNet sliding-window baseline.

Both run as whole processes on the same small phantom, one after the other, so machine load hits both;
the bound is loose (measured ratio is several times lower) so a noisy machine does not make it flake.
The absolute figures are printed for the log; benchmarks/bench_predict.py gives the full comparison.
"""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_predict import baseline, ours  # noqa: E402
from phantom import make_phantom  # noqa: E402

MAX_RATIO = 0.5


def test_prediction_is_much_faster_than_the_baseline(tmp_path):
    pytest.importorskip("monai", reason="the baseline needs MONAI (installed by the [test] extra)")
    # a field of view that fits one 224x224x144 baseline window at 1.5 mm: the cheapest honest baseline
    path = tmp_path / "small.nii.gz"
    make_phantom(path, size=(200, 200, 80), spacing=(1.6, 1.6, 2.5), seed=0)
    ours_run = ours(path, tmp_path / "ours", "demo", "cpu")
    baseline_run = baseline(path, tmp_path / "baseline", (224, 224, 144))
    assert ours_run["returncode"] == 0, ours_run["stderr_tail"]
    assert baseline_run["returncode"] == 0, baseline_run["stderr_tail"]
    ratio = ours_run["wall_s"] / baseline_run["wall_s"]
    print("ours {:.1f} s, {:.0f} MB; baseline {:.1f} s, {:.0f} MB; ratio {:.3f}".format(
        ours_run["wall_s"], ours_run["peak_rss_mb"], baseline_run["wall_s"], baseline_run["peak_rss_mb"], ratio))
    assert ratio <= MAX_RATIO
    assert ours_run["peak_rss_mb"] < baseline_run["peak_rss_mb"]

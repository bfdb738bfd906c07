"""`tace-response-train test`: the scores it writes, and the extrahepatic-tumor measure behind the issue's goal."""

import csv
import json

import numpy as np
import pytest

from TACEResponseLib.errors import InputError
from TACEResponseTraining import metrics, phantoms
from TACEResponseTraining.evaluate_cases import test_model as run_test

SHAPE = (40, 60, 80)  # z, y, x


def test_extrahepatic_counts_only_what_lies_beyond_the_margin():
    organ = np.zeros(SHAPE, bool)
    organ[:, :, 10:31] = True  # a slab: distances from it run along x only
    tumor = np.zeros(SHAPE, bool)
    tumor[:, :, 31:41] = True  # column 31 + k lies (k + 1) voxels from the organ
    column = SHAPE[0] * SHAPE[1]
    # 2 mm voxels: more than 10 mm away from column 36 on (5 columns); 5 mm voxels along x: from column 33 on
    assert metrics.extrahepatic_ml(tumor, organ, (2.0, 2.0, 2.0)) == pytest.approx(5 * column * 0.008)
    assert metrics.extrahepatic_ml(tumor, organ, (5.0, 2.0, 2.0)) == pytest.approx(8 * column * 0.02)
    assert metrics.extrahepatic_ml(tumor, organ, (2.0, 2.0, 2.0), margin_mm=30.0) == 0.0
    assert metrics.extrahepatic_ml(tumor | organ, organ, (2.0, 2.0, 2.0)) == pytest.approx(5 * column * 0.008)
    # no true liver at all: every predicted tumor voxel is outside it; nothing predicted: nothing outside
    assert metrics.extrahepatic_ml(tumor, np.zeros(SHAPE, bool), (2.0, 2.0, 2.0)) == pytest.approx(
        tumor.sum() * 0.008)
    assert metrics.extrahepatic_ml(np.zeros(SHAPE, bool), organ, (2.0, 2.0, 2.0)) == 0.0


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "synth"
    phantoms.generate_cohort(out, 3, seed=6, workers=1, size_scale=3.0)
    return out


def test_the_test_command_writes_consistent_scores(small_cohort, random_model, tmp_path):
    summary = run_test(str(random_model.folder), small_cohort, tmp_path / "scores", log=lambda *a: None)
    written = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(summary))
    with open(str(tmp_path / "scores" / "per_case.csv"), newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == summary["cases"] == 3
    extrahepatic = [float(r["extrahepatic_tumor_ml"]) for r in rows]
    assert summary["extrahepatic_tumor_ml_max"] == pytest.approx(max(extrahepatic))
    assert summary["liver_dice_min"] == pytest.approx(min(float(r["liver_dice"]) for r in rows))
    with_tumor = [r for r in rows if r["has_tumor"] == "True"]
    assert summary["tumor_dice_cases_10ml_or_more"] + summary["tumor_dice_cases_under_10ml"] == len(with_tumor)
    for r in with_tumor:
        assert float(r["true_tumor_ml"]) > 0
    with pytest.raises(InputError, match="not empty"):
        run_test(str(random_model.folder), small_cohort, tmp_path / "scores", log=lambda *a: None)

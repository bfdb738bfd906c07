"""Tests of the synthetic cohort generator (small grids: size_scale=3)."""
import csv
import json
import math
import os

import numpy as np
import pytest
import SimpleITK as sitk

from TACEResponseTraining import phantoms as synth
from TACEResponseTraining.phantoms import acquisition  # noqa: F401  (monkeypatched below)
from TACEResponseTraining.metrics import roc_auc
from TACEResponseTraining.phantoms import outcome as rm

SCALE = 3.0
SEED = 6  # with 7 cases: one lesion-free case, responders and non-responders
N_CASES = 7
PHASES = ("arterial", "portal_venous")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "cohort"
    calls = []
    info = synth.generate_cohort(
        out, N_CASES, seed=SEED, phases=PHASES, workers=1, size_scale=SCALE, progress=lambda d, t: calls.append((d, t))
    )
    return out, info, calls


def _read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _physical_points(img, mask):
    """Physical LPS coordinates (N,3) of the voxels where mask (z,y,x) is set."""
    idx = np.argwhere(mask)[:, ::-1].astype(float)  # -> (i, j, k)
    D = np.array(img.GetDirection()).reshape(3, 3)
    return np.array(img.GetOrigin()) + (idx * np.array(img.GetSpacing())) @ D.T


def test_same_seed_identical_arrays():
    a = synth.generate_case(synth.case_rng(7, 2), "a", size_scale=SCALE)
    b = synth.generate_case(synth.case_rng(7, 2), "b", size_scale=SCALE)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.images["portal_venous"]), sitk.GetArrayFromImage(b.images["portal_venous"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.label), sitk.GetArrayFromImage(b.label))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.context), sitk.GetArrayFromImage(b.context))
    assert a.lesions == b.lesions and a.os_time == b.os_time and a.meta == b.meta
    c = synth.generate_case(synth.case_rng(8, 2), "c", size_scale=SCALE)
    assert c.meta != a.meta


def test_phase_list_does_not_change_pv_image():
    a = synth.generate_case(synth.case_rng(1, 0), "a", phases=("portal_venous",), size_scale=SCALE)
    b = synth.generate_case(synth.case_rng(1, 0), "b", phases=PHASES, size_scale=SCALE)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.images["portal_venous"]), sitk.GetArrayFromImage(b.images["portal_venous"]))


def test_workers_match_serial_and_n_cases(cohort, tmp_path):
    out1, info1, _ = cohort
    out2 = tmp_path / "par"
    info2 = synth.generate_cohort(out2, 3, seed=SEED, phases=PHASES, workers=2, size_scale=SCALE)
    cols1, rows1 = _read_csv(out1 / "dataset.csv")
    cols2, rows2 = _read_csv(out2 / "dataset.csv")
    assert cols1 == cols2 and rows2 == rows1[:3]
    for row in rows2:
        for key in ("image_arterial", "image_portal_venous", "label", "context_label"):
            np.testing.assert_array_equal(_arr(out1 / row[key]), _arr(out2 / row[key]))
        cid = row["case_id"]
        assert info2["true_probability"][cid] == info1["true_probability"][cid]


def test_files_and_geometry(cohort):
    out, info, calls = cohort
    assert calls[-1] == (N_CASES, N_CASES) and len(calls) == N_CASES
    cols, rows = _read_csv(out / "dataset.csv")
    assert cols == [
        "case_id", "image_arterial", "image_portal_venous", "label", "context_label", "response", "os_time", "os_event",
        "ttp_time", "ttp_event", "age", "sex", "afp", "bclc", "child_pugh", "tumor_count", "max_diameter_mm",
    ]
    assert [r["case_id"] for r in rows] == [f"synth_{i:04d}" for i in range(N_CASES)]
    for r in rows:
        lab = sitk.ReadImage(str(out / r["label"]))
        assert lab.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayViewFromImage(lab))) <= {0, 1, 2}
        context = sitk.ReadImage(str(out / r["context_label"]))
        assert context.GetPixelID() == sitk.sitkUInt8 and context.GetSize() == lab.GetSize()
        assert set(np.unique(sitk.GetArrayViewFromImage(context))) <= set(range(len(synth.CONTEXT_NAMES) + 1))
        # a voxel is liver/tumour or a neighbouring organ, never both
        assert not ((sitk.GetArrayViewFromImage(context) > 0) & (sitk.GetArrayViewFromImage(lab) > 0)).any()
        for ph in PHASES:
            rel = r[f"image_{ph}"]
            assert "\\" not in rel and not os.path.isabs(rel)
            img = sitk.ReadImage(str(out / rel))
            assert img.GetPixelID() == sitk.sitkInt16
            assert img.GetSize() == lab.GetSize()
            np.testing.assert_allclose(img.GetOrigin(), lab.GetOrigin(), atol=1e-6)
            np.testing.assert_allclose(img.GetSpacing(), lab.GetSpacing(), atol=1e-9)
            np.testing.assert_allclose(img.GetDirection(), lab.GetDirection(), atol=1e-9)
        assert float(r["ttp_time"]) <= float(r["os_time"])
        assert r["os_event"] in ("0", "1") and r["ttp_event"] in ("0", "1")
        assert 45 <= int(r["age"]) <= 85 and r["sex"] in ("M", "F")
        assert r["bclc"] in ("A", "B", "C") and r["child_pugh"] in ("A", "B") and float(r["afp"]) >= 1
        case = info["cases"][r["case_id"]]
        assert int(r["tumor_count"]) == len(case["lesions"])
    with open(out / "cohort.json") as fh:
        assert json.load(fh) == info
    assert info["generator"] == synth.GENERATOR_NAME and info["seed"] == SEED and info["phases"] == list(PHASES)
    assert info["coefficients"] == rm.COEFFICIENTS


def test_zero_lesion_cases_have_unknown_response(cohort):
    out, info, _ = cohort
    _, rows = _read_csv(out / "dataset.csv")
    empty = [r for r in rows if r["tumor_count"] == "0"]
    assert empty, "fixture seed should contain a lesion-free case"
    for r in rows:
        if r["tumor_count"] == "0":
            assert r["response"] == "" and info["true_probability"][r["case_id"]] is None
            assert not (_arr(out / r["label"]) == 2).any()
        else:
            assert r["response"] in ("0", "1") and 0 < info["true_probability"][r["case_id"]] < 1


def test_bayes_auc_matches_sklearn(cohort):
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    out, info, _ = cohort
    _, rows = _read_csv(out / "dataset.csv")
    known = [r for r in rows if r["response"] != ""]
    y = [int(r["response"]) for r in known]
    p = [info["true_probability"][r["case_id"]] for r in known]
    assert 0 < sum(y) < len(y), "fixture seed should contain both classes"
    assert info["bayes_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert info["responder_rate"] == pytest.approx(np.mean(y))
    rng = np.random.default_rng(0)
    yy = rng.integers(0, 2, 300)
    ss = np.round(rng.random(300), 1)  # many ties
    assert roc_auc(yy, ss) == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)


def test_liver_and_tumour_hu(cohort):
    out, info, _ = cohort
    _, rows = _read_csv(out / "dataset.csv")
    checked = 0
    for r in rows:
        lab = _arr(out / r["label"])
        pv = _arr(out / r["image_portal_venous"]).astype(float)
        art = _arr(out / r["image_arterial"]).astype(float)
        case = info["cases"][r["case_id"]]
        liver_hu = case["meta"]["liver_hu"]
        assert 40 <= liver_hu["native"] <= 70 and liver_hu["native"] < liver_hu["portal_venous"] <= 160
        assert 30 <= pv[lab == 1].mean() <= 200
        factor = {"hypo": 1.0, "iso": 0.2, "hyper": -0.6, "infiltrative": 0.3}
        for les in case["lesions"]:  # documented enhancement model
            v = les["vascularity"]
            washout = (12 + 38 * v) * factor[les["density"]]
            assert les["hu"]["portal_venous"] == pytest.approx(liver_hu["portal_venous"] - washout, abs=0.02)
            assert les["hu"]["arterial"] == pytest.approx(liver_hu["arterial"] + 30 + 90 * v, abs=0.02)
            # the label's edge is one the image shows: iso-dense lesions by their capsule, infiltrative
            # ones without a dark core inside near-liver tissue
            if les["density"] == "iso":
                assert les["capsule"]
            if les["density"] == "infiltrative":
                assert les["necrosis_fraction"] == 0.0 and not les["capsule"]


def test_hypodense_lesions_wash_out_in_the_image():
    """In portal venous timing a hypodense lesion is darker than the liver, and a hypervascular one brighter in
    the arterial phase: read from the rendered images, not from the tables."""
    checked = 0
    for i in range(40):
        res = synth.generate_case(synth.case_rng(5, i), "x", phases=PHASES, size_scale=SCALE)
        lab = sitk.GetArrayViewFromImage(res.label)
        voxel_ml = np.prod(res.meta["spacing"]) / 1000
        if (lab == 2).sum() * voxel_ml < 10 or res.meta["contrast_timing"] != [0.0, 1.0] \
                or any(les["density"] != "hypo" for les in res.lesions):
            continue  # tiny lesions are dominated by partial volume at this scale; other timings differ
        pv = sitk.GetArrayViewFromImage(res.images["portal_venous"]).astype(float)
        art = sitk.GetArrayViewFromImage(res.images["arterial"]).astype(float)
        assert np.median(pv[lab == 2]) < np.median(pv[lab == 1])
        f = res.features
        if f["vascularity_w"] > 0.5 and f["necrosis_w"] < 0.3:  # arterial hyper-enhancement
            assert np.median(art[lab == 2]) > np.median(art[lab == 1])
        checked += 1
        if checked == 3:
            break
    assert checked >= 2


def _centroid_mm(img, mask):
    return _physical_points(img, mask).mean(axis=0)


def test_context_organs_sit_where_anatomy_puts_them():
    """Spleen on the patient's left and posterior, kidneys beside the spine and behind the liver's centre,
    heart above the liver; stomach and bowel hold gas or contents; reproducible from the seed."""
    seen = set()
    for i in range(6):
        res = synth.generate_case(synth.case_rng(31, i), "x", size_scale=2.0)
        img = res.images["portal_venous"]
        ctx = sitk.GetArrayViewFromImage(res.context)
        lab = sitk.GetArrayViewFromImage(res.label)
        hu = sitk.GetArrayViewFromImage(img)
        liver = _centroid_mm(img, lab > 0)
        names = {name: k + 1 for k, name in enumerate(synth.CONTEXT_NAMES)}
        if (ctx == names["spleen"]).sum() > 50:
            spleen = _centroid_mm(img, ctx == names["spleen"])
            assert spleen[0] > liver[0] + 60  # LPS: +x is the patient's left
            seen.add("spleen")
        if (ctx == names["kidney"]).sum() > 50:
            kidney = _physical_points(img, ctx == names["kidney"])
            assert (kidney[:, 0] < liver[0] + 40).any() and (kidney[:, 0] > liver[0] + 80).any()  # both sides
            seen.add("kidney")
        if (ctx == names["heart"]).sum() > 50:
            assert _centroid_mm(img, ctx == names["heart"])[2] > liver[2]
            seen.add("heart")
        gi = ctx == names["stomach_bowel"]
        if gi.sum() > 50:
            seen.add("stomach_bowel")
            assert (hu[gi] < -400).any() or (hu[gi] > 120).any() or hu[gi].std() > 10  # gas, contrast or contents
        assert not ((ctx > 0) & (lab > 0)).any()
    assert {"spleen", "kidney", "stomach_bowel"} <= seen


def test_appearance_randomisation_moves_neighbours_but_keeps_the_liver_contrast():
    from TACEResponseTraining.phantoms import appearance, tissues

    moved = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        hu = appearance._sample_tissue_hu(rng)
        out = appearance._randomise_appearance(rng, hu)
        np.testing.assert_array_equal(out[:, tissues.LIVER], hu[:, tissues.LIVER])
        moved += int(not np.array_equal(out[:, tissues.SPLEEN], hu[:, tissues.SPLEEN]))
    assert 5 <= moved <= 35  # about half the cases, and not all


def test_thick_slices_are_rendered_as_centred_sub_slices():
    """Partial volume: a 5 mm slice averages 4 sub-slices whose centre is the slice's centre."""
    from TACEResponseTraining.phantoms import acquisition

    n = np.array([10, 12, 7])
    spacing = np.array([0.8, 0.8, 5.0])
    grid = {"kind": "identity", "sub": 4, "spacing": spacing, "size": n, "direction": np.eye(3),
            "center": np.array([1.0, 2.0, 3.0]), "p0": np.zeros(3)}
    axes, _ = acquisition._render_axes(grid)
    zs = axes[2]
    assert len(zs) == 7 * 4
    slice_centres = grid["center"][2] - spacing[2] * (n[2] - 1) / 2 + spacing[2] * np.arange(n[2])
    np.testing.assert_allclose(zs.reshape(7, 4).mean(axis=1), slice_centres, atol=1e-9)
    np.testing.assert_allclose(np.diff(zs), 1.25, atol=1e-9)


@pytest.mark.parametrize("kind", ["flip", "oblique"])
def test_liver_on_patient_right_in_physical_space(monkeypatch, kind):
    monkeypatch.setattr(synth.acquisition, "_ORIENTATION_WEIGHTS", {"identity": 0.0, "flip": 0.0, "oblique": 0.0, kind: 1.0})
    directions = set()
    for i in range(3):
        res = synth.generate_case(synth.case_rng(21, i), "x", size_scale=SCALE)
        img = res.images["portal_venous"]
        D = np.array(img.GetDirection()).reshape(3, 3)
        directions.add(tuple(np.round(D.ravel(), 6)))
        if kind == "flip":
            assert np.allclose(np.abs(D), np.eye(3)) and (np.diag(D) < 0).any()
        else:
            assert not np.allclose(np.abs(D), np.eye(3)) and np.allclose(D @ D.T, np.eye(3), atol=1e-9)
        hu = sitk.GetArrayViewFromImage(img)
        lab = sitk.GetArrayViewFromImage(res.label)
        liver = _physical_points(img, lab > 0)
        body = _physical_points(img, hu > -500)
        assert liver[:, 0].mean() < body[:, 0].mean() - 10  # patient right is -x in LPS
        assert liver[:, 1].mean() < body[:, 1].max() - 40  # not lying at the back wall
    assert len(directions) >= 1


def test_outcome_model_properties():
    rng = np.random.default_rng(0)
    feats = rm.case_features(
        [{"volume_ml": 20.0, "vascularity": 0.9, "necrosis_fraction": 0.1, "capsule": True}]
    )
    assert rm.response_probability(feats) > 0.5
    none = rm.case_features([])
    assert math.isnan(rm.response_probability(none))
    for _ in range(200):
        clin = rm.draw_clinical(rng, feats, 30.0)
        o = rm.draw_outcomes(rng, feats, clin)
        assert 0 < o["ttp_time"] <= o["os_time"] <= 260
        assert o["response"] in (0, 1)


def test_refuses_non_empty_output(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        synth.generate_cohort(tmp_path, 1, size_scale=SCALE)
    assert os.listdir(tmp_path) == ["keep.txt"]
    with pytest.raises(ValueError):
        synth.generate_cohort(tmp_path / "keep.txt", 1, size_scale=SCALE)
    with pytest.raises(ValueError):
        synth.generate_cohort(tmp_path / "new", 1, phases=("delayed",), size_scale=SCALE)


def _case_parts(seed, index, size_scale):
    """The anatomy, organs and render grid that ``generate_case`` draws for this case (same streams)."""
    from TACEResponseTraining.phantoms import anatomy

    seeds = synth.case_rng(seed, index).integers(0, 2**32, size=(5, 4))
    r_anat, r_grid = (np.random.default_rng([int(x) for x in s]) for s in seeds[:2])
    A = anatomy._sample_anatomy(r_anat)
    liver = anatomy._build_liver(r_anat, A)
    O = anatomy._sample_organs(r_anat, A, liver)
    return A, liver, O, synth.acquisition._sample_grid(r_grid, A, liver, size_scale)


def test_porta_hepatis_and_fissure_are_fat_clefts_labelled_background():
    """The portal trunk runs from the hilum through fat at portal-vein HU and is background, as are the porta's
    fat and the fissure of the ligamentum teres: no liver class is painted inside either cleft."""
    from TACEResponseTraining.phantoms import appearance, lesions, render, tissues
    from TACEResponseTraining.phantoms.geometry import _blob_rho

    assert tissues.LABEL_LUT[tissues.PORTAL_TRUNK] == 0 and tissues.CONTEXT_LUT[tissues.PORTAL_TRUNK] == 0
    trunk_hu, trunk_labels, fissures = [], [], 0
    for i in range(3):
        A, liver, O, grid = _case_parts(41, i, 2.0)
        les = lesions._place_lesions(np.random.default_rng(0), A, liver, grid["z_window"])
        axes, _ = synth.acquisition._render_axes(grid)
        cls, _ = render._render_classes(A, O, liver, les, axes)
        liver_classes = np.isin(cls, [tissues.LIVER, tissues.PORTAL, tissues.HEPATIC])
        for cleft in (O["porta"], O["fissure"]):
            if cleft is None:
                continue
            inside = _blob_rho(axes[0], axes[1], axes[2], cleft) < 1
            assert inside.any() and not (inside & liver_classes).any()
            fissures += cleft is O["fissure"]
        assert (cls == tissues.PORTAL_TRUNK).sum() > 0
        # the generated case: sample the trunk's centre line where it runs outside the liver
        res = synth.generate_case(synth.case_rng(41, i), "x", size_scale=2.0)
        image, label = res.images["portal_venous"], res.label
        a, b, ra, _ = O["portal_trunk"][0]
        portal_hu = appearance._phase_lut(A, [], "portal_venous")[tissues.PORTAL]
        for t in np.linspace(0.0, 1.0, 40):
            p = a + t * (b - a)
            index = np.round((p - liver["origin"]) / liver["spacing"]).astype(int)[::-1]
            if np.any(index < 0) or np.any(index >= liver["outside"].shape) or liver["outside"][tuple(index)] < ra + 3:
                continue
            k = image.TransformPhysicalPointToIndex([float(x) for x in p + grid["p0"]])
            if all(0 <= k[d] < image.GetSize()[d] for d in range(3)):
                trunk_hu.append(image.GetPixel(k) - portal_hu)
                trunk_labels.append(label.GetPixel(k))
    assert fissures >= 1
    assert len(trunk_labels) >= 10 and set(trunk_labels) == {0}
    assert abs(float(np.median(trunk_hu))) < 30  # the portal vein's own HU, not fat's


def _spherical_liver(radius_mm=90.0, h=4.0):
    """The parts of an anatomy's liver that lesion placement reads, for a sphere at the origin."""
    axis = np.arange(-radius_mm - 2 * h, radius_mm + 2 * h + 1e-6, h)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    field = (radius_mm - np.sqrt(x**2 + y**2 + z**2)).astype(np.float32)
    inside = field > 0
    return {"field": field, "origin": np.full(3, axis[0]), "spacing": h,
            "cells": np.stack([x[inside], y[inside], z[inside]], axis=1), "cell_depth": field[inside]}


def test_every_labelled_lesion_edge_is_visible_in_the_portal_venous_phase():
    """Generator 2.2.0: viable hypo-dense tumour washes out at least 12 HU, iso-dense lesions have their
    capsule, infiltrative ones no necrotic core inside near-liver tissue (drawn over many lesions)."""
    from TACEResponseTraining.phantoms.lesions import _place_lesions
    from TACEResponseTraining.phantoms.tissues import LIVER

    liver = _spherical_liver()
    appearance = {"hu": np.zeros((3, 256))}
    appearance["hu"][:, LIVER] = (55.0, 75.0, 110.0)
    seen = {"hypo": 0, "iso": 0, "hyper": 0, "infiltrative": 0}
    for seed in range(60):
        for les in _place_lesions(np.random.default_rng(seed), appearance, liver, (-90.0, 90.0)):
            seen[les["density"]] += 1
            washout = 110.0 - les["hu"]["portal_venous"]
            if les["density"] == "hypo":
                assert 12.0 <= washout <= 50.0
            if les["density"] == "iso":
                assert les["capsule"] and 0.0 < washout <= 10.0
            if les["density"] == "infiltrative":
                assert les["necrosis_fraction"] == 0.0 and not les["capsule"]
    assert min(seen.values()) >= 5, seen  # every kind was drawn often enough to be checked

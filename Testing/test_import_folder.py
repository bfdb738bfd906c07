"""`tace-response-train import-folder`: images, label maps and a table -> dataset (synthetic SimpleITK volumes)."""

import csv
import json
import math
import os

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom_ct
from TACEResponseTraining.cli import main
from TACEResponseTraining.dataset import read_dataset
from TACEResponseTraining.import_folder import map_labels, match_files, parse_label_map, response_value

SIZE = (40, 36, 24)


def _case(seed, direction=None, values=(1, 2)):
    """A small phantom CT and its label map (liver, tumor -> ``values``), optionally re-oriented."""
    image, label = phantom_ct(size=SIZE, spacing=(4.0, 4.0, 5.0), origin=(-80.0, -70.0, -60.0), seed=seed)
    array = sitk.GetArrayFromImage(label)
    mapped = np.zeros_like(array)
    mapped[array == 1], mapped[array == 2] = values
    out = sitk.GetImageFromArray(mapped)
    out.CopyInformation(label)
    if direction is not None:
        for im in (image, out):
            im.SetDirection(direction)
    return image, out


def _rotation_z(degrees):
    a = math.radians(degrees)
    return (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)


@pytest.fixture()
def source(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    cases = {}
    # identity, NIfTI, labels 1/2
    cases["case1"] = _case(1)
    sitk.WriteImage(cases["case1"][0], str(images / "case1.nii.gz"))
    sitk.WriteImage(cases["case1"][1], str(labels / "case1.nii.gz"))
    # flipped axes, NRRD, labels 5 (liver) / 7 (tumor) and an extra organ 9; the id case1 is a prefix of case10
    image, label = _case(2, direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0), values=(5, 7))
    array = sitk.GetArrayFromImage(label)
    array[:3] = np.where(array[:3] == 0, 9, array[:3])
    extra = sitk.GetImageFromArray(array)
    extra.CopyInformation(label)
    cases["case10"] = (image, extra)
    sitk.WriteImage(image, str(images / "case10_ct.nrrd"))
    sitk.WriteImage(extra, str(labels / "case10_seg.nrrd"))
    # oblique (30 degrees about z), MetaImage
    cases["case2"] = _case(3, direction=_rotation_z(30))
    sitk.WriteImage(cases["case2"][0], str(images / "case2.mha"))
    sitk.WriteImage(cases["case2"][1], str(labels / "case2_label.nii.gz"))
    # label drawn on another grid (origin 5 mm off)
    image, label = _case(4)
    label.SetOrigin((-75.0, -70.0, -60.0))
    sitk.WriteImage(image, str(images / "case3.nii.gz"))
    sitk.WriteImage(label, str(labels / "case3.nii.gz"))
    sitk.WriteImage(image, str(images / "stray_volume.nii.gz"))  # matches no row
    table = tmp_path / "table.csv"
    with open(table, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["case_id", "outcome", "survival_weeks", "died", "ttp_time", "ttp_event", "age", "chemo"])
        writer.writerow(["case1", "1", "50.5", "1", "20", "1", "61", "NA"])
        writer.writerow(["case10", "SD", "70", "0", "", "", "72.0", "doxorubicin"])
        writer.writerow(["case2", "maybe", "30", "1", "12", "1", "55", ""])
        writer.writerow(["case3", "0", "10", "1", "5", "1", "49", ""])
        writer.writerow(["case4", "1", "10", "1", "5", "1", "49", ""])  # no files
    return {"images": images, "labels": labels, "table": table, "cases": cases, "root": tmp_path}


def _run(argv, capfd):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def _args(src, out, *extra):
    return ["import-folder", "--images", src["images"], "--labels", src["labels"], "--table", src["table"], "-o", out,
            "--response-column", "outcome", "--os-columns", "survival_weeks,died",
            "--label-map", "1=1,2=2,5=1,7=2"] + list(extra)


def test_import_folder_preserves_geometry_and_maps_labels(source, tmp_path, capfd):
    out = tmp_path / "dataset"
    code, stdout, err = _run(_args(source, out), capfd)
    assert code == 0, err
    assert "imported 3 case(s)" in stdout
    with open(out / "dataset.csv", newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        header = reader.fieldnames
        rows = {row["case_id"]: row for row in reader}
    assert header == ["case_id", "image_portal_venous", "label", "response", "os_time", "os_event", "ttp_time",
                      "ttp_event", "age", "chemo"]
    assert sorted(rows) == ["case1", "case10", "case2"]
    for case, (image, label) in source["cases"].items():
        if case not in rows:
            continue
        got_image = sitk.ReadImage(str(out / rows[case]["image_portal_venous"]))
        got_label = sitk.ReadImage(str(out / rows[case]["label"]))
        for got in (got_image, got_label):
            assert got.GetSize() == image.GetSize()
            assert np.allclose(got.GetOrigin(), image.GetOrigin(), atol=1e-4)
            assert np.allclose(got.GetSpacing(), image.GetSpacing(), atol=1e-6)
            assert np.allclose(got.GetDirection(), image.GetDirection(), atol=1e-6)  # flipped / oblique kept
        assert np.array_equal(sitk.GetArrayFromImage(got_image), sitk.GetArrayFromImage(image))
        source_labels = sitk.GetArrayFromImage(label)
        expected = np.select([np.isin(source_labels, (1, 5)), np.isin(source_labels, (2, 7))], [1, 2], 0)
        assert np.array_equal(sitk.GetArrayFromImage(got_label), expected)
        assert got_label.GetPixelID() == sitk.sitkUInt8
    assert (rows["case1"]["response"], rows["case10"]["response"], rows["case2"]["response"]) == ("1", "0", "")
    assert (rows["case1"]["os_time"], rows["case1"]["os_event"], rows["case1"]["ttp_time"]) == ("50.5", "1", "20")
    assert rows["case1"]["chemo"] == "" and rows["case10"]["age"] == "72"
    report = json.loads((out / "import_report.json").read_text())
    problems = {p["case"]: p["problem"] for p in report["problems"]}
    assert "label grid differs" in problems["case3"] and "origin" in problems["case3"]
    assert "no image file" in problems["case4"]
    assert "maybe" in problems["case2"]
    notes = " ".join(n["note"] for n in report["notes"])
    assert "stray_volume.nii.gz" in notes and "values 9" in notes
    records = read_dataset(out, ["portal_venous"])
    assert [r.response for r in records] == [1, 0, None]


def test_multi_phase_by_name_or_channel_number(tmp_path, capfd):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    art, label = _case(5)
    pv = sitk.Cast(art, sitk.sitkInt16) + 30
    sitk.WriteImage(art, str(images / "A_0000.nii.gz"))
    sitk.WriteImage(pv, str(images / "A_0001.nii.gz"))
    sitk.WriteImage(art, str(images / "B_arterial.nrrd"))
    sitk.WriteImage(pv, str(images / "B_portal_venous.nrrd"))
    for case in "AB":
        sitk.WriteImage(label, str(labels / "{}.nii.gz".format(case)))
    table = tmp_path / "t.csv"
    table.write_text("id,response\nA,1\nB,0\n")
    out = tmp_path / "ds"
    code, _, err = _run(["import-folder", "--images", images, "--labels", labels, "--table", table, "-o", out,
                         "--id-column", "id", "--phases", "arterial,portal_venous"], capfd)
    assert code == 0, err
    records = read_dataset(out, ["arterial", "portal_venous"])
    for record in records:
        arterial, portal = (sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in record.images)
        assert np.array_equal(portal.astype(int) - arterial.astype(int), np.full(arterial.shape, 30))
    assert [r.response for r in records] == [1, 0]


def test_unmapped_label_values_are_a_case_problem(source, tmp_path, capfd):
    out = tmp_path / "dataset"
    code, _, err = _run(["import-folder", "--images", source["images"], "--labels", source["labels"], "--table",
                         source["table"], "-o", out, "--response-column", "outcome"], capfd)
    assert code == 0, err
    report = json.loads((out / "import_report.json").read_text())
    problems = {p["case"]: p["problem"] for p in report["problems"]}
    assert "--label-map" in problems["case10"] and "5, 7, 9" in problems["case10"]
    assert report["imported"] == 2


def test_errors_are_one_line(source, tmp_path, capfd):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("keep")
    cases = [
        (_args(source, taken), "not empty"),
        (_args(source, tmp_path / "a", "--label-map", "1=3"), "must be 0 (background), 1 (liver) or 2 (tumor)"),
        (["import-folder", "--images", tmp_path / "nope", "--labels", source["labels"], "--table", source["table"],
          "-o", tmp_path / "b"], "does not exist"),
        (["import-folder", "--images", source["images"], "--labels", source["labels"], "--table", source["table"],
          "-o", tmp_path / "c", "--id-column", "patient"], "no column 'patient'"),
        (["import-folder", "--images", source["images"], "--labels", source["labels"], "--table", source["table"],
          "-o", tmp_path / "d", "--response-column", "resp"], "no response column 'resp'"),
    ]
    for argv, fragment in cases:
        code, _, err = _run(argv, capfd)
        assert code == 2, argv
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and fragment in last and "Traceback" not in err, err
    assert os.listdir(taken) == ["x"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_nothing_importable_writes_nothing(tmp_path, capfd):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    (tmp_path / "t.csv").write_text("case_id\nonly\n")
    code, _, err = _run(["import-folder", "--images", images, "--labels", labels, "--table", tmp_path / "t.csv",
                         "-o", tmp_path / "out"], capfd)
    assert code == 2 and "no case could be imported" in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_units():
    matched, unmatched = match_files_for(["case1.nii.gz", "case10_ct.nrrd", "case1_0001.nii", "x.txt", "other.mha"],
                                         ["case1", "case10"])
    assert matched == {"case1": ["case1.nii.gz", "case1_0001.nii"], "case10": ["case10_ct.nrrd"]}
    assert unmatched == ["other.mha"]
    assert parse_label_map("1=1, 2=2,5=1") == {1: 1, 2: 2, 5: 1}
    array, dropped = map_labels(np.array([0, 1, 2, 5, 9]), {1: 1, 2: 2, 5: 1}, True)
    assert array.tolist() == [0, 1, 2, 1, 0] and dropped == [9]
    with pytest.raises(ValueError, match="non-integer"):
        map_labels(np.array([0.0, 0.5]), {1: 1}, True)
    assert [response_value(v) for v in ("1", "0", "1.0", "CR", "pd", "", "NA", "yes")] == [
        "1", "0", "1", "1", "0", "", "", "1"]
    with pytest.raises(ValueError):
        response_value("2")


def match_files_for(names, ids):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            open(os.path.join(tmp, name), "w").close()
        matched, unmatched = match_files(tmp, ids)
        return {k: sorted(os.path.basename(p) for p, _ in v) for k, v in matched.items()}, unmatched

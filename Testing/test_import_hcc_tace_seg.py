"""`tace-response-train import-hcc-tace-seg` on a small NBIA-layout download built from the real HCC_048 series.

The fixture (hcc_tace_seg_fixture.py) draws known masks into a DICOM-SEG, stores two acquisitions in one series
folder, a 5 mm native series, a patient without SEG, a broken file and a spreadsheet patient without images.
"""

import csv
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import HCC_048, require
from TACEResponseLib.errors import InputError
from TACEResponseTraining import clinical_table, dicom_seg
from TACEResponseTraining import import_hcc_tace_seg as hcc
from TACEResponseTraining.cli import main
from TACEResponseTraining.dataset import read_dataset

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")
pytest.importorskip("openpyxl")

import hcc_tace_seg_fixture as fixture  # noqa: E402  (needs pydicom/highdicom)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    source = require(HCC_048)
    return fixture.build(tmp_path_factory.mktemp("tcia"), source)


def _run(argv, capfd):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def _import(collection, tmp_path_factory, name, *options):
    """Run the importer on the fixture collection into a fresh folder; (exit code, output folder)."""
    out = tmp_path_factory.mktemp("runs") / name
    code = main(["import-hcc-tace-seg", "--tcia-dir", str(collection["tcia_dir"]), "--clinical",
                 str(collection["clinical"]), "-o", str(out)] + list(options))
    return code, out


@pytest.fixture(scope="module")
def three_phase(collection, tmp_path_factory):
    """Majority response, three phases: HCC_048 imported; HCC_051 lacks an arterial phase."""
    return _import(collection, tmp_path_factory, "three", "--phases", "portal_venous,arterial,native")


@pytest.fixture(scope="module")
def reader2(collection, tmp_path_factory):
    """Reader 2, portal venous only: HCC_048 and HCC_051 imported."""
    return _import(collection, tmp_path_factory, "reader2", "--reader", "2")


def _rows(out):
    with open(os.path.join(out, "dataset.csv"), newline="", encoding="utf-8") as stream:
        return {row["case_id"]: row for row in csv.DictReader(stream)}


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _assert_same_geometry(image, reference):
    assert image.GetSize() == reference.GetSize()
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


def test_label_is_voxel_exact_on_the_ct_grid(collection, three_phase):
    code, out = three_phase
    assert code == 0
    row = _rows(out)["HCC_048"]
    label = sitk.ReadImage(str(out / row["label"]))
    _assert_same_geometry(label, collection["ct"])
    expected = collection["labels_048"]
    got = sitk.GetArrayFromImage(label)
    assert got.dtype == np.uint8
    # liver and mass as drawn; where they overlap the tumor wins; portal vein and aorta are not labelled
    assert np.array_equal(got == 1, expected == 1)
    assert np.array_equal(got == 2, expected == 2)
    masks = collection["masks"]
    assert (masks["liver"] & masks["mass"]).any() and (masks["mass"] & ~masks["liver"]).any()
    assert np.all(got[masks["liver"] & masks["mass"]] == 2)
    assert set(np.unique(got)) == {0, 1, 2}
    assert np.all(got[masks["aorta"] & ~masks["liver"]] == 0)


def test_phases_found_and_put_on_the_reference_grid(collection, three_phase):
    _, out = three_phase
    row = _rows(out)["HCC_048"]
    volumes = collection["volumes"]
    pv = sitk.ReadImage(str(out / row["image_portal_venous"]))
    _assert_same_geometry(pv, collection["ct"])
    assert np.array_equal(sitk.GetArrayFromImage(pv), volumes["portal_venous"])  # the reference, unchanged
    arterial = sitk.ReadImage(str(out / row["image_arterial"]))  # second acquisition of the same series folder
    _assert_same_geometry(arterial, collection["ct"])
    assert np.array_equal(sitk.GetArrayFromImage(arterial), volumes["arterial"])
    native = sitk.ReadImage(str(out / row["image_native"]))  # 5 mm series, resampled onto the 2.5 mm grid
    _assert_same_geometry(native, collection["ct"])
    native = sitk.GetArrayFromImage(native).astype(float)
    assert np.array_equal(native[::2], volumes["native"][::2])  # slices the native series holds
    between = (volumes["native"][:-2:2] + volumes["native"][2::2]) / 2
    assert np.abs(native[1:-1:2] - between).max() <= 0.5 + 1e-6

    report = json.loads((out / "import_report.json").read_text())
    case = next(c for c in report["cases"] if c["case_id"] == "HCC_048")
    by_number = {(a["series_number"], a["acquisition_number"]): a for a in case["acquisitions"]}
    assert by_number[("6", "2")]["reference"] and by_number[("6", "2")]["phase"] == "portal_venous"
    assert by_number[("6", "1")]["phase"] == "arterial"
    assert by_number[("6", "1")]["aorta_hu"] == fixture.ARTERIAL["aorta"]
    assert by_number[("6", "1")]["by"].startswith("enhancement")
    assert by_number[("3", "1")]["phase"] == "native" and by_number[("3", "1")]["by"] == "series description"
    assert case["phases"]["native"]["resampled"] and not case["phases"]["arterial"]["resampled"]
    assert case["segments"]["liver_tumor_overlap_voxels"] > 0


def test_dataset_table_in_the_engine_format(collection, three_phase):
    _, out = three_phase
    with open(out / "dataset.csv", newline="", encoding="utf-8") as stream:
        header = next(csv.reader(stream))
    assert header[:10] == ["case_id", "image_portal_venous", "image_arterial", "image_native", "label", "response",
                           "os_time", "os_event", "ttp_time", "ttp_event"]
    assert not [c for c in header if "RECIST" in c or "EASL" in c or c in ("TCIA_ID", "TTP", "OS")]
    for column in ("AFP", "AFP_group", "BCLC", "CPS", "tumor_nodul", "T_involvment", "Portal Vein Thrombosis",
                   "Vascular invasion", "CLIP_Score", "Okuda", "TNM", "age", "Sex", "hepatitis", "chemotherapy"):
        assert column in header
    rows = _rows(out)
    assert list(rows) == ["HCC_048"]
    row = rows["HCC_048"]
    assert row["response"] == ""  # reader 1 empty, PR vs SD: a tie is unknown
    assert (row["os_time"], row["os_event"], row["ttp_time"], row["ttp_event"]) == ("101", "1", "30.5", "1")
    assert (row["AFP"], row["BCLC"], row["T_involvment"], row["age"], row["Sex"]) == (
        "1234", "Stage-B", "< or = 50%", "63", "M")
    assert row["chemotherapy"] == ""  # literal "NA"
    for key in ("image_portal_venous", "image_arterial", "image_native", "label"):
        assert not os.path.isabs(row[key]) and (out / row[key]).is_file()
    records = read_dataset(out, ["portal_venous", "arterial", "native"])
    assert records[0].case_id == "HCC_048" and records[0].response is None


def test_problems_are_reported_not_fatal(collection, three_phase):
    code, out = three_phase
    assert code == 0
    report = json.loads((out / "import_report.json").read_text())
    assert report["imported"] == 1
    problems = {}
    for p in report["problems"]:
        problems.setdefault(p["case"], []).append(p["problem"])
    assert any("no DICOM-SEG" in text for text in problems["HCC_050"])
    assert any("not a DICOM file" in text for text in problems["HCC_050"])
    assert any("no images found" in text for text in problems["HCC_099"])
    assert any("no arterial acquisition" in text for text in problems["HCC_051"])
    assert "HCC_048" not in problems
    assert not [name for name in os.listdir(out.parent) if name.startswith(".")]  # no staging left


def test_reader_choice_and_position_only_seg(collection, reader2):
    code, out = reader2
    assert code == 0
    rows = _rows(out)
    assert sorted(rows) == ["HCC_048", "HCC_051"]
    assert rows["HCC_048"]["response"] == "1"  # reader 2: PR
    assert rows["HCC_051"]["response"] == "0"  # reader 2: PD
    assert (rows["HCC_051"]["os_time"], rows["HCC_051"]["os_event"]) == ("80.25", "0")
    assert rows["HCC_051"]["AFP"] == "" and rows["HCC_051"]["chemotherapy"] == "doxorubicin"
    # HCC_051's SEG has Mass as segment 1, Liver as 2 and no per-frame source references
    label = sitk.ReadImage(str(out / rows["HCC_051"]["label"]))
    _assert_same_geometry(label, collection["ct_051"])
    assert np.array_equal(sitk.GetArrayFromImage(label), collection["labels_051"])
    assert np.array_equal(_array(out / rows["HCC_048"]["label"]), collection["labels_048"])


def test_refuses_a_non_empty_output(collection, tmp_path, capfd):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(["import-hcc-tace-seg", "--tcia-dir", collection["tcia_dir"], "--clinical",
                         collection["clinical"], "-o", out], capfd)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "not empty" in err and "Traceback" not in err
    assert os.listdir(out) == ["keep.txt"]


def test_nothing_importable_leaves_no_output(collection, tmp_path, capfd):
    empty = tmp_path / "download" / "HCC-TACE-Seg" / "HCC_777" / "study" / "series"
    empty.mkdir(parents=True)
    (empty / "1-01.dcm").write_bytes(b"garbage")
    out = tmp_path / "dataset"
    code, _, err = _run(["import-hcc-tace-seg", "--tcia-dir", tmp_path / "download", "--clinical",
                         collection["clinical"], "-o", out], capfd)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no patient could be imported" in last
    assert "Traceback" not in err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_bad_arguments_are_one_line_errors(collection, tmp_path, capfd):
    base = ["import-hcc-tace-seg", "--tcia-dir", collection["tcia_dir"], "--clinical", collection["clinical"],
            "-o", tmp_path / "out"]
    for extra, fragment in ((["--reader", "4"], "no column for reader 4"), (["--reader", "x"], "--reader"),
                            (["--phases", "portal_venous,hepatobiliary"], "unknown phase")):
        code, _, err = _run(base + extra, capfd)
        assert code == 2, extra
        assert fragment in err.strip().splitlines()[-1] and "Traceback" not in err
    code, _, err = _run(["import-hcc-tace-seg", "--tcia-dir", collection["tcia_dir"], "--clinical",
                         tmp_path / "missing.xlsx", "-o", tmp_path / "out2"], capfd)
    assert code == 2 and "missing.xlsx: does not exist" in err


def test_seg_frames_off_the_ct_grid_are_refused(collection):
    acquisitions = dicom_seg.acquisitions(dicom_seg.index_folder(collection["seg_051"].parents[1])[0])
    ct = dicom_seg.read_ct(next(a for a in acquisitions if a.first.series_description == "PORTAL VENOUS"))
    seg = dicom_seg.read_seg(collection["seg_051"])
    labels, _, info = dicom_seg.seg_to_labels(seg, ct, "seg")
    assert np.array_equal(labels, collection["labels_051"])
    for fg in seg.PerFrameFunctionalGroupsSequence:
        position = [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]
        fg.PlanePositionSequence[0].ImagePositionPatient = [position[0] + 0.35, position[1], position[2]]
    with pytest.raises(InputError, match="does not lie on the CT's voxel grid"):
        dicom_seg.seg_to_labels(seg, ct, "seg")


# ---- units: responses, phase names and rules -------------------------------------------------------------


def test_reader_choice_and_majority():
    combine = clinical_table.combine_readers
    readers = {"1": None, "2": "PR", "3": "SD"}
    assert combine(readers, "1")[0] is None
    assert combine(readers, "2")[0] == 1 and combine(readers, "3")[0] == 0
    assert combine(readers, "majority")[0] is None  # 1:1
    assert combine({"1": "CR", "2": "PD", "3": "PR"}, "majority")[0] == 1
    assert combine({"1": "SD", "2": "PD", "3": "PR"}, "majority")[0] == 0
    assert combine({"1": None, "2": None, "3": None}, "majority")[0] is None
    assert [clinical_table.response_category(v) for v in (1, 2.0, "3", " PD ", None, "NA")] == [
        "CR", "PR", "SD", "PD", None, None]
    with pytest.raises(ValueError):
        clinical_table.response_category("5")


def test_phase_names_and_rules():
    assert hcc.parse_phases("portal_venous,pre_contrast") == [("portal_venous", "portal_venous"),
                                                             ("pre_contrast", "native")]
    with pytest.raises(InputError):
        hcc.parse_phases("arterial,late_arterial")
    assert hcc.phase_from_description("Recon 3: LIVER 2 PHASE (C/A/P)") is None
    assert hcc.phase_from_description("PRE LIVER") == "native"
    assert hcc.phase_from_description("LATE ARTERIAL 2.5mm") == "arterial"
    assert hcc.phase_from_description("PORTAL VENOUS") == "portal_venous"
    assert hcc.phase_from_description("3 MIN DELAY") == "delayed"
    assert hcc.phase_from_description("ART/PV") is None  # names two phases
    phases = hcc.classify_by_enhancement({"a": (45.0, 40.0), "b": (320.0, 130.0), "c": (200.0, 190.0),
                                          "d": (140.0, 150.0), "e": (None, None)})
    assert phases == {"a": "native", "b": "arterial", "c": "portal_venous", "d": "delayed", "e": None}

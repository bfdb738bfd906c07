"""`predict --dicom` on the real HCC_048 series: a DICOM SEG and a TID 1500 SR that pass dciodvfy without errors
and read back (highdicom) to segmentation.nii.gz voxel for voxel and to result.json's numbers."""

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import HCC_048, require
from TACEResponseLib.cli import main

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

ALGORITHM_NAME, ALGORITHM_VERSION, ALGORITHM_PARAMETERS = "111001", "111003", "111002"


def _tumor_mask(path):
    """Two spheres (a known tumor) on the HCC_048 grid, so the Tumor segment and the measurements are not empty."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(HCC_048)))
    ct = reader.Execute()
    size = ct.GetSize()
    z, y, x = np.ogrid[:size[2], :size[1], :size[0]]
    mask = ((z - 45) * 2.5) ** 2 + ((y - 250) * 0.703) ** 2 + ((x - 150) * 0.703) ** 2 <= 15.0 ** 2
    mask |= ((z - 30) * 2.5) ** 2 + ((y - 230) * 0.703) ** 2 + ((x - 120) * 0.703) ** 2 <= 8.0 ** 2
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(ct)
    sitk.WriteImage(image, str(path), True)
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, random_model):
    source = require(HCC_048)
    folder = tmp_path_factory.mktemp("dicom-out")
    mask = _tumor_mask(folder / "tumor.nii.gz")
    out = folder / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's note on the anonymised PatientName of the source
        code = main(["predict", str(source), "-o", str(out), "--model", str(random_model.folder), "--device", "cpu",
                     "--tumor-mask", str(mask), "--dicom"])
    assert code == 0
    return out


def _dciodvfy(path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
    run = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=120)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


@pytest.mark.parametrize("name", ["segmentation.dcm", "report.dcm"])
def test_dciodvfy_finds_no_errors(outputs, name):
    errors, warned = _dciodvfy(outputs / name)
    assert errors == [], errors
    print("\n".join(warned))  # listed in the notes: source-data gaps and the private 99TACE scheme


def _source_uids_in_slice_order(labels):
    """SOPInstanceUIDs of the source slices ordered as the label map's slices (by position, not by the module)."""
    datasets = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in sorted(HCC_048.glob("*.dcm"))]
    order = []
    for k in range(labels.GetSize()[2]):
        z = labels.TransformIndexToPhysicalPoint((0, 0, k))[2]
        order.append(min(datasets, key=lambda ds: abs(float(ds.ImagePositionPatient[2]) - z)))
    return [ds.SOPInstanceUID for ds in order], datasets[0].SeriesInstanceUID


def test_seg_reads_back_to_the_label_map(outputs, random_model):
    seg = hd.seg.segread(str(outputs / "segmentation.dcm"))
    labels = sitk.ReadImage(str(outputs / "segmentation.nii.gz"))
    expected = sitk.GetArrayFromImage(labels)
    uids, series_uid = _source_uids_in_slice_order(labels)
    assert seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    card = {label["name"]: label for label in random_model.card["labels"]}
    value_of = {}
    for number in seg.get_segment_numbers():
        description = seg.get_segment_description(number)
        label = card[description.segment_label]
        terminology = label["terminology"]
        assert description.segmented_property_type.value == terminology["type"]["code"]
        assert description.segmented_property_category.value == terminology["category"]["code"]
        value_of[number] = int(label["value"])
    assert sorted(value_of.values()) == [1, 2]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    labelmap = np.zeros(pixels.shape, np.uint8)
    for number, value in value_of.items():
        labelmap[pixels == number] = value
    assert labelmap.shape == expected.shape
    assert np.array_equal(labelmap, expected)
    assert (expected == 2).sum() > 1000  # the tumor segment is not empty
    # geometry: every frame sits where the label map's slice is
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = uids.index(uid)
        assert np.allclose(position, labels.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-3)


def _texts(items, concept, found):
    for item in items:
        if item.ConceptNameCodeSequence[0].CodeValue == concept and "TextValue" in item:
            found.append(item.TextValue)
        if "ContentSequence" in item:
            _texts(item.ContentSequence, concept, found)
    return found


def test_sr_reads_back_to_the_result_numbers(outputs, random_model):
    document = json.loads((outputs / "result.json").read_text())
    seg = hd.seg.segread(str(outputs / "segmentation.dcm"))
    sr = hd.sr.srread(str(outputs / "report.dcm"))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    measured = document["measurements"]
    expected = {
        "Liver": {"Volume": measured["liver_parenchyma_volume_ml"],
                  "Liver volume including tumor": measured["liver_volume_ml"]},
        "Tumor": {"Volume": measured["tumor_volume_ml"], "Number of tumor lesions": measured["tumor_count"],
                  "Long axis": measured["largest_tumor_diameter_mm"],
                  "Tumor burden (tumor share of liver volume)": measured["tumor_burden_percent"],
                  "Probability of objective response to TACE": document["response_probability"]},
    }
    segment_number = {seg.get_segment_description(n).segment_label: n for n in seg.get_segment_numbers()}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert sorted(g.tracking_identifier for g in groups) == ["Liver", "Tumor"]
    for group in groups:
        name = group.tracking_identifier
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert list(reference.referenced_segment_numbers) == [segment_number[name]]
        assert reference.source_series_for_segmentation.value == seg.ReferencedSeriesSequence[
            0].SeriesInstanceUID
        read = {m.name.meaning: m.value for m in group.get_measurements()}
        assert read == pytest.approx(expected[name], abs=1e-6)
        if name == "Tumor":
            (risk,) = group.get_qualitative_evaluations()
            assert risk.value.value == "risk-" + document["risk_category"]
    assert measured["tumor_count"] == 2 and measured["tumor_volume_ml"] > 5
    model = document["model"]
    raw = pydicom.dcmread(str(outputs / "report.dcm"))  # plain pydicom: the content tree as stored
    assert set(_texts(raw.ContentSequence, ALGORITHM_NAME, [])) == {model["name"]}
    assert set(_texts(raw.ContentSequence, ALGORITHM_VERSION, [])) == {model["version"]}
    assert set(_texts(raw.ContentSequence, ALGORITHM_PARAMETERS, [])) == {"sha256=" + model["sha256"]}
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == pydicom.dcmread(
        str(sorted(HCC_048.glob("*.dcm"))[0]), stop_before_pixels=True).StudyInstanceUID


def test_dicom_needs_dicom_input_and_fails_before_any_work(tmp_path, capfd):
    ct = tmp_path / "ct.nii.gz"
    image = sitk.Image([8, 8, 8], sitk.sitkInt16)
    sitk.WriteImage(image, str(ct))
    out = tmp_path / "out"
    # a model that does not exist: the DICOM check must answer first, without loading anything
    code = main(["predict", str(ct), "-o", str(out), "--model", str(tmp_path / "no-model"), "--dicom"])
    err = capfd.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--dicom needs DICOM input" in err and "NIfTI" in err
    assert not out.exists()

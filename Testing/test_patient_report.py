"""report.pdf: one page whose text holds the numbers of result.json, the model and its intended use, and the
inputs; written by `predict --report` together with the other outputs (or not at all)."""

import json
import os

import pytest
import SimpleITK as sitk

from TACEResponseLib import cli, patient_report, preview
from test_preview import GEOMETRIES, constructed_patient

pypdf = pytest.importorskip("pypdf")


def _pdf_text(path):
    reader = pypdf.PdfReader(str(path))
    return len(reader.pages), " ".join(page.extract_text() for page in reader.pages)


def _document():
    return {
        "response_probability": 0.6312, "risk_category": "low", "risk_cutoff": 0.4871,
        "risk_meaning": "low = likely objective responder (mRECIST CR+PR); high = likely SD+PD",
        "fold_probabilities": [0.61, 0.65], "fold_probability_spread": 0.04,
        "measurements": {"liver_volume_ml": 1523.4, "liver_parenchyma_volume_ml": 1516.2, "tumor_volume_ml": 7.24,
                         "tumor_count": 3, "largest_tumor_diameter_mm": 24.6, "tumor_burden_percent": 0.48},
        "model": {"name": "demo", "version": "9.8.7", "sha256": "ab" * 32,
                  "intended_use": "Research demonstration only: trained on synthetic data - not for clinical use."},
        "tumor_source": "predicted", "labels": {"Liver": 1, "Tumor": 2},
        "inputs": ["/data/study/ct_portal.nii.gz"], "tumor_mask": None,
        "series": {"portal_venous": {"series_instance_uid": "1.2.826.0.1.3680043.8.498.1", "series_number": 4,
                                     "description": "PV 5mm", "slices": 89, "reason": "description says portal"}},
        "warnings": ["phases resampled onto one grid"], "software": {"name": "tace-response", "version": "0.1.0"},
    }


def test_report_holds_the_numbers_on_one_page(tmp_path):
    ct, labels = constructed_patient(GEOMETRIES["flipped-x-and-z"])
    path = tmp_path / "report.pdf"
    patient_report.write_report(path, preview.preview_slices(ct, labels, 1, 2), _document())
    pages, text = _pdf_text(path)
    assert pages == 1
    for fragment in ("63%", "LOW", "0.49", "likely objective responder", "1523 mL", "1516 mL", "7.2 mL", "24.6 mm",
                     "0.5 %", "demo 9.8.7", "not for clinical use", "ct_portal.nii.gz", "phases resampled",
                     "Number of lesions 3", "largest tumor", "2 networks",
                     'portal_venous: series 4 "PV 5mm", 89 slices', "description says portal"):
        assert fragment in text, "{!r} missing from the report text".format(fragment)


def test_predict_report_and_preview(random_model, tmp_path, capfd):
    ct, _ = constructed_patient(GEOMETRIES["permuted-oblique"], spacing=(3.0, 3.0, 3.0), size=(70, 60, 40))
    ct_path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct, str(ct_path))
    out_dir = tmp_path / "out"
    code = cli.main(["predict", str(ct_path), "-o", str(out_dir), "--model", str(random_model.folder),
                     "--device", "cpu", "--progress", "none", "--preview", "--report"])
    assert code == 0, capfd.readouterr().err
    assert sorted(os.listdir(str(out_dir))) == sorted(
        [cli.PREVIEW_NAME, cli.REPORT_NAME, cli.RESULT_NAME, cli.SEGMENTATION_NAME])
    result = json.loads((out_dir / cli.RESULT_NAME).read_text())
    pages, text = _pdf_text(out_dir / cli.REPORT_NAME)
    assert pages == 1
    m = result["measurements"]
    for fragment in ("{:.0%}".format(result["response_probability"]), result["risk_category"].upper(),
                     "{:.0f} mL".format(m["liver_volume_ml"]), "{:.1f} mL".format(m["tumor_volume_ml"]),
                     "Number of lesions {}".format(m["tumor_count"]), "{:.1f} mm".format(m["largest_tumor_diameter_mm"]),
                     "{} {}".format(result["model"]["name"], result["model"]["version"]),
                     result["model"]["intended_use"], "ct.nrrd"):
        assert fragment in text, "{!r} missing from the report text".format(fragment)

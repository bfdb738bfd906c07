"""`tace-response predict STUDY_DIR`: one series per phase picked out of a study built from the real HCC_048 series
(dicom_study_fixture.py), scouts, reformats and derived series rejected, ambiguity as a one-line listing."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import HCC_048, random_package, require
from TACEResponseLib import dicom_study, image_io
from TACEResponseLib.cli import main
from TACEResponseLib.errors import InputError

pytest.importorskip("pydicom")

import dicom_study_fixture as fixture  # noqa: E402  (needs pydicom)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return fixture.build_study(tmp_path_factory.mktemp("study"), require(HCC_048))


@pytest.fixture(scope="module")
def ambiguous_study(tmp_path_factory):
    return fixture.build_study(tmp_path_factory.mktemp("ambiguous"), require(HCC_048), ambiguous=True)


def _read(folder):
    return lambda series: image_io.read_dicom_series(folder, series.paths)[0]


def _run(argv, capfd):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def test_scan_rejects_scout_reformat_and_derived_and_tells_the_phases(study):
    series = {s.uid: s for s in dicom_study.scan(study["folder"])}
    uids = study["uids"]
    assert set(series) == set(uids.values())
    assert "LOCALIZER" in series[uids["scout"]].rejected
    assert series[uids["reformat"]].rejected == "not axial (reformat)"
    assert "DERIVED" in series[uids["derived"]].rejected
    assert series[uids["portal_venous"]].rejected is None and series[uids["portal_venous"]].slices == 89
    dicom_study.classify(list(series.values()), _read(study["folder"]))
    pv, arterial = series[uids["portal_venous"]], series[uids["arterial"]]
    assert (arterial.phase, arterial.phase_by) == ("arterial", "series description")
    assert pv.phase == "portal_venous" and pv.phase_by.startswith("enhancement")  # the headers are silent
    assert abs(pv.aorta_hu - pv.vein_hu) < dicom_study.ARTERIAL_AORTA_MINUS_PV_HU


def test_enhancement_alone_tells_arterial_from_portal_venous(study):
    by_uid = {s.uid: s for s in dicom_study.scan(study["folder"])}
    read = _read(study["folder"])
    aorta_pv, vein_pv = dicom_study.measure_enhancement(read(by_uid[study["uids"]["portal_venous"]]))
    aorta_art, vein_art = dicom_study.measure_enhancement(read(by_uid[study["uids"]["arterial"]]))
    assert 150 < aorta_pv < 250 and vein_pv is not None
    assert aorta_art > aorta_pv + 100
    # the arterial copy with its description and timing blanked: only the image is left to tell
    arterial = by_uid[study["uids"]["arterial"]]
    arterial.description, arterial.bolus_start, arterial.acquisition_time = "", "", ""
    assert dicom_study.phase_from_headers(arterial) == (None, "")
    dicom_study.classify([arterial], read)
    assert arterial.phase == "arterial", arterial.phase_by


def test_header_rules():
    assert dicom_study.phase_from_description("Recon 3: LIVER 2 PHASE (C/A/P)") is None
    assert dicom_study.phase_from_description("PORTAL VENOUS 2.5") == "portal_venous"
    make = lambda **kw: dicom_study.Series(uid="1", number="1", description=kw.get("d", ""), modality="CT",  # noqa
                                           study_uid="s", image_type=(), orientation=(1, 0, 0, 0, 1, 0),
                                           contrast_agent=kw.get("agent", ""), contrast_route="",
                                           bolus_start=kw.get("start", ""), acquisition_time=kw.get("acq", ""),
                                           frames=1)
    assert dicom_study.phase_from_headers(make(start="101000", acq="101030"))[0] == "arterial"
    assert dicom_study.phase_from_headers(make(start="101000", acq="101110.5"))[0] == "portal_venous"
    assert dicom_study.phase_from_headers(make(start="10:10:00", acq="10:14:00"))[0] == "delayed"
    assert dicom_study.phase_from_headers(make(start="101000", acq="100900"))[0] == "native"
    assert dicom_study.phase_from_headers(make(agent="NONE"))[0] == "native"
    assert dicom_study.phase_from_headers(make(d="ART", start="101000", acq="101300"))[0] == "arterial"
    assert dicom_study.parse_choices(["pv=1.2.3", "Arterial=4.5"]) == {"portal_venous": "1.2.3", "arterial": "4.5"}
    for bad in (["portal_venous"], ["venus=1.2"], ["pv=1", "portal_venous=2"]):
        with pytest.raises(InputError):
            dicom_study.parse_choices(bad)


def test_predict_study_picks_the_portal_venous_series(study, random_model, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["predict", study["folder"], "-o", out, "--model", random_model.folder, "--device", "cpu"]
    code, _, err = _run(argv, capfd)
    assert code == 0, err
    document = json.loads((out / "result.json").read_text())
    chosen = document["series"]["portal_venous"]
    assert chosen["series_instance_uid"] == study["uids"]["portal_venous"]
    assert chosen["series_number"] == "6" and chosen["slices"] == 89
    assert "enhancement" in chosen["reason"]
    # the segmentation lies on the chosen series' own grid
    labels = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    source, _ = image_io.read_image(str(HCC_048))
    assert labels.GetSize() == source.GetSize()
    assert np.allclose(labels.GetOrigin(), source.GetOrigin(), atol=1e-4)
    assert np.allclose(labels.GetDirection(), source.GetDirection())


def test_a_single_series_folder_keeps_working(random_model, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["predict", require(HCC_048), "-o", out, "--model", random_model.folder, "--device", "cpu"]
    code, _, err = _run(argv, capfd)
    assert code == 0, err
    chosen = json.loads((out / "result.json").read_text())["series"]["portal_venous"]
    assert chosen["reason"] == "the only series in the folder" and chosen["slices"] == 89


def test_ambiguous_study_lists_candidates_and_series_resolves_it(ambiguous_study, random_model, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["predict", ambiguous_study["folder"], "-o", out, "--model", random_model.folder, "--device", "cpu"]
    code, _, err = _run(argv, capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "2 series could be the portal_venous phase" in lines[0]
    assert "--series portal_venous=SeriesInstanceUID" in lines[0]
    for name in ("portal_venous", "portal_venous_copy", "scout"):
        assert ambiguous_study["uids"][name] in lines[0]
    assert "#1 'SCOUT', 2 slices, rejected" in lines[0] and "89 slices, guess portal_venous" in lines[0]
    assert not out.exists()

    pick = ambiguous_study["uids"]["portal_venous_copy"]
    code, _, err = _run(argv + ["--series", "portal_venous=" + pick], capfd)
    assert code == 0, err
    chosen = json.loads((out / "result.json").read_text())["series"]["portal_venous"]
    assert chosen["series_instance_uid"] == pick and chosen["reason"] == "chosen with --series"


def test_missing_phase_and_bad_choices_are_one_line_errors(study, tmp_path, capfd):
    two_phase = random_package(tmp_path / "model2", phases=("delayed", "portal_venous"))
    out = tmp_path / "out"
    argv = ["predict", study["folder"], "-o", out, "--model", two_phase.folder, "--device", "cpu"]
    code, _, err = _run(argv, capfd)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no delayed series found; choose with --series delayed=SeriesInstanceUID" in err
    code, _, err = _run(argv + ["--series", "delayed=" + study["uids"]["scout"]], capfd)
    assert code == 2 and "cannot be used" in err and "LOCALIZER" in err
    code, _, err = _run(argv + ["--series", "delayed=1.2.3.4"], capfd)
    assert code == 2 and "no such series here" in err
    assert not out.exists()

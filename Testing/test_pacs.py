"""`tace-response pacs` against a real Orthanc (Debian packages orthanc, orthanc-dicomweb) started on 127.0.0.1
with a temporary configuration; the real HCC_048 series is stored into it first (Orthanc's REST API).

DICOMweb and DIMSE round trips: study in, predict, SEG and SR found in the same study by a query. A server
that is down, and one that refuses our C-STORE, give exit code 2, one line, and nothing stored.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import warnings

import pytest

from conftest import HCC_048, require
from TACEResponseLib.cli import main

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")
pytest.importorskip("pynetdicom")
pytest.importorskip("dicomweb_client")
requests = pytest.importorskip("requests")

ORTHANC_AET = "ORTHANC"
OUR_AET = "TACETEST"
REFUSED_AET = "NOSTORE"  # known to Orthanc, may find and get, may not store
PARTIAL_AET = "PARTIAL"  # may store, but Orthanc's Lua filter drops its SR: the SEG goes in, the SR does not
FILTER_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  if origin["RemoteAet"] == "%s" and dicom["Modality"] == "SR" then
    return false
  end
  return true
end
""" % PARTIAL_AET
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dicomweb_plugin():
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    for path in [p for p in listed if "DicomWeb" in p and ".so" in p] + list(PLUGIN_CANDIDATES):
        if os.path.isfile(path):
            return path
    return None


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.isfile("/usr/sbin/Orthanc") else None)
    if binary is None:
        pytest.skip("Orthanc not installed (Debian/Ubuntu: apt-get install orthanc orthanc-dicomweb)")
    plugin = _dicomweb_plugin()
    if plugin is None:
        pytest.skip("Orthanc's DICOMweb plugin not installed (apt-get install orthanc-dicomweb)")
    source = require(HCC_048)
    folder = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = _free_port(), _free_port()
    modality = {"Host": "127.0.0.1", "Port": _free_port(), "AllowEcho": True, "AllowFind": True,
                "AllowGet": True, "AllowMove": True}
    config = {
        "Name": "tace-response-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
        "DicomServerEnabled": True, "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "LuaScripts": [str(folder / "filter.lua")],
        "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": True, "DicomCheckModalityHost": False,
        "DicomModalities": {
            "tace": dict(modality, AET=OUR_AET, AllowStore=True),
            "nostore": dict(modality, AET=REFUSED_AET, AllowStore=False),
            "partial": dict(modality, AET=PARTIAL_AET, AllowStore=True),
        },
    }
    (folder / "filter.lua").write_text(FILTER_LUA)
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:{}".format(http_port)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(base + "/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("Orthanc did not start: " + (folder / "orthanc.log").read_text()[-2000:])
            time.sleep(0.3)
        for path in sorted(source.glob("*.dcm")):  # the real series, through Orthanc's own REST API
            requests.post(base + "/instances", data=path.read_bytes(), timeout=30).raise_for_status()
        study_uid = pydicom.dcmread(str(sorted(source.glob("*.dcm"))[0]), stop_before_pixels=True).StudyInstanceUID
        yield {"base": base, "dicomweb": base + "/dicom-web", "dicom_port": dicom_port, "study": study_uid}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _instances(orthanc, modality):
    """SOPInstanceUIDs of one modality in the test study, by a query of Orthanc's REST API."""
    found = requests.post(orthanc["base"] + "/tools/find", json={
        "Level": "Instance", "Query": {"StudyInstanceUID": orthanc["study"], "Modality": modality},
        "Expand": True}, timeout=30).json()
    return {item["MainDicomTags"]["SOPInstanceUID"] for item in found}


def _run(argv, capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def _run_dimse(orthanc, calling_aet, out, model, capfd):
    """`pacs` over DIMSE against the test Orthanc, calling as ``calling_aet`` (which picks how it answers)."""
    return _run(["pacs", "--aet", ORTHANC_AET, "--host", "127.0.0.1", "--port", orthanc["dicom_port"],
                 "--calling-aet", calling_aet, "--study", orthanc["study"], "-o", out,
                 "--model", model.folder, "--device", "cpu"], capfd)


def _check_round_trip(orthanc, out, code, err):
    assert code == 0, err
    seg = pydicom.dcmread(str(out / "segmentation.dcm"), stop_before_pixels=True)
    sr = pydicom.dcmread(str(out / "report.dcm"), stop_before_pixels=True)
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == orthanc["study"]
    assert seg.SOPInstanceUID in _instances(orthanc, "SEG")
    assert sr.SOPInstanceUID in _instances(orthanc, "SR")
    document = json.loads((out / "result.json").read_text())
    assert document["series"]["portal_venous"]["slices"] == 89
    assert len(list((out / "study").rglob("*.dcm"))) == 89  # earlier SEG/SR of the study are not fetched


def test_dicomweb_round_trip(orthanc, random_model, tmp_path, capfd):
    out = tmp_path / "web"
    code, _, err = _run(["pacs", "--url", orthanc["dicomweb"], "--study", orthanc["study"], "-o", out,
                         "--model", random_model.folder, "--device", "cpu"], capfd)
    _check_round_trip(orthanc, out, code, err)


def test_dimse_round_trip(orthanc, random_model, tmp_path, capfd):
    out = tmp_path / "dimse"
    code, _, err = _run_dimse(orthanc, OUR_AET, out, random_model, capfd)
    _check_round_trip(orthanc, out, code, err)


def test_refused_store_stores_nothing(orthanc, random_model, tmp_path, capfd):
    before = _instances(orthanc, "SEG") | _instances(orthanc, "SR")
    out = tmp_path / "refused"
    code, _, err = _run_dimse(orthanc, REFUSED_AET, out, random_model, capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nothing stored" in lines[0], err
    assert _instances(orthanc, "SEG") | _instances(orthanc, "SR") == before
    assert (out / "segmentation.dcm").exists() and (out / "report.dcm").exists()  # kept for a later try


def test_seg_stored_but_sr_refused_says_partly_stored(orthanc, random_model, tmp_path, capfd):
    out = tmp_path / "partial"
    code, _, err = _run_dimse(orthanc, PARTIAL_AET, out, random_model, capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "PARTLY STORED" in lines[0] and "segmentation.dcm" in lines[0], err
    assert "report.dcm" in lines[0]
    seg = pydicom.dcmread(str(out / "segmentation.dcm"), stop_before_pixels=True)
    sr = pydicom.dcmread(str(out / "report.dcm"), stop_before_pixels=True)
    assert seg.SOPInstanceUID in _instances(orthanc, "SEG")
    assert sr.SOPInstanceUID not in _instances(orthanc, "SR")


@pytest.mark.parametrize("transport", ["dicomweb", "dimse"])
def test_server_down_is_one_line_and_writes_nothing(transport, random_model, tmp_path, capfd):
    port = _free_port()  # nothing listens there
    where = (["--url", "http://127.0.0.1:{}/dicom-web".format(port)] if transport == "dicomweb" else
             ["--aet", ORTHANC_AET, "--host", "127.0.0.1", "--port", port, "--timeout", "5"])
    out = tmp_path / "out"
    code, _, err = _run(["pacs"] + where + ["--study", "1.2.3", "-o", out, "--model", random_model.folder], capfd)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "127.0.0.1" in lines[0], err
    assert not out.exists()


def test_usage_errors(tmp_path, capfd):
    code, _, err = _run(["pacs", "--study", "1.2", "-o", tmp_path / "o", "--url", "http://x", "--aet", "A"], capfd)
    assert code == 2 and "either --url" in err
    code, _, err = _run(["pacs", "--study", "1.2", "-o", tmp_path / "o", "--host", "h"], capfd)
    assert code == 2 and "all of --aet, --host and --port" in err

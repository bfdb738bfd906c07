"""Bad input through `tace-response predict`: exit codes, one clear stderr line, no outputs left behind.

Contract: 0 ok; 2 bad input or usage (one line on stderr, "error: ..." naming the file or flag and the
problem, no traceback, no output files); 3 model problem (missing, corrupt, checksum mismatch); 1 unexpected.
Readable but implausible input runs and says so in result.json "warnings", or refuses with exit 2.

Most cases call cli.main() in-process (torch is imported once) with capfd, which also sees what native
code (ITK, MetaIO, GDCM) writes straight to file descriptor 2. Three cases run as real subprocesses.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

import bad_inputs as bad
from TACEResponseLib import cli

REPO = Path(__file__).resolve().parent.parent
THREE_SLICE_DICOM = REPO.parent / "shared" / "data" / "dcmqi-ct-3slice" / "ct-3slice"
OUTPUT_NAMES = (cli.SEGMENTATION_NAME, cli.RESULT_NAME)


# ---- fixtures ---------------------------------------------------------------------------------------------


def _write_random_package(folder, phases, background_only=False):
    from TACEResponseLib.model_package import build_network, write_package
    from TACEResponseTraining.config import load_config
    from TACEResponseTraining.model_card import full_card

    config = load_config()
    config["phases"] = list(phases)
    card = full_card(config, {"cutoff": 0.5}, "random", "0.0.0", "test", "none", "Apache-2.0")
    torch.manual_seed(0)
    state = build_network(card).state_dict()
    if background_only:
        # the segmentation head says "background" everywhere: no liver, no tumor, deterministically
        state["seg_out.bias"] = torch.tensor([50.0, -50.0, -50.0])
    write_package(folder, card, [state])
    return Path(folder)


@pytest.fixture(scope="session")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_error_models")
    return {
        "one": _write_random_package(root / "one_phase", ["portal_venous"]),
        "two": _write_random_package(root / "two_phase", ["arterial", "portal_venous"]),
        "background": _write_random_package(root / "background", ["portal_venous"], background_only=True),
    }


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Unzipped packages go to a per-test cache, never to the user's ~/.cache."""
    monkeypatch.setenv("TACE_RESPONSE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def image_reads(monkeypatch):
    """Counts the calls that allocate pixel memory (reader Execute), to prove a header was refused first."""
    calls = []
    for cls in (sitk.ImageFileReader, sitk.ImageSeriesReader):
        original = cls.Execute

        def counting(self, *args, _original=original, **kwargs):
            calls.append(type(self).__name__)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "Execute", counting)
    return calls


# ---- helpers ----------------------------------------------------------------------------------------------


def run_cli(argv, capfd):
    code = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def predict_args(inputs, out_dir, model, *extra):
    return ["predict"] + [str(i) for i in inputs] + ["-o", str(out_dir), "--model", str(model), "--device", "cpu",
                                                     "--progress", "none"] + list(extra)


def assert_one_error_line(err, *fragments):
    """stderr is exactly one line "error: ..." holding every fragment, with no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, "expected one stderr line, got {}:\n{}".format(len(lines), err)
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: ") + 10, line
    assert "Traceback" not in err and "most recent call" not in err, err
    for fragment in fragments:
        assert str(fragment) in line, "{!r} not in {!r}".format(str(fragment), line)
    return line


def assert_no_outputs(out_dir, existed_before=False):
    """No results and no temp files: the folder is gone if we made it, and empty if it was there (and empty)."""
    out_dir = Path(out_dir)
    if not existed_before:
        assert not out_dir.exists(), "OUTDIR was created: {}".format(sorted(os.listdir(str(out_dir))))
    else:
        assert sorted(os.listdir(str(out_dir))) == [], "left behind: {}".format(sorted(os.listdir(str(out_dir))))


def load_result(out_dir):
    out_dir = Path(out_dir)
    assert sorted(os.listdir(str(out_dir))) == sorted(OUTPUT_NAMES), os.listdir(str(out_dir))
    return json.loads((out_dir / cli.RESULT_NAME).read_text(encoding="utf-8"))


# ---- bad image inputs (exit 2) ----------------------------------------------------------------------------

# id -> (builder, fragment the message must hold, True when the header alone must refuse it: no pixel read)
BAD_IMAGES = {
    "missing-file": (bad.missing_file, "does not exist", True),
    "empty-file": (bad.empty_file, "empty", True),
    "random-bytes-nii-gz": (bad.garbage_bytes, "cannot read image header", True),
    "text-file-as-mha": (bad.text_as_image, "cannot read image header", True),
    "nii-header-cut-at-200-bytes": (bad.truncated_nifti_header, "cannot read image header", True),
    "nii-data-cut-in-half": (bad.truncated_nifti, "truncated", True),
    "nii-gz-cut-in-half": (bad.truncated_nifti_gz, "truncated", True),
    "nrrd-raw-cut-in-half": (bad.truncated_nrrd, "truncated", False),
    "nrrd-gzip-cut-in-half": (bad.truncated_nrrd_gzip, "truncated", False),
    "mha-raw-cut-in-half": (bad.truncated_mha, "truncated", False),
    "mha-compressed-cut-in-half": (bad.truncated_mha_compressed, "truncated", False),
    "2d-image": (bad.image_2d, "2D image", True),
    "3d-with-one-slice": (bad.single_slice_volume, "single slice", True),
    "4d-image": (bad.image_4d, "4D image", True),
    "vector-image": (bad.vector_image, "components per voxel", True),
    "tiny-volume-8mm": (bad.tiny_volume, "field of view too small", False),
    "nan-voxels": (bad.nan_voxels, "NaN", False),
    "infinite-voxel": (bad.inf_voxels, "infinite", False),
    "nii-zero-spacing": (bad.nifti_zero_spacing, "spacing", True),
    "nii-negative-spacing": (bad.nifti_negative_spacing, "spacing", True),
    "nii-nan-spacing": (bad.nifti_nan_spacing, "spacing", True),
    "nrrd-zero-spacing": (bad.nrrd_zero_spacing, "spacing", True),
    "nrrd-negative-spacing": (bad.nrrd_negative_spacing, "spacing", True),
    "mha-zero-spacing": (bad.mha_zero_spacing, "spacing", True),
    "nrrd-degenerate-direction": (bad.nrrd_degenerate_direction, "degenerate orientation", True),
    "nii-absurd-size-30000-cubed": (bad.nifti_absurd_size, "implausible size", True),
    "nrrd-absurd-size-100000-cubed": (bad.nrrd_absurd_size, "implausible size", True),
    "mha-absurd-size-100000-cubed": (bad.mha_absurd_size, "implausible size", True),
    "nrrd-size-overflows-size_t": (bad.nrrd_size_overflow, "cannot read image header", True),
    "nii-gz-declares-1.7GB-in-kilobytes": (bad.nifti_gz_oversized, "refusing to allocate", True),
    "mha-declares-1.7GB-in-200-bytes": (bad.mha_oversized, "1.7 GB", True),
    "fifo-not-a-file": (bad.fifo, "not a regular file", True),
    "empty-folder": (bad.empty_folder, "folder is empty", True),
    "folder-without-dicom": (bad.non_dicom_folder, "no DICOM series", True),
    "dicom-single-slice": (bad.dicom_single_slice, "single slice", True),
    "dicom-duplicate-slice-positions": (bad.dicom_duplicate_positions, "duplicate", False),
    "dicom-slice-missing-6mm-gap": (bad.dicom_missing_slice, "uneven", False),
}


@pytest.mark.parametrize("builder, fragment, header_only", list(BAD_IMAGES.values()), ids=list(BAD_IMAGES))
def test_bad_image_is_refused_with_one_line(builder, fragment, header_only, packages, tmp_path, capfd, image_reads):
    if builder is bad.fifo and not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = builder(tmp_path)
    del image_reads[:]  # building the input may have read images
    out_dir = tmp_path / "out"
    code, out, err = run_cli(predict_args([path], out_dir, packages["one"]), capfd)
    assert code == 2, err
    assert_one_error_line(err, path, fragment)
    assert out == ""
    assert_no_outputs(out_dir)
    if header_only:
        assert image_reads == [], "pixel data was read (allocated) before the problem was found"


def test_three_real_dicom_slices_field_of_view_too_small(packages, tmp_path, capfd):
    if not THREE_SLICE_DICOM.is_dir():
        pytest.skip("real data not available: {} (../shared/data beside the repo)".format(THREE_SLICE_DICOM))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_cli(predict_args([THREE_SLICE_DICOM], out_dir, packages["one"]), capfd)
    assert code == 2, err
    assert_one_error_line(err, THREE_SLICE_DICOM, "field of view too small along z", "3 voxels")
    assert_no_outputs(out_dir, existed_before=True)


@pytest.mark.parametrize("builder, fragment", [(bad.image_2d, "2D image"), (bad.missing_file, "does not exist")],
                         ids=["2d-mask", "missing-mask"])
def test_bad_tumor_mask_is_named(builder, fragment, packages, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    mask = builder(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([ct], out_dir, packages["one"], "--tumor-mask", mask), capfd)
    assert code == 2, err
    line = assert_one_error_line(err, mask, fragment)
    assert not line.startswith("error: " + ct)
    assert_no_outputs(out_dir)


# ---- wrong number of inputs, phases that disagree ---------------------------------------------------------


@pytest.mark.parametrize("model, n_inputs, expected", [("one", 2, "expects 1 input"), ("two", 1, "expects 2 input")],
                         ids=["two-inputs-for-one-phase-model", "one-input-for-two-phase-model"])
def test_wrong_number_of_inputs(model, n_inputs, expected, packages, tmp_path, capfd):
    inputs = [bad.good_ct(tmp_path, "ct{}.nrrd".format(i)) for i in range(n_inputs)]
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args(inputs, out_dir, packages[model]), capfd)
    assert code == 2, err
    assert_one_error_line(err, expected, "got {}".format(n_inputs))
    assert_no_outputs(out_dir)


def test_phases_that_do_not_overlap_are_refused(packages, tmp_path, capfd):
    arterial = bad.good_ct(tmp_path, "arterial.nrrd")
    portal = bad.good_ct(tmp_path, "portal.nrrd", origin=(1000.0, 0.0, 0.0), seed=1)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([arterial, portal], out_dir, packages["two"]), capfd)
    assert code == 2, err
    assert_one_error_line(err, portal, "does not overlap")
    assert_no_outputs(out_dir)


def test_second_phase_unreadable_is_named(packages, tmp_path, capfd):
    arterial = bad.good_ct(tmp_path, "arterial.nrrd")
    (tmp_path / "portal").mkdir()
    portal = bad.truncated_nrrd(tmp_path / "portal")
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([arterial, portal], out_dir, packages["two"]), capfd)
    assert code == 2, err
    line = assert_one_error_line(err, portal, "truncated")
    assert arterial not in line
    assert_no_outputs(out_dir)


def test_phases_with_different_grids_run_and_say_so(packages, tmp_path, capfd):
    arterial = bad.good_ct(tmp_path, "arterial.nrrd")
    portal = bad.good_ct(tmp_path, "portal.nrrd", shape=(48, 72, 72), spacing=(2.5, 2.5, 2.5),
                         origin=(5.0, -5.0, 3.0), seed=1)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(predict_args([arterial, portal], out_dir, packages["two"]), capfd)
    assert code == 0, err
    warnings = load_result(out_dir)["warnings"]
    assert any(portal in w and "geometry differs" in w for w in warnings), warnings
    assert "warning: " in out and "geometry differs" in out


# ---- readable but implausible content: runs, and says so -------------------------------------------------


def test_mr_like_intensities_warn(packages, tmp_path, capfd):
    path = bad.mr_like(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(predict_args([path], out_dir, packages["one"]), capfd)
    assert code == 0, err
    warnings = load_result(out_dir)["warnings"]
    assert any(path in w and "do not look like CT" in w for w in warnings), warnings
    assert "warning: {}: intensities do not look like CT".format(path) in out


def test_plausible_ct_runs_without_intensity_warning(packages, tmp_path, capfd):
    """The control for the cases around it: good content does not trigger the content warnings."""
    path = bad.good_ct(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([path], out_dir, packages["one"]), capfd)
    assert code == 0, err
    assert err == ""
    warnings = load_result(out_dir)["warnings"]
    assert not any("do not look like CT" in w or "along z" in w for w in warnings), warnings


def test_short_z_coverage_warns(packages, tmp_path, capfd):
    path = bad.short_z(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([path], out_dir, packages["one"]), capfd)
    assert code == 0, err
    warnings = load_result(out_dir)["warnings"]
    assert any(path in w and "only 60 mm along z" in w for w in warnings), warnings


def test_no_liver_and_no_tumor_found_warn(packages, tmp_path, capfd):
    path = bad.good_ct(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(predict_args([path], out_dir, packages["background"]), capfd)
    assert code == 0, err
    result = load_result(out_dir)
    assert result["measurements"]["liver_volume_ml"] == 0
    assert any(w.startswith("no liver found") for w in result["warnings"]), result["warnings"]
    assert any(w.startswith("no tumor found") for w in result["warnings"]), result["warnings"]
    assert "warning: no liver found" in out


def test_a_predicted_tumor_under_1_ml_warns_that_the_response_is_not_meaningful(random_model):
    from TACEResponseLib.predictor import Predictor

    predictor = Predictor(random_model, device="cpu")
    measured = {"liver_volume_ml": 1500.0, "tumor_count": 2, "tumor_volume_ml": 0.74}
    assert any(w.startswith("only 0.7 mL of tumor found") and "not meaningful" in w
               for w in predictor._content_warnings(measured, False))
    assert predictor._content_warnings(dict(measured, tumor_volume_ml=12.0), False) == []
    assert predictor._content_warnings(measured, True) == []  # a mask the user drew is theirs to judge


def test_empty_tumor_mask_warns(packages, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    mask = bad.empty_mask(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([ct], out_dir, packages["one"], "--tumor-mask", mask), capfd)
    assert code == 0, err
    result = load_result(out_dir)
    assert result["tumor_source"] == "user mask"
    assert any(mask in w and "tumor mask is empty" in w for w in result["warnings"]), result["warnings"]
    assert any("no tumor in the given mask" in w for w in result["warnings"]), result["warnings"]


# ---- output folder ----------------------------------------------------------------------------------------


def _old_results(out_dir):
    out_dir.mkdir()
    contents = {}
    for name in OUTPUT_NAMES:
        (out_dir / name).write_bytes(b"old " + name.encode())
        os.utime(str(out_dir / name), (1_000_000_000, 1_000_000_000))
        contents[name] = b"old " + name.encode()
    return contents


def _assert_untouched(out_dir, contents):
    assert sorted(os.listdir(str(out_dir))) == sorted(contents), os.listdir(str(out_dir))
    for name, data in contents.items():
        assert (out_dir / name).read_bytes() == data
        assert os.stat(str(out_dir / name)).st_mtime == 1_000_000_000


def test_existing_results_need_overwrite(packages, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    out_dir = tmp_path / "out"
    contents = _old_results(out_dir)
    code, _, err = run_cli(predict_args([ct], out_dir, packages["one"]), capfd)
    assert code == 2, err
    assert_one_error_line(err, out_dir, "--overwrite")
    _assert_untouched(out_dir, contents)


def test_overwrite_with_bad_input_keeps_old_results(packages, tmp_path, capfd):
    path = bad.truncated_nrrd(tmp_path)
    out_dir = tmp_path / "out"
    contents = _old_results(out_dir)
    code, _, err = run_cli(predict_args([path], out_dir, packages["one"], "--overwrite"), capfd)
    assert code == 2, err
    assert_one_error_line(err, path, "truncated")
    _assert_untouched(out_dir, contents)


def test_overwrite_replaces_old_results(packages, tmp_path, capfd):
    """The control for the two above: with --overwrite and good input the old files are replaced."""
    ct = bad.good_ct(tmp_path)
    out_dir = tmp_path / "out"
    _old_results(out_dir)
    code, _, err = run_cli(predict_args([ct], out_dir, packages["one"], "--overwrite"), capfd)
    assert code == 0, err
    assert load_result(out_dir)["inputs"] == [os.path.abspath(ct)]


def test_output_path_is_a_file(packages, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    out_file = tmp_path / "out.txt"
    out_file.write_text("keep me")
    code, _, err = run_cli(predict_args([ct], out_file, packages["one"]), capfd)
    assert code == 2, err
    assert_one_error_line(err, out_file, "not a folder")
    assert out_file.read_text() == "keep me"


def test_bad_input_leaves_existing_empty_outdir_empty(packages, tmp_path, capfd):
    path = bad.nan_voxels(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_cli(predict_args([path], out_dir, packages["one"]), capfd)
    assert code == 2, err
    assert_one_error_line(err, path, "NaN")
    assert_no_outputs(out_dir, existed_before=True)


# ---- unexpected failures (exit 1) still end in one line and leave nothing half-written -------------------


def test_unexpected_error_is_one_line_exit_1(packages, tmp_path, capfd, monkeypatch):
    from TACEResponseLib import predictor

    def broken(self, *args, **kwargs):
        raise ValueError("simulated bug\nwith a second line")

    monkeypatch.setattr(predictor.Predictor, "predict", broken)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([bad.good_ct(tmp_path)], out_dir, packages["one"]), capfd)
    assert code == 1, err
    assert_one_error_line(err, "unexpected ValueError: simulated bug", "--debug")
    assert "second line" not in err
    assert_no_outputs(out_dir)


@pytest.mark.parametrize("with_old_results", [False, True], ids=["new-outdir", "old-results-with-overwrite"])
def test_failed_write_leaves_nothing_behind(with_old_results, packages, tmp_path, capfd, monkeypatch):
    from TACEResponseLib import image_io

    def disk_full(image, path, compress=True):
        Path(str(path) + ".partial.nii.gz").write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_io, "write_atomically", disk_full)
    out_dir = tmp_path / "out"
    contents = _old_results(out_dir) if with_old_results else None
    argv = predict_args([bad.good_ct(tmp_path)], out_dir, packages["one"], *(["--overwrite"] if contents else []))
    code, _, err = run_cli(argv, capfd)
    assert code == 1, err
    assert_one_error_line(err, "No space left on device")
    if contents:
        _assert_untouched(out_dir, contents)
    else:
        assert_no_outputs(out_dir)


# ---- model problems (exit 3) ------------------------------------------------------------------------------


def _missing_path(package, folder):
    return Path(folder) / "no_such_model"


def _tampered(package, folder):
    target = bad.copy_package(package, folder)
    bad.tamper_weights(target)
    return target


def _invalid_json(package, folder):
    target = bad.copy_package(package, folder)
    (target / "model.json").write_text('{"name": "random", "version": ', encoding="utf-8")
    return target


def _json_null(package, folder):
    target = bad.copy_package(package, folder)
    (target / "model.json").write_text("null\n", encoding="utf-8")
    return target


def _card_lacks_keys(package, folder):
    target = bad.copy_package(package, folder)
    bad.write_card(target, {"name": "random"})
    return target


def _weight_entry_without_sha(package, folder):
    target = bad.copy_package(package, folder)
    card = bad.read_card(target)
    del card["weights"][0]["sha256"]
    bad.write_card(target, card)
    return target


def _weights_missing(package, folder):
    target = bad.copy_package(package, folder)
    (target / "weights.safetensors").unlink()
    return target


def _truncated_weights(package, folder):
    target = bad.copy_package(package, folder)
    bad.truncate_weights_keep_card_consistent(target)
    return target


def _other_network(package, folder):
    target = bad.copy_package(package, folder)
    bad.card_for_other_network(target)
    return target


def _folder_without_card(package, folder):
    target = Path(folder) / "just_a_folder"
    target.mkdir()
    (target / "weights.safetensors").write_bytes(b"\0" * 64)
    return target


def _plain_file(package, folder):
    target = Path(folder) / "model.bin"
    target.write_bytes(b"\0" * 64)
    return target


def _corrupt_zip(package, folder):
    return bad.zip_package(package, folder, corrupt=True)


# id -> (builder, fragment)
BAD_MODELS = {
    "model-path-does-not-exist": (_missing_path, "model package"),
    "weights-sha256-differs-from-card": (_tampered, "SHA-256 mismatch"),
    "model-json-not-json": (_invalid_json, "not valid JSON"),
    "model-json-is-null": (_json_null, "model.json"),
    "model-json-lacks-keys": (_card_lacks_keys, "lacks"),
    "weight-entry-without-sha256": (_weight_entry_without_sha, "sha256"),
    "weight-file-missing": (_weights_missing, "weight file missing"),
    "truncated-safetensors-with-matching-card": (_truncated_weights, "cannot read weights"),
    "card-describes-another-network": (_other_network, "do not match the network"),
    "folder-without-model-json": (_folder_without_card, "model card not found"),
    "plain-file-as-model": (_plain_file, "not a model package"),
    "corrupt-zip-package": (_corrupt_zip, "corrupt archive"),
}


@pytest.mark.parametrize("builder, fragment", list(BAD_MODELS.values()), ids=list(BAD_MODELS))
def test_bad_model_exits_3(builder, fragment, packages, tmp_path, capfd):
    ct = bad.good_ct(tmp_path)
    (tmp_path / "models").mkdir()
    model = builder(packages["one"], tmp_path / "models")
    out_dir = tmp_path / "out"
    code, out, err = run_cli(predict_args([ct], out_dir, model), capfd)
    assert code == 3, err
    assert_one_error_line(err, model, fragment)
    assert out == ""
    assert_no_outputs(out_dir)


def test_good_zip_package_runs(packages, tmp_path, capfd):
    """The control for the corrupt archive: the same package zipped intact works."""
    archive = bad.zip_package(packages["one"], tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(predict_args([bad.good_ct(tmp_path)], out_dir, archive), capfd)
    assert code == 0, err
    assert load_result(out_dir)["model"]["name"] == "random"


# ---- usage (exit 2) ---------------------------------------------------------------------------------------


USAGE = {
    "missing-output": (["predict", "ct.nrrd"], "-o/--output"),
    "unknown-flag": (["predict", "ct.nrrd", "-o", "out", "--frobnicate"], "--frobnicate"),
    "no-command": ([], "give a command"),
    "no-inputs": (["predict", "-o", "out"], "INPUT"),
    "bad-device-choice": (["predict", "ct.nrrd", "-o", "out", "--device", "tpu"], "--device"),
    "bad-progress-choice": (["predict", "ct.nrrd", "-o", "out", "--progress", "loud"], "--progress"),
    "unknown-command": (["segment", "ct.nrrd"], "segment"),
}


@pytest.mark.parametrize("argv, fragment", list(USAGE.values()), ids=list(USAGE))
def test_usage_error_is_one_line(argv, fragment, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capfd)
    assert code == 2, err
    assert_one_error_line(err, fragment)
    assert out == ""
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: --device cuda is valid here")
def test_cuda_requested_without_gpu(packages, tmp_path, capfd):
    out_dir = tmp_path / "out"
    argv = predict_args([bad.good_ct(tmp_path)], out_dir, packages["one"])
    argv[argv.index("--device") + 1] = "cuda"
    code, _, err = run_cli(argv, capfd)
    assert code == 2, err
    assert_one_error_line(err, "--device cuda")
    assert_no_outputs(out_dir)


# ---- real processes: nothing but one line reaches the terminal --------------------------------------------


def _run_module(args, tmp_path):
    env = dict(os.environ, TACE_RESPONSE_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "TACEResponseLib"] + [str(a) for a in args], cwd=str(tmp_path),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                          universal_newlines=True)


def test_subprocess_usage_error(tmp_path):
    proc = _run_module(["predict", "ct.nrrd", "-o", "out", "--bogus-flag"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, "--bogus-flag")
    assert proc.stdout == ""


def test_subprocess_native_reader_message_stays_hidden(packages, tmp_path):
    """MetaIO prints "data not read completely" to the C stderr; the user must see only our line."""
    path = bad.truncated_mha_compressed(tmp_path)
    out_dir = tmp_path / "out"
    proc = _run_module(predict_args([path], out_dir, packages["one"]), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, path, "truncated")
    assert proc.stdout == ""
    assert_no_outputs(out_dir)


def test_subprocess_checksum_mismatch(packages, tmp_path):
    model = _tampered(packages["one"], tmp_path)
    out_dir = tmp_path / "out"
    proc = _run_module(predict_args([bad.good_ct(tmp_path)], out_dir, model), tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert_one_error_line(proc.stderr, model, "SHA-256 mismatch")
    assert proc.stdout == ""
    assert_no_outputs(out_dir)

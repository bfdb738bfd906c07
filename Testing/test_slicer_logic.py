"""The Slicer logic (TACEResponseLib.slicer_logic + process_runner) against slicer-core's real MRML classes.

No Qt and no Slicer application: the scene is wired like Slicer's (see slicer_fixtures.SceneHarness).
The real CLI runs twice on the real CT (Predict, then Update with an edited tumor), with a small
random-weights model: labels are arbitrary, so the checks are about geometry, voxel equality, the
table, the correction loop and saving, not about segmentation quality.
"""

import json
import os
import sys
import time
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (MRML classes) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)
pytest.importorskip("torch")
import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slicer_fixtures as fx  # noqa: E402
from TACEResponseLib import slicer_logic as sl  # noqa: E402
from TACEResponseLib.process_runner import ProcessRunner, run_to_completion  # noqa: E402

CLI_TIMEOUT_S = 600


# -------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "test-random"
    fx.write_random_model(folder)
    return str(folder)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the core's model cache out of the user's home folder (the child process inherits this)."""
    old = os.environ.get("TACE_RESPONSE_CACHE")
    os.environ["TACE_RESPONSE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("TACE_RESPONSE_CACHE", None)
    else:
        os.environ["TACE_RESPONSE_CACHE"] = old


def _logic(harness, tmp_path):
    return sl.TACEResponseSceneLogic(harness.scene, sys.executable, temp_root=str(tmp_path))


def _label_array(scene, segmentation_node, reference, labels):
    ids = sl.segment_ids(segmentation_node, labels)
    masks = sl.segment_masks(scene, segmentation_node, reference, ids)
    array = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for label in sorted(labels, key=lambda item: item["value"]):
        array[masks[label["name"]]] = label["value"]
    return array


def _region(entry):
    """The anatomic region code of a terminology entry (renamed 'region' in recent Slicer)."""
    return entry.GetRegionObject() if hasattr(entry, "GetRegionObject") else entry.GetAnatomicRegionObject()


def _geometry(image):
    return (image.GetSize(), tuple(np.round(image.GetOrigin(), 4)), tuple(np.round(image.GetSpacing(), 5)),
            tuple(np.round(image.GetDirection(), 6)))


@pytest.fixture(scope="module")
def real_case(model_dir, tmp_path_factory):
    """The real CT (DICOM, through a storage node) under a study -> Predict with the real CLI (run 1 of 2)."""
    if not os.path.isdir(fx.HCC_TACE_CT):
        pytest.skip("real CT not available: {} is absent (it is in CI; see ../shared/data/README.md)".format(
            os.path.normpath(fx.HCC_TACE_CT)))
    harness = fx.SceneHarness()
    volume = fx.load_dicom_series(harness, fx.HCC_TACE_CT, name="HCC_048 PV")
    study = fx.add_study(harness, volume)
    before = harness.node_ids()
    work = tmp_path_factory.mktemp("work")
    logic = _logic(harness, work)
    job = logic.start_predict([volume], model_dir, device="cpu")
    stages = []
    started = time.perf_counter()
    outcome = logic.run(job, on_progress=lambda stage, fraction: stages.append((stage, fraction)),
                        timeout=CLI_TIMEOUT_S, keep_files=True)
    seconds = time.perf_counter() - started
    cli_image = sitk.ReadImage(os.path.join(job.output_dir, "segmentation.nii.gz"))
    with open(os.path.join(job.output_dir, "result.json"), encoding="utf-8") as stream:
        cli_result = json.load(stream)
    logic.discard(job)
    segmentation = outcome["segmentation"]
    labels = job.labels
    return types.SimpleNamespace(
        harness=harness, volume=volume, study=study, logic=logic, job=job, outcome=outcome, stages=stages,
        seconds=seconds, before=before, after=harness.node_ids(), cli_image=cli_image, cli_result=cli_result,
        labels=labels, predicted_labels=_label_array(harness.scene, segmentation, volume, labels),
        predicted_table=sl.table_values(outcome["table"]), model_dir=model_dir, work=work)


TUMOR_BOX = ((40, 52), (230, 262), (200, 236))  # k, j, i on the real CT grid: 12 x 32 x 36 voxels


@pytest.fixture(scope="module")
def updated_case(real_case):
    """Paint a known tumor block into the Tumor segment, then Update (run 2 of 2)."""
    case = real_case
    segmentation = case.outcome["segmentation"]
    tumor_id = sl.segment_ids(segmentation, case.labels)["Tumor"]
    fx.paint_block(case.harness, segmentation, tumor_id, case.volume, TUMOR_BOX)
    stale_before_update = not case.logic.result_is_current(segmentation)
    edited = sl.edited_segments(case.harness.scene, segmentation)
    guard = None
    try:
        case.logic.start_predict([case.volume], case.model_dir, device="cpu", segmentation_node=segmentation)
    except sl.EditedSegmentationError as exc:
        guard = exc
    masks = sl.segment_masks(case.harness.scene, segmentation, case.volume, sl.segment_ids(segmentation, case.labels))
    job = case.logic.start_update(segmentation, case.model_dir, device="cpu")
    mask_path = job.command[job.command.index("--tumor-mask") + 1]
    mask_array = sitk.GetArrayFromImage(sitk.ReadImage(mask_path))
    outcome = case.logic.run(job, timeout=CLI_TIMEOUT_S)
    return types.SimpleNamespace(case=case, outcome=outcome, masks=masks, mask_array=mask_array, job=job,
                                 edited=edited, guard=guard, stale_before_update=stale_before_update,
                                 table=sl.table_values(outcome["table"]))


@pytest.fixture(scope="module")
def reloaded_case(updated_case, tmp_path_factory):
    """Save the scene (.mrml + .nrrd + .seg.nrrd + .tsv) with a module parameter node, and reopen it."""
    case = updated_case.case
    scene = case.harness.scene
    parameters = slicer.vtkMRMLScriptedModuleNode()
    parameters.SetName("TACEResponse")
    parameters.SetAttribute("ModuleName", "TACEResponse")
    scene.AddNode(parameters)
    parameters.SetParameter("model", case.model_dir)
    parameters.SetParameter("device", "cpu")
    parameters.SetNodeReferenceID("inputVolume1", case.volume.GetID())
    parameters.SetNodeReferenceID("outputSegmentation", updated_case.outcome["segmentation"].GetID())
    parameters.SetNodeReferenceID("resultTable", updated_case.outcome["table"].GetID())
    folder = tmp_path_factory.mktemp("saved")
    mrml = fx.save_scene(case.harness, folder, {
        case.volume: "ct.nrrd",
        updated_case.outcome["segmentation"]: "segmentation.seg.nrrd",
        updated_case.outcome["table"]: "response.tsv",
    })
    reopened = fx.SceneHarness.load(mrml)
    return types.SimpleNamespace(updated=updated_case, harness=reopened, folder=str(folder), files=os.listdir(folder))


# -------------------------------------------------------------------------------------------------------
# Predict on the real CT


def test_predict_segmentation_equals_cli_output_voxel_for_voxel(real_case):
    cli = sitk.GetArrayFromImage(real_case.cli_image)
    assert cli.shape == real_case.predicted_labels.shape == slicer.util.arrayFromVolume(real_case.volume).shape
    assert np.array_equal(real_case.predicted_labels, cli)
    # the CLI wrote its labelmap on the volume node's own grid
    assert _geometry(real_case.cli_image) == _geometry(sl.sitk_image(cli, real_case.volume))


def test_predict_segments_names_colors_terminology(real_case):
    segmentation = real_case.outcome["segmentation"]
    assert segmentation.GetName() == "HCC_048 PV TACE segmentation"
    assert segmentation.GetNodeReference("referenceImageGeometryRef") is real_case.volume
    assert segmentation.GetDisplayNode() is not None and segmentation.GetDisplayNode().GetVisibility3D()
    seg = segmentation.GetSegmentation()
    names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    assert names == ["Liver", "Tumor"]
    codes = {}
    for label in real_case.labels:
        segment = seg.GetSegment(sl.segment_ids(segmentation, real_case.labels)[label["name"]])
        assert segment.GetColor() == pytest.approx(tuple(label["color"]))
        tag = vtk.reference("")
        assert segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(str(tag), entry)
        codes[label["name"]] = (entry.GetCategoryObject().GetCodeValue(), entry.GetTypeObject().GetCodingSchemeDesignator(),
                                entry.GetTypeObject().GetCodeValue(), _region(entry).GetCodeValue() or "")
    assert codes == {"Liver": ("123037004", "SCT", "10200004", ""),
                     "Tumor": ("49755003", "SCT", "108369006", "10200004")}


def test_predict_table_subject_hierarchy_and_clean_scene(real_case):
    table = real_case.outcome["table"]
    values = real_case.predicted_table
    result = real_case.cli_result
    assert table.GetName() == "HCC_048 PV TACE response"
    assert float(values["response_probability"]) == pytest.approx(result["response_probability"], abs=1e-4)
    assert values["risk_category"] == result["risk_category"] in ("low", "high")
    assert float(values["risk_cutoff"]) == pytest.approx(result["risk_cutoff"])
    assert values["model_name"] == "test-random" and values["model_version"] == "0.0.1"
    assert values["model_sha256"] == result["model"]["sha256"] and len(values["model_sha256"]) == 64
    assert values["device"] == "cpu"
    assert values["intended_use"].endswith("not for clinical use")
    for key, value in result["measurements"].items():
        assert float(values[key]) == pytest.approx(value), key
    assert values["tumor_edited"] == "no" and values["measured_on"] == "model output"
    assert table.GetTable().GetColumnByName("Measurement") is not None
    assert sl.table_result(table)["inputs"] == ["HCC_048 PV"]
    # outputs sit under the volume's study
    hierarchy = real_case.harness.hierarchy
    for node in (real_case.outcome["segmentation"], table):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == real_case.study
    # nothing else was left in the scene (no temporary labelmaps or color tables), temporary files gone
    added = sorted(set(real_case.after) - set(real_case.before))
    classes = sorted(real_case.harness.scene.GetNodeByID(i).GetClassName() for i in added)
    assert classes == ["vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode"]
    assert os.listdir(str(real_case.work)) == []


def test_predict_progress_reaches_the_network_and_is_monotonic(real_case):
    stages = [stage for stage, _ in real_case.stages]
    assert {"load model", "network", "done"} <= set(stages)
    fractions = [fraction for _, fraction in real_case.stages]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0


# -------------------------------------------------------------------------------------------------------
# correction loop


def test_edited_segmentation_is_protected_from_a_new_predict(updated_case):
    assert updated_case.edited == ["Tumor"]
    assert updated_case.stale_before_update
    assert isinstance(updated_case.guard, sl.EditedSegmentationError) and updated_case.guard.edited == ["Tumor"]
    case = updated_case.case
    segmentation = updated_case.outcome["segmentation"]
    # without a segmentation given, Predict goes to a new node; overwriting needs explicit consent
    job = case.logic.start_predict([case.volume], case.model_dir, device="cpu")
    assert job.segmentation_id is None
    case.logic.discard(job)
    job = case.logic.start_predict([case.volume], case.model_dir, device="cpu", segmentation_node=segmentation,
                                   overwrite_edited=True)
    assert job.segmentation_id == segmentation.GetID()
    case.logic.discard(job)
    assert not os.path.exists(job.work_dir)


def test_update_sends_the_edited_tumor_and_records_it(updated_case):
    case = updated_case.case
    tumor = updated_case.masks["Tumor"]
    (k0, k1), (j0, j1), (i0, i1) = TUMOR_BOX
    assert tumor[k0:k1, j0:j1, i0:i1].all()
    # the mask file given to --tumor-mask is the Tumor segment on the CT grid, voxel for voxel
    assert np.array_equal(updated_case.mask_array > 0, tumor)
    voxel_ml = float(np.prod(case.volume.GetSpacing())) / 1000.0
    table = updated_case.table
    assert float(table["tumor_volume_ml"]) == pytest.approx(tumor.sum() * voxel_ml, abs=0.01)
    assert float(table["tumor_volume_ml"]) >= 12 * 32 * 36 * voxel_ml - 0.01
    assert float(table["tumor_volume_ml"]) != pytest.approx(float(case.predicted_table["tumor_volume_ml"]))
    assert int(table["tumor_count"]) >= 1
    assert float(table["largest_tumor_diameter_mm"]) >= 35 * case.volume.GetSpacing()[0]
    assert table["tumor_edited"] == "yes" and table["liver_edited"] == "no"
    assert table["tumor_source"].startswith("user mask") and table["measured_on"] == "edited segmentation"
    result = updated_case.outcome["result"]
    # the CLI saw exactly the edited tumor: its tumor measurement equals the segmentation's
    assert result["measurements_from_command"]["tumor_volume_ml"] == pytest.approx(float(table["tumor_volume_ml"]),
                                                                                 abs=0.01)
    assert case.logic.result_is_current(updated_case.outcome["segmentation"])
    assert updated_case.outcome["table"] is case.outcome["table"]  # the same table, updated in place


# -------------------------------------------------------------------------------------------------------
# saving and reopening


def test_scene_saved_and_reloaded_intact(reloaded_case):
    assert {"scene.mrml", "ct.nrrd", "segmentation.seg.nrrd", "response.tsv"} <= set(reloaded_case.files)
    updated = reloaded_case.updated
    scene = reloaded_case.harness.scene
    segmentation = scene.GetFirstNodeByName("HCC_048 PV TACE segmentation")
    table = scene.GetFirstNodeByName("HCC_048 PV TACE response")
    volume = scene.GetFirstNodeByName("HCC_048 PV")
    assert segmentation is not None and table is not None and volume is not None
    labels = sl.labels_of(segmentation)
    assert [label["name"] for label in labels] == ["Liver", "Tumor"]
    before = _label_array(updated.case.harness.scene, updated.outcome["segmentation"], updated.case.volume, labels)
    assert np.array_equal(_label_array(scene, segmentation, volume, labels), before)
    assert sl.input_volumes(segmentation) == [volume]
    assert segmentation.GetNodeReference(sl.REF_RESULT_TABLE) is table
    tag = vtk.reference("")
    tumor = segmentation.GetSegmentation().GetSegment(sl.segment_ids(segmentation, labels)["Tumor"])
    assert tumor.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag) and "108369006" in str(tag)
    assert sl.table_values(table) == updated.table
    assert sl.table_result(table)["tumor_edited"] is True
    # the edit state survives: still edited against the model output, and the result is current
    assert sl.edited_segments(scene, segmentation) == ["Tumor"]
    assert sl.TACEResponseSceneLogic(scene, sys.executable).result_is_current(segmentation)
    hierarchy = reloaded_case.harness.hierarchy
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
    assert hierarchy.GetItemLevel(study) == "Study"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentation)) == study
    parameters = scene.GetFirstNodeByName("TACEResponse")
    assert parameters.GetParameter("device") == "cpu"
    assert parameters.GetNodeReference("outputSegmentation") is segmentation
    assert parameters.GetNodeReference("resultTable") is table
    assert parameters.GetNodeReference("inputVolume1") is volume


# -------------------------------------------------------------------------------------------------------
# without the real CT: files, import, progress, errors, cancel


@pytest.fixture()
def small_case(tmp_path):
    harness = fx.SceneHarness()
    volume = fx.add_volume(harness, fx.synthetic_ct(), spacing=(1.5, 1.5, 3.0), origin=(10.0, -20.0, 5.0),
                           directions=[[-1, 0, 0], [0, -1, 0], [0, 0, 1]], name="small CT")
    return types.SimpleNamespace(harness=harness, volume=volume, tmp=tmp_path)


def test_write_volume_keeps_geometry_and_scene(small_case):
    ids = small_case.harness.node_ids()
    path = sl.write_volume(small_case.volume, small_case.tmp / "ct.nrrd")
    assert small_case.harness.node_ids() == ids and small_case.volume.GetStorageNode() is None
    image = sitk.ReadImage(path)
    array = slicer.util.arrayFromVolume(small_case.volume)
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert _geometry(image) == _geometry(sl.sitk_image(array, small_case.volume))
    assert image.GetOrigin() == pytest.approx((-10.0, 20.0, 5.0))  # RAS (10, -20, 5) in LPS


def _labels_file(tmp, volume, array, name="labels.nii.gz"):
    reference = sitk.ReadImage(sl.write_volume(volume, tmp / "reference.nrrd"))
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    path = str(tmp / name)
    sitk.WriteImage(image, path)
    return path


def test_import_updates_segments_in_place_and_clears_absent_labels(small_case):
    card = fx.random_model_card()
    shape = slicer.util.arrayFromVolume(small_case.volume).shape
    labels = np.zeros(shape, np.uint8)
    labels[10:30, 20:40, 15:35] = 1
    labels[18:22, 28:32, 23:27] = 2
    scene = small_case.harness.scene
    first = sl.import_segmentation(scene, _labels_file(small_case.tmp, small_case.volume, labels), card["labels"],
                                   small_case.volume)
    assert np.array_equal(_label_array(scene, first, small_case.volume, card["labels"]), labels)
    ids = sl.segment_ids(first, card["labels"])
    labels[labels == 2] = 1  # the next prediction has no tumor
    second = sl.import_segmentation(scene, _labels_file(small_case.tmp, small_case.volume, labels, "b.nii.gz"),
                                    card["labels"], small_case.volume, first)
    assert second is first and sl.segment_ids(second, card["labels"]) == ids
    assert second.GetSegmentation().GetNumberOfSegments() == 2
    assert np.array_equal(_label_array(scene, second, small_case.volume, card["labels"]), labels)


def test_import_renumbers_card_values_and_refuses_another_grid(small_case):
    card = fx.random_model_card()
    card["labels"][0]["value"], card["labels"][1]["value"] = 5, 9
    shape = slicer.util.arrayFromVolume(small_case.volume).shape
    labels = np.zeros(shape, np.uint8)
    labels[5:10, 5:10, 5:10] = 5
    labels[12:14, 12:14, 12:14] = 9
    scene = small_case.harness.scene
    node = sl.import_segmentation(scene, _labels_file(small_case.tmp, small_case.volume, labels), card["labels"],
                                  small_case.volume)
    assert np.array_equal(_label_array(scene, node, small_case.volume, card["labels"]), labels)
    other = fx.add_volume(small_case.harness, np.zeros((10, 20, 30), np.int16), name="other")
    with pytest.raises(sl.SlicerLogicError, match="does not match the grid"):
        sl.import_segmentation(scene, _labels_file(small_case.tmp, small_case.volume, labels, "c.nii.gz"),
                               card["labels"], other)


def test_terminology_entry_format_and_defaults():
    entry = sl.terminology_entry({"name": "Tumor", "value": 2})  # no terminology in the card: defaults
    parsed = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(entry, parsed)
    assert parsed.GetTypeObject().GetCodeValue() == "108369006"
    assert _region(parsed).GetCodeMeaning() == "Liver"
    assert sl.terminology_entry({"name": "Spleen", "value": 3}) is None
    assert sl.label_color({"name": "x", "color": [255, 0, 0]}) == (1.0, 0.0, 0.0)


def test_measure_masks_matches_the_core(small_case):
    from TACEResponseLib import measurements

    card = fx.random_model_card()
    shape = slicer.util.arrayFromVolume(small_case.volume).shape
    liver = np.zeros(shape, bool)
    liver[5:35, 10:50, 10:50] = True
    tumor = np.zeros(shape, bool)
    tumor[15:20, 20:30, 20:34] = True
    labels = np.where(tumor, 2, np.where(liver, 1, 0)).astype(np.uint8)
    reference = sitk.ReadImage(sl.write_volume(small_case.volume, small_case.tmp / "ref.nrrd"))
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    assert sl.measure_masks({"Liver": liver, "Tumor": tumor}, card["labels"], small_case.volume) == \
        measurements.measure(image, 1, 2)


def test_check_inputs_explains_what_is_missing(small_case):
    volume = small_case.volume
    assert sl.check_inputs([volume], ["portal_venous"]) is None
    assert sl.check_inputs([], ["portal_venous"]) == "Select the portal venous CT volume."
    assert "same volume" in sl.check_inputs([volume, volume], ["arterial", "portal_venous"])
    assert "at most" in sl.check_inputs([volume] * 5, ["a", "b", "c", "d", "e"])
    empty = slicer.vtkMRMLScalarVolumeNode()
    empty.SetName("empty")
    assert sl.check_inputs([empty], ["pv"]) == "empty has no image data."


def test_command_environment_progress_and_errors(tmp_path):
    command = sl.predict_command("PythonSlicer", ["a.nrrd"], "out", "demo", "cpu", "mask.nrrd")
    assert command == ["PythonSlicer", "-m", "TACEResponseLib", "predict", "a.nrrd", "-o", "out", "--progress",
                       "jsonl", "--device", "cpu", "--model", "demo", "--tumor-mask", "mask.nrrd"]
    env = sl.child_environment(base={"PYTHONPATH": os.pathsep.join(["x", sl.LIB_PARENT])})
    assert env["PYTHONPATH"].split(os.pathsep) == [sl.LIB_PARENT, "x"]
    assert os.path.isfile(os.path.join(sl.LIB_PARENT, "TACEResponseLib", "__main__.py"))
    job = sl.PredictionJob("predict", command, env, str(tmp_path), str(tmp_path / "out"), [], "demo",
                           fx.random_model_card())
    assert not job.handle_line("some log line")
    assert job.handle_line('{"stage": "network", "progress": 0.5}') and job.stage == "network"
    middle = job.fraction
    assert job.handle_line('{"stage": "read", "progress": 0.0}') and job.fraction == middle  # never backwards
    assert job.handle_line('{"stage": "result", "progress": 1.0, "output": "out"}') and job.fraction == 0.95
    assert sl.error_message(2, "warning: x\nerror: ct.nrrd: file is empty\n") == "ct.nrrd: file is empty"
    assert "exit code 1" in sl.error_message(1, "Traceback (most recent call last):\nboom")
    assert "stopped" in sl.error_message(-15, "")


def test_model_choices_from_registry_and_folders(tmp_path, model_dir):
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps({"models": [
        {"name": "local", "path": os.path.relpath(model_dir, str(tmp_path)), "title": "Local test model"},
        {"name": "remote", "url": "https://example.invalid/remote.zip", "sha256": "0" * 64, "title": "Remote",
         "phases": ["arterial", "portal_venous"]},
    ]}))
    choices = sl.model_choices(registry, folders=[model_dir, str(tmp_path / "gone")])
    assert [(c.key, c.source, c.available) for c in choices] == [
        ("local", "bundled", True), ("remote", "download", False), (model_dir, "folder", True)]
    assert choices[0].phases == ["portal_venous"] and choices[1].phases == ["arterial", "portal_venous"]
    assert choices[0].intended_use.endswith("not for clinical use")
    missing = sl.model_choices(tmp_path / "nothing.json")
    assert missing[0].available is False and "cannot read model registry" in missing[0].problem


def test_dependency_helpers():
    # devices: Testing/test_slicer_environment.py (probed in a child process, never in Slicer's)
    assert sl.missing_packages(("numpy", "surely_not_a_package_xyz")) == ["surely_not_a_package_xyz"]
    constraints = sl.pip_constraints()
    assert "numpy==" in constraints and "SimpleITK==" in constraints


def _alive(pid):
    try:
        with open("/proc/{}/stat".format(pid)) as stream:
            return stream.read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="checks processes through /proc")
def test_cancel_kills_the_process_tree():
    code = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(child.pid, flush=True); time.sleep(60)")
    runner = ProcessRunner([sys.executable, "-c", code]).start()
    deadline = time.monotonic() + 30
    lines = []
    while not lines and time.monotonic() < deadline:
        lines = runner.read_lines()
        time.sleep(0.02)
    grandchild = int(lines[0])
    assert _alive(runner.pid) and _alive(grandchild)
    runner.cancel()
    assert runner.poll() is not None
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(runner.pid) and not _alive(grandchild)


def test_run_to_completion_collects_lines_and_stderr():
    code = "import sys; print('a'); print('b'); sys.stderr.write('error: bad input\\n'); sys.exit(2)"
    lines = []
    exit_code, stderr_text = run_to_completion([sys.executable, "-c", code], on_line=lines.append)
    assert (exit_code, lines, stderr_text) == (2, ["a", "b"], "error: bad input")
    with pytest.raises(TimeoutError):
        run_to_completion([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


def test_cancel_of_a_real_prediction_leaves_the_scene_unchanged(small_case, model_dir):
    logic = _logic(small_case.harness, small_case.tmp / "work")
    ids = small_case.harness.node_ids()
    job = logic.start_predict([small_case.volume], model_dir, device="cpu")
    runner = ProcessRunner(job.command, env=job.env).start()
    deadline = time.monotonic() + 120
    while job.stage == "starting" and runner.poll() is None and time.monotonic() < deadline:
        for line in runner.read_lines():
            job.handle_line(line)
        time.sleep(0.02)
    assert job.stage != "starting", runner.stderr_text  # the real CLI started and reported progress
    runner.cancel()
    logic.discard(job)
    assert runner.poll() is not None and not os.path.exists(job.work_dir)
    assert small_case.harness.node_ids() == ids


def test_cli_error_is_one_line_and_scene_unchanged(small_case, model_dir):
    logic = _logic(small_case.harness, small_case.tmp / "work")
    ids = small_case.harness.node_ids()
    job = logic.start_predict([small_case.volume], model_dir, device="cpu")
    with open(job.command[4], "wb") as stream:  # the written input, damaged before the CLI reads it
        stream.write(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 64 64 40\nencoding: raw\n\n\x00\x01")
    with pytest.raises(sl.PredictionFailed) as failure:
        logic.run(job, timeout=CLI_TIMEOUT_S)
    message = str(failure.value)
    assert failure.value.exit_code == 2 and "\n" not in message and "Traceback" not in message
    assert os.path.basename(job.command[4]) in message
    assert small_case.harness.node_ids() == ids and not os.path.exists(job.work_dir)


def test_subject_hierarchy_without_study_goes_to_scene_root(small_case):
    table = slicer.vtkMRMLTableNode()
    small_case.harness.scene.AddNode(table)
    sl.place_in_subject_hierarchy(small_case.harness.scene, small_case.volume, [table])
    hierarchy = small_case.harness.hierarchy
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(table)) == hierarchy.GetSceneItemID()

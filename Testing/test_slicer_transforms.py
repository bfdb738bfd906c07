"""A CT under a parent transform (DICOM loading adds one for tilted or irregular series), against slicer-core.

The real CLI runs on the same small CT three times: without a transform, under a linear transform
(translation and rotation) for Predict and then Update. The segmentation must sit under the CT's
transform, equal the CLI's labelmap voxel for voxel on the CT grid, and give the measurements of the
untransformed case. A non-linear transform is refused with one clear message until the caller asks for a
hardened copy; then the prediction runs on the copy and the user's volume is untouched.
"""

import json
import os
import sys
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
from slicer_test_helpers import replace_segment, write_liver_model  # noqa: E402
from TACEResponseLib import slicer_logic as sl  # noqa: E402

CLI_TIMEOUT_S = 600
SPACING, ORIGIN = (1.5, 1.5, 3.0), (10.0, -20.0, 5.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "test-liver"
    write_liver_model(folder)
    return str(folder)


def _linear_transform(scene):
    """50 mm along R, 30 degrees about S and 10 about A: no axis stays aligned with the CT's."""
    transform = vtk.vtkTransform()
    transform.Translate(50.0, -12.0, 7.0)
    transform.RotateZ(30.0)
    transform.RotateY(10.0)
    node = slicer.vtkMRMLLinearTransformNode()
    node.SetName("acquisition")
    scene.AddNode(node)
    node.SetMatrixTransformToParent(transform.GetMatrix())
    return node


def _predict(harness, volume, model_dir, work):
    logic = sl.TACEResponseSceneLogic(harness.scene, sys.executable, temp_root=str(work))
    job = logic.start_predict([volume], model_dir, device="cpu")
    outcome = logic.run(job, timeout=CLI_TIMEOUT_S, keep_files=True)
    cli_labels = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(job.output_dir, "segmentation.nii.gz")))
    with open(os.path.join(job.output_dir, "result.json"), encoding="utf-8") as stream:
        cli_result = json.load(stream)
    logic.discard(job)
    return types.SimpleNamespace(logic=logic, job=job, outcome=outcome, cli_labels=cli_labels, cli_result=cli_result)


def _label_array(scene, segmentation_node, reference, labels):
    masks = sl.segment_masks(scene, segmentation_node, reference, sl.segment_ids(segmentation_node, labels))
    array = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for label in sorted(labels, key=lambda item: item["value"]):
        array[masks[label["name"]]] = label["value"]
    return array


@pytest.fixture(scope="module")
def plain(model_dir, tmp_path_factory):
    harness = fx.SceneHarness()
    volume = fx.add_volume(harness, fx.synthetic_ct(), spacing=SPACING, origin=ORIGIN, name="CT")
    return _predict(harness, volume, model_dir, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def transformed(model_dir, tmp_path_factory):
    harness = fx.SceneHarness()
    volume = fx.add_volume(harness, fx.synthetic_ct(), spacing=SPACING, origin=ORIGIN, name="CT")
    transform = _linear_transform(harness.scene)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    run = _predict(harness, volume, model_dir, tmp_path_factory.mktemp("transformed"))
    run.harness, run.volume, run.transform = harness, volume, transform
    return run


def test_segmentation_sits_under_the_ct_transform(transformed):
    segmentation = transformed.outcome["segmentation"]
    assert segmentation.GetTransformNodeID() == transformed.transform.GetID()
    assert segmentation.GetNodeReference("referenceImageGeometryRef") is transformed.volume


def test_segments_equal_the_cli_labelmap_on_the_ct_grid(transformed):
    labels = transformed.job.labels
    exported = _label_array(transformed.harness.scene, transformed.outcome["segmentation"], transformed.volume,
                            labels)
    assert exported.shape == transformed.cli_labels.shape == slicer.util.arrayFromVolume(transformed.volume).shape
    assert np.array_equal(exported, transformed.cli_labels)
    # not vacuous: the random model labels a part of the CT, not all of it and not nothing
    assert 0 < np.count_nonzero(exported) < exported.size


def test_segments_in_world_follow_the_transformed_ct(transformed):
    """A labelmap exported in world coordinates (no reference) lands where the transformed CT voxels are."""
    scene = transformed.harness.scene
    segmentation = transformed.outcome["segmentation"]
    liver_id = sl.segment_ids(segmentation, transformed.job.labels)["Liver"]
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(labelmap)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(liver_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap)
    array = slicer.util.arrayFromVolume(labelmap)
    k, j, i = np.argwhere(array > 0)[0]
    ijk_to_ras = vtk.vtkMatrix4x4()
    labelmap.GetIJKToRASMatrix(ijk_to_ras)
    local = ijk_to_ras.MultiplyPoint((float(i), float(j), float(k), 1.0))
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(labelmap.GetParentTransformNode(), None, to_world)
    world = to_world.TransformPoint(local[:3])
    # the CT voxel at that world point is a liver voxel of the CLI's labelmap
    from_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, transformed.volume.GetParentTransformNode(),
                                                         from_world)
    ras_to_ijk = vtk.vtkMatrix4x4()
    transformed.volume.GetRASToIJKMatrix(ras_to_ijk)
    ct_ijk = ras_to_ijk.MultiplyPoint(tuple(from_world.TransformPoint(world)) + (1.0,))
    ci, cj, ck = (int(round(v)) for v in ct_ijk[:3])
    assert transformed.cli_labels[ck, cj, ci] == 1


def test_measurements_and_response_equal_the_untransformed_case(plain, transformed):
    assert transformed.cli_result["measurements"] == plain.cli_result["measurements"]
    assert transformed.cli_result["response_probability"] == plain.cli_result["response_probability"]
    assert np.array_equal(transformed.cli_labels, plain.cli_labels)
    assert sl.table_values(transformed.outcome["table"])["liver_volume_ml"] == \
        sl.table_values(plain.outcome["table"])["liver_volume_ml"]


def test_update_under_the_transform_sends_the_painted_tumor(transformed):
    segmentation = transformed.outcome["segmentation"]
    tumor_id = sl.segment_ids(segmentation, transformed.job.labels)["Tumor"]
    painted = replace_segment(segmentation, tumor_id, transformed.volume, ((14, 22), (24, 36), (18, 30)))
    job = transformed.logic.start_update(segmentation, transformed.job.model_key, device="cpu")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(job.command[job.command.index("--tumor-mask") + 1])) > 0
    # the mask given to --tumor-mask is the edited Tumor segment on the CT grid, voxel for voxel
    assert np.array_equal(mask, painted)
    outcome = transformed.logic.run(job, timeout=CLI_TIMEOUT_S)
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    assert float(sl.table_values(outcome["table"])["tumor_volume_ml"]) == pytest.approx(mask.sum() * voxel_ml,
                                                                                      abs=0.01)
    assert outcome["result"]["measurements_from_command"]["tumor_volume_ml"] == pytest.approx(
        mask.sum() * voxel_ml, abs=0.01)


def _thin_plate_warp(scene):
    """A smooth non-linear warp of the CT's region: the box corners stay, its centre moves 4-6 mm."""
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for x in (0.0, 120.0):
        for y in (-30.0, 90.0):
            for z in (0.0, 130.0):
                source.InsertNextPoint(x, y, z)
                target.InsertNextPoint(x, y, z)
    source.InsertNextPoint(55.0, 28.0, 65.0)
    target.InsertNextPoint(60.0, 24.0, 71.0)
    spline = vtk.vtkThinPlateSplineTransform()
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.SetBasisToR()
    node = slicer.vtkMRMLTransformNode()
    node.SetName("irregular slices")
    scene.AddNode(node)
    node.SetAndObserveTransformToParent(spline)
    return node


def _ijk_to_ras(volume):
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture(scope="module")
def warped(model_dir, tmp_path_factory):
    """A CT under a linear transform under a non-linear one (non-linear to the world): refused first, then
    predicted on a hardened copy."""
    harness = fx.SceneHarness()
    volume = fx.add_volume(harness, fx.synthetic_ct(), spacing=SPACING, origin=ORIGIN, name="CT")
    warp = _thin_plate_warp(harness.scene)
    linear = _linear_transform(harness.scene)
    linear.SetAndObserveTransformNodeID(warp.GetID())
    volume.SetAndObserveTransformNodeID(linear.GetID())
    study = fx.add_study(harness, volume)
    run = types.SimpleNamespace(harness=harness, volume=volume, warp=warp, linear=linear, study=study,
                                voxels=slicer.util.arrayFromVolume(volume).copy(), geometry=_ijk_to_ras(volume))
    work = tmp_path_factory.mktemp("warped")
    run.logic = sl.TACEResponseSceneLogic(harness.scene, sys.executable, temp_root=str(work / "jobs"))
    run.before = harness.node_ids()
    with pytest.raises(sl.NonLinearTransformError) as refused:
        run.logic.start_predict([volume], model_dir, device="cpu")
    run.refused, run.after_refusal = refused.value, harness.node_ids()
    run.jobs_after_refusal = os.listdir(str(work / "jobs")) if os.path.isdir(str(work / "jobs")) else []
    # a job started on a copy and then discarded (Cancel) takes its copy with it
    job = run.logic.start_predict([volume], model_dir, device="cpu", harden_copies=True)
    run.discarded_copy = job.volume_ids[0]
    run.logic.discard(job)
    run.after_discard = harness.node_ids()
    run.job = run.logic.start_predict([volume], model_dir, device="cpu", harden_copies=True)
    run.outcome = run.logic.run(run.job, timeout=CLI_TIMEOUT_S, keep_files=True)
    run.cli_labels = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(run.job.output_dir, "segmentation.nii.gz")))
    run.logic.discard(run.job)
    run.copy = harness.scene.GetNodeByID(run.job.volume_ids[0])
    return run


def test_non_linear_transform_is_refused_until_a_copy_is_asked_for(warped):
    assert isinstance(warped.refused, sl.SlicerLogicError)
    assert warped.refused.volume_node is warped.volume and warped.refused.transform_node is warped.warp
    message = str(warped.refused)
    assert "CT is under the non-linear transform irregular slices" in message and "hardened copy" in message
    assert "CT" in warped.refused.question() and "stay as they are" in warped.refused.question()
    assert warped.after_refusal == warped.before and warped.jobs_after_refusal == []
    assert sl.check_inputs([warped.volume], ["portal_venous"]) is None  # Predict stays enabled: it asks
    assert sl.non_linear_transform(warped.volume) is warped.warp


def test_a_discarded_job_removes_its_copy(warped):
    assert warped.harness.scene.GetNodeByID(warped.discarded_copy) is None
    assert warped.after_discard == warped.before


def test_the_copy_is_hardened_and_the_original_untouched(warped):
    copy, volume = warped.copy, warped.volume
    assert copy is not None and copy is not volume and copy.GetName() == "CT (hardened)"
    assert copy.GetTransformNodeID() is None and copy.GetAttribute(sl.ATTR_HARDENED_FROM) == volume.GetID()
    # the original keeps its transform, voxels and grid
    assert volume.GetTransformNodeID() == warped.linear.GetID()
    assert np.array_equal(slicer.util.arrayFromVolume(volume), warped.voxels)
    assert np.allclose(_ijk_to_ras(volume), warped.geometry)
    # resampled through the warp, as Slicer's Harden transform does it on a copy of the same volume
    reference = slicer.vtkSlicerVolumesLogic.CloneVolume(warped.harness.scene, volume, "reference")
    assert slicer.vtkSlicerTransformLogic.hardenTransform(reference)
    assert np.array_equal(slicer.util.arrayFromVolume(copy), slicer.util.arrayFromVolume(reference))
    assert np.allclose(_ijk_to_ras(copy), _ijk_to_ras(reference))
    warped.harness.scene.RemoveNode(reference)
    # not a plain copy: the warp changed the grid or the voxels
    voxels = slicer.util.arrayFromVolume(copy)
    assert voxels.shape != warped.voxels.shape or not np.array_equal(voxels, warped.voxels)
    hierarchy = warped.harness.hierarchy  # beside the original, in its study
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(copy)) == warped.study


def test_the_segmentation_is_made_on_the_copy_voxel_for_voxel(warped):
    segmentation = warped.outcome["segmentation"]
    assert segmentation.GetNodeReference("referenceImageGeometryRef") is warped.copy
    assert segmentation.GetTransformNodeID() is None
    assert [node.GetID() for node in sl.input_volumes(segmentation)] == [warped.copy.GetID()]
    exported = _label_array(warped.harness.scene, segmentation, warped.copy, warped.job.labels)
    assert exported.shape == warped.cli_labels.shape == slicer.util.arrayFromVolume(warped.copy).shape
    assert np.array_equal(exported, warped.cli_labels)
    assert 0 < np.count_nonzero(exported) < exported.size
    assert warped.job.created_volume_ids == [warped.copy.GetID()] and warped.job.applied


def test_a_two_label_file_lands_voxel_for_voxel_under_the_transform(transformed, tmp_path):
    """Liver and tumor both (the liver-everywhere model predicts no tumor): a labelmap written on the CT's
    grid, as the CLI writes it, imported under the rotated and translated CT."""
    labels = np.zeros(slicer.util.arrayFromVolume(transformed.volume).shape, np.uint8)
    labels[8:30, 16:44, 12:40] = 1
    labels[14:20, 24:30, 20:26] = 2
    reference = sitk.ReadImage(sl.write_volume(transformed.volume, tmp_path / "ct.nrrd"))
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(tmp_path / "labels.nii.gz"))
    card_labels = transformed.job.labels
    node = sl.import_segmentation(transformed.harness.scene, str(tmp_path / "labels.nii.gz"), card_labels,
                                  transformed.volume)
    assert node.GetTransformNodeID() == transformed.transform.GetID()
    assert np.array_equal(_label_array(transformed.harness.scene, node, transformed.volume, card_labels), labels)

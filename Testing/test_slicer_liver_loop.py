"""The liver in the correction loop, against slicer-core with the real CLI: Update sends an edited Liver as
--liver-mask and the response changes; a liver taken from another segmentation node (e.g. TotalSegmentator's,
on its own grid and under its own transform) is copied onto the CT grid and used."""

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
SPACING = (1.5, 1.5, 3.0)
TUMOR_BOX = ((17, 23), (28, 36), (22, 30))
LIVER_BOX = ((8, 32), (18, 46), (12, 40))


def _mask_of(job, flag):
    return sitk.GetArrayFromImage(sitk.ReadImage(job.command[job.command.index(flag) + 1])) > 0


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "test-liver"
    write_liver_model(model)
    harness = fx.SceneHarness()
    volume = fx.add_volume(harness, fx.synthetic_ct(), spacing=SPACING, origin=(10.0, -20.0, 5.0), name="CT")
    logic = sl.TACEResponseSceneLogic(harness.scene, sys.executable, temp_root=str(tmp_path_factory.mktemp("w")))
    predicted = logic.run(logic.start_predict([volume], str(model), device="cpu"), timeout=CLI_TIMEOUT_S)
    segmentation = predicted["segmentation"]
    labels = sl.labels_of(segmentation)
    ids = sl.segment_ids(segmentation, labels)

    # 1. the tumor edited, the liver as predicted: no --liver-mask
    tumor = replace_segment(segmentation, ids["Tumor"], volume, TUMOR_BOX)
    tumor_job = logic.start_update(segmentation, str(model), device="cpu")
    tumor_only = logic.run(tumor_job, timeout=CLI_TIMEOUT_S)

    # 2. the liver edited too: --liver-mask with the Liver segment
    liver = replace_segment(segmentation, ids["Liver"], volume, LIVER_BOX)
    liver_job = logic.start_update(segmentation, str(model), device="cpu")
    liver_mask = _mask_of(liver_job, "--liver-mask")
    with_liver = logic.run(liver_job, timeout=CLI_TIMEOUT_S)
    return types.SimpleNamespace(harness=harness, volume=volume, logic=logic, model=str(model), labels=labels,
                                 ids=ids, segmentation=segmentation, predicted=predicted, tumor=tumor, liver=liver,
                                 tumor_job=tumor_job, tumor_only=tumor_only, liver_job=liver_job,
                                 liver_mask=liver_mask, with_liver=with_liver)


def test_unedited_liver_is_not_sent(loop):
    assert "--tumor-mask" in loop.tumor_job.command and "--liver-mask" not in loop.tumor_job.command
    result = loop.tumor_only["result"]  # (its table was updated in place by the next Update)
    assert result["liver_source"] == "predicted" and result["liver_edited"] is False


def test_edited_liver_is_sent_and_changes_the_response(loop):
    # the mask file is the Liver segment on the CT grid, voxel for voxel
    assert np.array_equal(loop.liver_mask, loop.liver)
    result = loop.with_liver["result"]
    assert result["liver_edited"] is True and result["tumor_edited"] is True
    assert result["liver_source"] == "user mask (edited Liver segment)"
    assert sl.table_values(loop.with_liver["table"])["liver_source"] == result["liver_source"]
    # the command pooled with the given liver: the response differs from the tumor-only Update
    assert result["response_probability"] != loop.tumor_only["result"]["response_probability"]
    # and measured it: liver (tumor included) = the Liver box plus the tumor box
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    organ_ml = np.count_nonzero(loop.liver | loop.tumor) * voxel_ml
    assert result["measurements"]["liver_volume_ml"] == pytest.approx(organ_ml, abs=0.01)
    assert result["measurements_from_command"]["liver_volume_ml"] == pytest.approx(organ_ml, abs=0.01)
    assert loop.logic.result_is_current(loop.segmentation)


def _other_segmentation(harness, volume):
    """A liver from another tool: its own segmentation node, on a 1 mm grid, under its own translation."""
    other = slicer.vtkMRMLSegmentationNode()
    other.SetName("TotalSegmentator")
    harness.scene.AddNode(other)
    other.CreateDefaultDisplayNodes()
    shift = slicer.vtkMRMLLinearTransformNode()
    harness.scene.AddNode(shift)
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 15.0)
    shift.SetMatrixTransformToParent(matrix)
    other.SetAndObserveTransformNodeID(shift.GetID())
    # the liver drawn in world coordinates: a box of CT voxels, expressed on a 1 mm grid in the node's frame
    fine = slicer.vtkMRMLLabelMapVolumeNode()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    origin = [ijk_to_ras.GetElement(r, 3) for r in range(3)]
    fine.SetOrigin(origin[0] - 15.0, origin[1], origin[2])  # minus the shift: lands on the CT in world
    directions = vtk.vtkMatrix4x4()
    volume.GetIJKToRASDirectionMatrix(directions)
    fine.SetIJKToRASDirectionMatrix(directions)
    fine.SetSpacing(0.5, 0.5, 1.0)
    dims = [d * s for d, s in zip(volume.GetImageData().GetDimensions(), (3, 3, 3))]
    image = vtk.vtkImageData()
    image.SetDimensions(*dims)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    fine.SetAndObserveImageData(image)
    array = slicer.util.arrayFromVolume(fine)
    array[...] = 0
    (k0, k1), (j0, j1), (i0, i1) = ((10, 28), (20, 40), (14, 36))  # in CT voxels
    array[3 * k0:3 * k1, 3 * j0:3 * j1, 3 * i0:3 * i1] = 1
    image.Modified()
    segment_id = other.GetSegmentation().AddEmptySegment("liver", "liver")
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    oriented = logic.CreateOrientedImageDataFromVolumeNode(fine)
    assert logic.SetBinaryLabelmapToSegment(oriented, other, segment_id, logic.MODE_REPLACE)
    expected = np.zeros(slicer.util.arrayFromVolume(volume).shape, bool)
    expected[k0:k1, j0:j1, i0:i1] = True
    return other, segment_id, expected


def test_liver_taken_from_another_segmentation_node_is_used(loop):
    other, segment_id, expected = _other_segmentation(loop.harness, loop.volume)
    choices = sl.segment_choices(loop.harness.scene, exclude=loop.segmentation)
    assert (other, segment_id, "TotalSegmentator: liver") in choices
    assert all(node is not loop.segmentation for node, _, _ in choices)
    tumor_before = sl.segment_masks(loop.harness.scene, loop.segmentation, loop.volume,
                                    {"Tumor": loop.ids["Tumor"]})["Tumor"]
    sl.copy_segment(loop.harness.scene, other, segment_id, loop.segmentation, loop.ids["Liver"], loop.volume)
    masks = sl.segment_masks(loop.harness.scene, loop.segmentation, loop.volume, loop.ids)
    # on the CT grid, through both frames (the other node's transform and grid): the drawn box exactly
    assert np.array_equal(masks["Liver"], expected)
    assert np.array_equal(masks["Tumor"], tumor_before)  # the other segment untouched
    job = loop.logic.start_update(loop.segmentation, loop.model, device="cpu")
    assert np.array_equal(_mask_of(job, "--liver-mask"), expected)
    outcome = loop.logic.run(job, timeout=CLI_TIMEOUT_S)
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    organ_ml = np.count_nonzero(expected | tumor_before) * voxel_ml
    assert outcome["result"]["measurements_from_command"]["liver_volume_ml"] == pytest.approx(organ_ml, abs=0.01)
    assert outcome["result"]["response_probability"] != loop.with_liver["result"]["response_probability"]
    with pytest.raises(sl.SlicerLogicError, match="has no segment"):
        sl.copy_segment(loop.harness.scene, other, "nothing", loop.segmentation, loop.ids["Liver"], loop.volume)


def test_result_is_current_is_remembered_until_a_segment_changes(loop, monkeypatch):
    """Entering the module asks whether the result is current more than once; the export runs once."""
    from TACEResponseLib import segments

    exports = []
    original = segments.segment_masks
    monkeypatch.setattr(segments, "segment_masks", lambda *args: exports.append(1) or original(*args))
    logic = sl.TACEResponseSceneLogic(loop.harness.scene, sys.executable)
    assert logic.result_is_current(loop.segmentation) is logic.result_is_current(loop.segmentation)
    assert len(exports) == 1
    replace_segment(loop.segmentation, loop.ids["Tumor"], loop.volume, ((2, 6), (2, 6), (2, 6)))
    assert logic.result_is_current(loop.segmentation) is False and len(exports) == 2
    assert logic.result_is_current(loop.segmentation) is False and len(exports) == 2

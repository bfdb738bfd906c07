"""Helpers for the Slicer tests against slicer-core: a segment edit with an exact result, and a model whose
labelmap is neither empty nor everything.

- ``replace_segment``: a segment made exactly a given box (as a Segment Editor edit that replaces it);
- ``write_liver_model``: random weights whose segmentation head calls every voxel it processes liver. Random
  weights alone label almost nothing once the anatomical post-processing keeps one liver, and a voxel-for-voxel
  check of an empty labelmap proves nothing; this one labels the body's box.
"""

import slicer


def write_liver_model(folder, seed=0):
    import torch

    import slicer_fixtures as fx
    from TACEResponseLib import model_package

    card = fx.random_model_card(name="test-liver-everywhere")
    torch.manual_seed(seed)
    state = model_package.build_network(card).state_dict()
    state["seg_out.bias"] = torch.tensor([-50.0, 50.0, -50.0])  # background, liver, tumor
    return model_package.write_package(folder, card, [state])


def replace_segment(segmentation_node, segment_id, reference_volume, box):
    """Make a segment exactly ``box`` ((k0, k1), (j0, j1), (i0, i1)) on the reference grid, in the segmentation's
    own frame (as the Segment Editor does under a transform). Returns the box as a boolean array."""
    import slicer_fixtures as fx

    labelmap, array = fx.box_labelmap(reference_volume, box)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    oriented = logic.CreateOrientedImageDataFromVolumeNode(labelmap)
    assert logic.SetBinaryLabelmapToSegment(oriented, segmentation_node, segment_id, logic.MODE_REPLACE)
    return array.astype(bool)

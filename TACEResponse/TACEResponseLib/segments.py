"""Segmentation nodes: the command's labelmap -> Liver and Tumor segments (names, colors, terminology),
segments -> masks on the CT grid, edit fingerprints, and segments taken from other nodes in the scene.

Written for Python 3.9 (the Python bundled with Slicer 5.8). Imports ``slicer`` (MRML) and ``vtk`` only:
no Qt, no ``slicer.app`` / ``slicer.mrmlScene``; tested against slicer-core.
"""

import hashlib

import numpy as np
import slicer
import vtk

from . import terminology
from .i18n import _
from .scene_io import (ATTR_MODEL, ATTR_PREDICTED_HASHES, ATTR_RESULT_HASHES, ATTR_SEGMENT_IDS, REF_INPUT_VOLUME,
                       TemporaryNodes, find_label, ijk_to_ras_matrix, json_attribute, read_labelmap, same_geometry,
                       segmentation_name, set_json_attribute, sitk_image, unique_name, write_volume)
from .slicer_errors import SlicerLogicError

# the module's own terminology context (shipped and loaded at start-up): Slicer's lists lack the tumor codes
TERMINOLOGY_CONTEXT = terminology.CONTEXT_NAME
ANATOMIC_CONTEXT = terminology.ANATOMIC_CONTEXT

# used when a model card lacks terminology for a label
DEFAULT_TERMINOLOGY = {
    "liver": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},  # not translated: DICOM code meanings
              "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}},
    # not translated: DICOM code meanings
    "tumor": {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
              "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"},
              "anatomic_region": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}},
}

DEFAULT_COLORS = {"liver": (0.86, 0.55, 0.45), "tumor": (0.95, 0.85, 0.25)}


def _code_text(code):
    if not code:
        return "^^"
    return "{}^{}^{}".format(code.get("scheme", code.get("CodingSchemeDesignator", "")),
                             code.get("code", code.get("CodeValue", "")),
                             code.get("meaning", code.get("CodeMeaning", "")))


def _pick(mapping, *keys):
    for key in keys:
        if mapping.get(key):
            return mapping[key]
    return None


def terminology_entry(label):
    """The segment terminology tag for a model card label (Slicer's serialized terminology entry).

    Format: context~category~type~type modifier~anatomic context~anatomic region~region modifier, each code
    as scheme^value^meaning. DICOM SEG export reads the SNOMED CT codes from it.
    """
    terms = label.get("terminology") or DEFAULT_TERMINOLOGY.get(str(label["name"]).lower())
    if not terms:
        return None
    region = _pick(terms, "anatomic_region", "anatomicRegion", "region")
    region_modifier = _pick(terms, "anatomic_region_modifier", "anatomicRegionModifier", "region_modifier")
    return "~".join([
        terms.get("context", TERMINOLOGY_CONTEXT),
        _code_text(terms.get("category")),
        _code_text(terms.get("type")),
        _code_text(_pick(terms, "type_modifier", "typeModifier")),
        terms.get("anatomic_context", ANATOMIC_CONTEXT) if region else "",
        _code_text(region),
        _code_text(region_modifier),
    ])


def label_color(label):
    color = label.get("color") or DEFAULT_COLORS.get(str(label["name"]).lower(), (0.5, 0.5, 0.5))
    color = [float(c) for c in color[:3]]
    if max(color) > 1.0:  # 0..255 given
        color = [c / 255.0 for c in color]
    return tuple(color)


def segment_ids(segmentation_node, labels):
    """{label name: segment ID} for the segments this module made (by recorded ID, then by name)."""
    recorded = json_attribute(segmentation_node, ATTR_SEGMENT_IDS) or {}
    segmentation = segmentation_node.GetSegmentation()
    found = {}
    for label in labels:
        name = str(label["name"])
        segment_id = recorded.get(name)
        if segment_id and segmentation.GetSegment(segment_id) is not None:
            found[name] = segment_id
            continue
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        if segment_id:
            found[name] = segment_id
    return found


def _export_segment(scene, segmentation_node, reference_volume, segment_id, name):
    """One segment exported onto the reference volume's grid as a labelmap node; call inside
    ``TemporaryNodes(scene)`` so the node goes away afterwards. ``name`` is what an error calls it."""
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(labelmap)
    one = vtk.vtkStringArray()
    one.InsertNextValue(segment_id)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, one, labelmap, reference_volume):
        raise SlicerLogicError(_("could not export segment {segment} of {segmentation}").format(
            segment=name, segmentation=segmentation_node.GetName()))
    return labelmap


def segment_masks(scene, segmentation_node, reference_volume, ids):
    """{key: boolean array (k, j, i)} of each segment ID on the reference volume's grid."""
    masks = {}
    for key, segment_id in ids.items():
        with TemporaryNodes(scene):
            labelmap = _export_segment(scene, segmentation_node, reference_volume, segment_id, key)
            masks[key] = slicer.util.arrayFromVolume(labelmap) > 0
    return masks


def fingerprint(mask):
    digest = hashlib.sha256()
    digest.update(str(mask.shape).encode("ascii"))
    digest.update(np.packbits(mask.astype(bool), axis=None).tobytes())
    return digest.hexdigest()


def organ_fingerprint(masks, liver_name, tumor_name):
    """Fingerprint of liver-or-tumor (the whole organ) from {label name: mask}."""
    shape = next(iter(masks.values())).shape
    organ = masks.get(liver_name, np.zeros(shape, bool)) | masks.get(tumor_name, np.zeros(shape, bool))
    return fingerprint(organ)


def content_fingerprints(scene, segmentation_node, reference_volume, labels):
    ids = segment_ids(segmentation_node, labels)
    masks = segment_masks(scene, segmentation_node, reference_volume, ids)
    prints = {name: fingerprint(mask) for name, mask in masks.items()}
    for label in labels:
        prints.setdefault(str(label["name"]), "missing")
    return prints


def content_stamp(segmentation_node):
    """Changes whenever a segment's data, the segment list or the recorded result changes (cheap: no export)."""
    segmentation = segmentation_node.GetSegmentation()
    source = segmentation.GetSourceRepresentationName() if hasattr(segmentation, "GetSourceRepresentationName") \
        else segmentation.GetMasterRepresentationName()
    parts = [segmentation_node.GetAttribute(ATTR_RESULT_HASHES) or "", segmentation_node.GetTransformNodeID() or ""]
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        data = segmentation.GetSegment(segment_id).GetRepresentation(source)
        parts.append((segment_id, data.GetMTime() if data is not None else 0))
    return tuple(parts)


def input_volumes(segmentation_node):
    """The input volumes recorded on a segmentation made by this module (phase order), [] if none."""
    count = segmentation_node.GetNumberOfNodeReferences(REF_INPUT_VOLUME)
    return [segmentation_node.GetNthNodeReference(REF_INPUT_VOLUME, i) for i in range(count)]


def labels_of(segmentation_node):
    """The model card labels recorded with a segmentation (name, value, color, terminology)."""
    model = json_attribute(segmentation_node, ATTR_MODEL) or {}
    return model.get("labels") or []


def edited_segments(scene, segmentation_node, reference_volume=None, labels=None, against=ATTR_PREDICTED_HASHES):
    """Names of the model's segments whose content differs from the model output (or from ``against``).

    A segmentation this module did not make counts as entirely edited: it is the user's work.
    """
    recorded = json_attribute(segmentation_node, against)
    labels = labels or labels_of(segmentation_node)
    volumes = input_volumes(segmentation_node)
    reference_volume = reference_volume or (volumes[0] if volumes else None)
    if recorded is None or not labels or reference_volume is None:
        count = segmentation_node.GetSegmentation().GetNumberOfSegments()
        return [_("all segments")] if count else []
    current = content_fingerprints(scene, segmentation_node, reference_volume, labels)
    return [name for name, value in current.items() if recorded.get(name) != value]


def import_segmentation(scene, label_path, labels, reference_volume, segmentation_node=None, name=None,
                        create_surface=False):
    """Load the command's label file into a segmentation node with one segment per model card label.

    The labelmap must be on the reference volume's grid (the command writes it so); its geometry is then
    snapped to the volume's exactly, so the segments equal the file voxel for voxel. Existing segments made
    by this module are updated in place (their IDs, names and the node's references stay).
    """
    labelmap = read_labelmap(label_path)
    if not same_geometry(labelmap, reference_volume):
        raise SlicerLogicError(_("the segmentation file {path} does not match the grid of {volume}").format(
            path=label_path, volume=reference_volume.GetName()))
    labelmap.SetIJKToRASMatrix(ijk_to_ras_matrix(reference_volume))
    ordered = sorted(labels, key=lambda label: int(label["value"]))
    values = [int(label["value"]) for label in ordered]
    if values != list(range(1, len(values) + 1)):
        # the import fills segment i from label value i: renumber the card's values to 1..n
        array = slicer.util.arrayFromVolume(labelmap)
        renumbered = np.zeros(array.shape, np.uint8)
        for index, value in enumerate(values):
            renumbered[array == value] = index + 1
        array[...] = renumbered
        labelmap.GetImageData().Modified()

    if segmentation_node is None:
        segmentation_node = slicer.vtkMRMLSegmentationNode()
        segmentation_node.SetName(unique_name(scene, name or segmentation_name(reference_volume)))
        scene.AddNode(segmentation_node)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    # under the volume's transform first: the reference geometry is then taken in the same (local) frame
    # instead of being moved by the transform a second time
    segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)

    segmentation = segmentation_node.GetSegmentation()
    existing = segment_ids(segmentation_node, ordered)
    ids = vtk.vtkStringArray()
    id_map = {}
    for label in ordered:
        label_name = str(label["name"])
        segment_id = existing.get(label_name)
        if segment_id is None:
            segment_id = segmentation.AddEmptySegment(segmentation.GenerateUniqueSegmentID(label_name), label_name,
                                                      label_color(label))
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(label_name)
        segment.SetColor(label_color(label))
        entry = terminology_entry(label)
        if entry:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
        ids.InsertNextValue(segment_id)
        id_map[label_name] = segment_id
    with TemporaryNodes(scene):
        # the labelmap's voxels are in the volume's local frame: give it the volume's transform so the import
        # (which maps the labelmap's world into the segmentation's frame) copies them without resampling
        scene.AddNode(labelmap)
        labelmap.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
        imported = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmap, segmentation_node, ids)
    if not imported:
        raise SlicerLogicError(_("could not import {path} into {segmentation}").format(
            path=label_path, segmentation=segmentation_node.GetName()))
    set_json_attribute(segmentation_node, ATTR_SEGMENT_IDS, id_map)
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility(True)
        display.SetVisibility2D(True)
        display.SetVisibility3D(True)
    if create_surface:
        segmentation_node.CreateClosedSurfaceRepresentation()
    return segmentation_node


def write_segment_mask(scene, segmentation_node, reference_volume, path, segment_id):
    """One segment on the reference volume's grid -> mask file (uint8, 1 = inside) for --tumor-mask or
    --liver-mask; written in the volume's local frame, like the CT file beside it."""
    with TemporaryNodes(scene):
        write_volume(_export_segment(scene, segmentation_node, reference_volume, segment_id, segment_id), path)
    return str(path)


def write_tumor_mask(scene, segmentation_node, reference_volume, path, tumor_segment_id):
    """The Tumor segment on the reference volume's grid -> mask file (uint8, 1 = tumor) for --tumor-mask."""
    return write_segment_mask(scene, segmentation_node, reference_volume, path, tumor_segment_id)


def segment_choices(scene, exclude=None):
    """[(segmentation node, segment ID, "node: segment")] of every segment in the scene (e.g. TotalSegmentator's
    liver, or one drawn by hand), for taking the liver or the tumor from it."""
    choices = []
    nodes = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if exclude is not None and node is exclude:
            continue
        segmentation = node.GetSegmentation()
        for number in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(number)
            choices.append((node, segment_id, "{}: {}".format(node.GetName(),
                                                             segmentation.GetSegment(segment_id).GetName())))
    return choices


def copy_segment(scene, source_node, source_segment_id, target_node, target_segment_id, reference_volume):
    """Replace a segment's content with another segment's (any segmentation node, any geometry or transform),
    resampled onto the reference volume's grid. The other segments of the target are left as they are."""
    if source_node.GetSegmentation().GetSegment(source_segment_id) is None:
        raise SlicerLogicError(_("{segmentation} has no segment {segment}").format(
            segmentation=source_node.GetName(), segment=source_segment_id))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    with TemporaryNodes(scene):
        labelmap = slicer.vtkMRMLLabelMapVolumeNode()
        scene.AddNode(labelmap)
        one = vtk.vtkStringArray()
        one.InsertNextValue(source_segment_id)
        if not logic.ExportSegmentsToLabelmapNode(source_node, one, labelmap, reference_volume):
            raise SlicerLogicError(_("could not export segment {segment} of {segmentation}").format(
                segment=source_segment_id, segmentation=source_node.GetName()))
        # the exported labelmap sits under the source's transform; bring it into the target's frame
        oriented = logic.CreateOrientedImageDataFromVolumeNode(labelmap, target_node.GetParentTransformNode())
        if not logic.SetBinaryLabelmapToSegment(oriented, target_node, target_segment_id, logic.MODE_REPLACE):
            raise SlicerLogicError(_("could not copy segment {segment} of {source} into {target}").format(
                segment=source_segment_id, source=source_node.GetName(), target=target_node.GetName()))


def measure_masks(masks, labels, reference_volume):
    """The core's measurements of a liver and a tumor mask on the reference volume's grid."""
    from . import measurements

    liver = find_label(labels, "Liver")
    tumor = find_label(labels, "Tumor")
    shape = next(iter(masks.values())).shape
    array = np.zeros(shape, np.uint8)
    array[masks.get(str(liver["name"]), np.zeros(shape, bool))] = int(liver["value"])
    array[masks.get(str(tumor["name"]), np.zeros(shape, bool))] = int(tumor["value"])
    return measurements.measure(sitk_image(array, reference_volume), int(liver["value"]), int(tumor["value"]))

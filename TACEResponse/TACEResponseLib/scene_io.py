"""Volume nodes <-> files, the inputs' checks (parent transforms included), node attributes and the
subject hierarchy: the scene-side helpers the rest of the Slicer logic stands on.

Written for Python 3.9 (the Python bundled with Slicer 5.8). Imports ``slicer`` (MRML) and ``vtk`` only:
no Qt, no ``slicer.app`` / ``slicer.mrmlScene``; tested against slicer-core.
"""

import json

import slicer
import vtk

from .i18n import _
from .slicer_errors import SlicerLogicError

MAX_PHASES = 4  # the module panel has this many input volume selectors

# node attributes and references (saved with the scene)
ATTR_SEGMENT_IDS = "TACEResponse.SegmentIDs"              # {label name: segment ID}
ATTR_PREDICTED_HASHES = "TACEResponse.PredictedContent"   # {label name: fingerprint} of the model output
ATTR_RESULT_HASHES = "TACEResponse.ResultContent"         # {label name: fingerprint} the table describes
ATTR_PREDICTED_ORGAN = "TACEResponse.PredictedOrgan"      # fingerprint of liver-or-tumor in the model output
ATTR_MODEL = "TACEResponse.Model"
ATTR_RESULT = "TACEResponse.Result"                       # on the table: the full result as JSON
ATTR_HARDENED_FROM = "TACEResponse.HardenedFrom"          # on a hardened copy: the ID of the volume it copies
REF_INPUT_VOLUME = "TACEResponse.InputVolume"             # segmentation -> input volumes, one per phase
REF_RESULT_TABLE = "TACEResponse.ResultTable"             # segmentation -> table



def segmentation_name(volume_node):
    return _("{volume} TACE segmentation").format(volume=volume_node.GetName())


def table_name(volume_node):
    return _("{volume} TACE response").format(volume=volume_node.GetName())


def phases_of(card):
    return list(card["inputs"]["phases"])


def phase_title(phase):
    """'portal_venous' -> 'Portal venous'."""
    text = str(phase).replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else "CT"


def check_inputs(volume_nodes, phases):
    """Why the inputs cannot be used (one sentence for the Predict button's tooltip), or None if they can."""
    phases = list(phases)
    if len(phases) > MAX_PHASES:
        return _("The model needs {count} input phases; this module supports at most {most}.").format(
            count=len(phases), most=MAX_PHASES)
    volume_nodes = list(volume_nodes)[:len(phases)] + [None] * max(0, len(phases) - len(volume_nodes))
    for phase, node in zip(phases, volume_nodes):
        if node is None:
            return _("Select the {phase} CT volume.").format(phase=phase_title(phase).lower())
        image = node.GetImageData()
        if image is None:
            return _("{volume} has no image data.").format(volume=node.GetName())
        if image.GetNumberOfScalarComponents() != 1:
            return _("{volume} is not a scalar (grayscale) volume.").format(volume=node.GetName())
        if min(image.GetDimensions()) < 2:
            return _("{volume} is not a 3D volume ({dimensions}).").format(
                volume=node.GetName(), dimensions="x".join(map(str, image.GetDimensions())))
    ids = [node.GetID() for node in volume_nodes]
    if len(set(ids)) != len(ids):
        return _("The same volume is selected for two phases; select one volume per phase.")
    transforms = set(node.GetTransformNodeID() or "" for node in volume_nodes)
    if len(transforms) > 1:
        return _("The input volumes are under different transforms; harden the transforms first.")
    # a non-linear transform is not a reason to refuse: Predict offers a hardened copy (see hardened_copy)
    return None


def non_linear_transform(node):
    """The first non-linear transform between ``node`` and the world (e.g. DICOM's acquisition transform for
    irregular slices), or None when the node is in the world frame or under linear transforms only."""
    transform = node.GetParentTransformNode()
    while transform is not None:
        if not transform.IsLinear():
            return transform
        transform = transform.GetParentTransformNode()
    return None


def hardened_copy(scene, volume_node):
    """A copy of ``volume_node`` in the world frame: its parent transforms hardened on the copy (a non-linear one
    resamples the voxels onto a grid that holds the warped volume), so the network sees what the views show.
    The original node, its transform and its voxels are left as they are."""
    name = unique_name(scene, _("{volume} (hardened)").format(volume=volume_node.GetName()))
    copy = slicer.vtkSlicerVolumesLogic.CloneVolume(scene, volume_node, name)
    if copy is None:
        raise SlicerLogicError(_("could not copy {volume} to harden its transform").format(
            volume=volume_node.GetName()))
    copy.SetName(name)  # CloneVolume counts names already used, even by nodes removed since
    copy.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    if not slicer.vtkSlicerTransformLogic.hardenTransform(copy) or copy.GetParentTransformNode() is not None \
            or copy.GetImageData() is None:
        scene.RemoveNode(copy)
        raise SlicerLogicError(_("could not harden the transform of a copy of {volume}").format(
            volume=volume_node.GetName()))
    copy.SetAttribute(ATTR_HARDENED_FROM, volume_node.GetID())
    place_in_subject_hierarchy(scene, volume_node, [copy])
    return copy


def find_label(labels, name):
    for label in labels:
        if str(label["name"]).lower() == name.lower():
            return label
    raise SlicerLogicError(_("the model card has no label named {label}").format(label=name))


def write_volume(volume_node, path):
    """Write a volume node (its own voxel grid and IJK-to-RAS geometry) to NRRD, leaving the scene as it was."""
    if volume_node.GetImageData() is None:
        raise SlicerLogicError(_("{volume} has no image data").format(volume=volume_node.GetName()))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()  # not added to the scene: the user's nodes stay as they are
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # a temporary file: speed over size
    if not storage.WriteData(volume_node):
        raise SlicerLogicError(_("could not write {volume} to {path}").format(volume=volume_node.GetName(), path=path))
    return str(path)


def read_labelmap(path):
    """A label file -> labelmap volume node that is not in any scene."""
    node = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetCenterImage(False)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise SlicerLogicError(_("could not read the segmentation file {path}").format(path=path))
    return node


class TemporaryNodes:
    """Remove every node added to the scene inside the block (export helpers add labelmaps, colors...)."""

    def __init__(self, scene):
        self.scene = scene
        self.before = None

    def __enter__(self):
        self.before = set(self._ids())
        return self

    def _ids(self):
        return [self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())]

    def __exit__(self, *exc):
        for node_id in reversed([i for i in self._ids() if i not in self.before]):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)
        return False


def unique_name(scene, name):
    """``name``, or ``name_1``... when a node of that name exists (a second prediction for the same CT)."""
    return scene.GenerateUniqueName(name) if scene.GetFirstNodeByName(name) is not None else name


def ijk_to_ras_matrix(volume_node):
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


def same_geometry(node_a, node_b, tolerance_mm=1e-3):
    if node_a.GetImageData().GetDimensions() != node_b.GetImageData().GetDimensions():
        return False
    a, b = ijk_to_ras_matrix(node_a), ijk_to_ras_matrix(node_b)
    return all(abs(a.GetElement(r, c) - b.GetElement(r, c)) <= tolerance_mm for r in range(3) for c in range(4))


def sitk_image(array, reference_volume):
    """A SimpleITK image of ``array`` (k, j, i) with the geometry of ``reference_volume`` (RAS -> LPS)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    directions = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASDirectionMatrix(directions)
    flip = (-1.0, -1.0, 1.0)
    image.SetDirection([flip[r] * directions.GetElement(r, c) for r in range(3) for c in range(3)])
    origin = reference_volume.GetOrigin()
    image.SetOrigin([flip[i] * origin[i] for i in range(3)])
    image.SetSpacing(reference_volume.GetSpacing())
    return image


def json_attribute(node, name):
    text = node.GetAttribute(name) if node is not None else None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def set_json_attribute(node, name, value):
    node.SetAttribute(name, json.dumps(value, sort_keys=True))


def place_in_subject_hierarchy(scene, volume_node, nodes):
    """Put ``nodes`` beside ``volume_node`` (under its study, when it has one) in the subject hierarchy."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    parent = hierarchy.GetItemParent(volume_item) if volume_item else hierarchy.GetSceneItemID()
    if not parent:
        parent = hierarchy.GetSceneItemID()
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)

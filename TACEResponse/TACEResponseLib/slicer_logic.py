"""MRML glue between a Slicer scene and the ``tace-response predict`` command (floor 4).

Everything here takes the scene as an argument and imports ``slicer`` and ``vtk`` only: never ``qt``,
``ctk``, ``slicer.app`` or ``slicer.mrmlScene``. So it runs, and is tested, against slicer-core's MRML
classes without the Slicer application; the module widget (TACEResponse.py) is a thin shell around it.

What it does:

- volume node -> NRRD file with its geometry (a storage node that is never added to the scene);
- the command line for ``PythonSlicer -m TACEResponseLib predict ... --progress jsonl`` and its environment
  (TACEResponse/ on PYTHONPATH), progress lines -> overall fraction, stderr -> one message;
- result files -> segmentation node (segments named, colored and coded with SNOMED CT terminology from
  the model card, reference geometry from the input volume) and a table node (probability, risk,
  model identity, device, measurements), both placed under the volume's study in the subject hierarchy;
- the correction loop: the edited Tumor segment -> mask file for ``--tumor-mask``, measurements of the
  edited segmentation, and content fingerprints that tell whether the user edited a segmentation (a new
  Predict never overwrites edits unless explicitly allowed).

Written for Python 3.9 (the Python bundled with Slicer 5.8).
"""

import datetime
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile

import numpy as np
import slicer
import vtk

from . import __version__, model_package
from .cli import RESULT_NAME, SEGMENTATION_NAME
from .errors import TACEResponseError
from .process_runner import ProcessRunner, run_to_completion

# the folder holding TACEResponseLib (TACEResponse/ in the source tree and in the installed module):
# it goes on the PYTHONPATH of the background process
LIB_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MAX_PHASES = 4  # the module panel has this many input volume selectors

# node attributes and references (saved with the scene)
ATTR_SEGMENT_IDS = "TACEResponse.SegmentIDs"              # {label name: segment ID}
ATTR_PREDICTED_HASHES = "TACEResponse.PredictedContent"   # {label name: fingerprint} of the model output
ATTR_RESULT_HASHES = "TACEResponse.ResultContent"         # {label name: fingerprint} the table describes
ATTR_MODEL = "TACEResponse.Model"
ATTR_RESULT = "TACEResponse.Result"                       # on the table: the full result as JSON
REF_INPUT_VOLUME = "TACEResponse.InputVolume"             # segmentation -> input volumes, one per phase
REF_RESULT_TABLE = "TACEResponse.ResultTable"             # segmentation -> table

SEGMENTATION_SUFFIX = " TACE segmentation"
TABLE_SUFFIX = " TACE response"

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
# used when a model card lacks terminology for a label
DEFAULT_TERMINOLOGY = {
    "liver": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
              "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}},
    "tumor": {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
              "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"},
              "anatomic_region": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}},
}
DEFAULT_COLORS = {"liver": (0.86, 0.55, 0.45), "tumor": (0.95, 0.85, 0.25)}

# progress: where each stage of the command sits on the overall bar (start, end)
STAGE_SPANS = {
    "starting": (0.0, 0.02),
    "load model": (0.02, 0.08),
    "read": (0.08, 0.12),
    "localize": (0.12, 0.16),
    "preprocess": (0.16, 0.18),
    "network": (0.18, 0.85),
    "postprocess": (0.85, 0.93),
    "done": (0.93, 0.95),
    "result": (0.95, 0.95),
    "import": (0.95, 1.0),
}

# python packages the background process needs; Slicer ships numpy and SimpleITK and they must never be
# replaced by a pip install (the module refuses to install those two and pins them while installing others)
REQUIRED_PACKAGES = ("torch", "safetensors", "numpy", "SimpleITK")
SLICER_OWNED_PACKAGES = ("numpy", "SimpleITK")
PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4"}


class SlicerLogicError(TACEResponseError):
    """A problem fit to show the user as it is (no traceback)."""


class EditedSegmentationError(SlicerLogicError):
    """Applying a prediction would overwrite segments the user edited; the caller must ask first."""

    def __init__(self, segmentation_node, edited):
        self.segmentation_node = segmentation_node
        self.edited = list(edited)
        super().__init__("{} has edited segments ({}); a new prediction would overwrite them".format(
            segmentation_node.GetName(), ", ".join(self.edited)))


class PredictionFailed(SlicerLogicError):
    """The background command ended with an error; the message is its one-line explanation."""

    def __init__(self, message, exit_code=None):
        self.exit_code = exit_code
        super().__init__(message)


# -------------------------------------------------------------------------------------------------------
# names, inputs, labels


def segmentation_name(volume_node):
    return volume_node.GetName() + SEGMENTATION_SUFFIX


def table_name(volume_node):
    return volume_node.GetName() + TABLE_SUFFIX


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
        return "The model needs {} input phases; this module supports at most {}.".format(len(phases), MAX_PHASES)
    volume_nodes = list(volume_nodes)[:len(phases)] + [None] * max(0, len(phases) - len(volume_nodes))
    for phase, node in zip(phases, volume_nodes):
        if node is None:
            return "Select the {} CT volume.".format(phase_title(phase).lower())
        image = node.GetImageData()
        if image is None:
            return "{} has no image data.".format(node.GetName())
        if image.GetNumberOfScalarComponents() != 1:
            return "{} is not a scalar (grayscale) volume.".format(node.GetName())
        if min(image.GetDimensions()) < 2:
            return "{} is not a 3D volume ({}).".format(node.GetName(), "x".join(map(str, image.GetDimensions())))
    ids = [node.GetID() for node in volume_nodes]
    if len(set(ids)) != len(ids):
        return "The same volume is selected for two phases; select one volume per phase."
    transforms = set(node.GetTransformNodeID() or "" for node in volume_nodes)
    if len(transforms) > 1:
        return "The input volumes are under different transforms; harden the transforms first."
    return None


def find_label(labels, name):
    for label in labels:
        if str(label["name"]).lower() == name.lower():
            return label
    raise SlicerLogicError("the model card has no label named {}".format(name))


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


# -------------------------------------------------------------------------------------------------------
# files and the command


def write_volume(volume_node, path):
    """Write a volume node (its own voxel grid and IJK-to-RAS geometry) to NRRD, leaving the scene as it was."""
    if volume_node.GetImageData() is None:
        raise SlicerLogicError("{} has no image data".format(volume_node.GetName()))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()  # not added to the scene: the user's nodes stay as they are
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # a temporary file: speed over size
    if not storage.WriteData(volume_node):
        raise SlicerLogicError("could not write {} to {}".format(volume_node.GetName(), path))
    return str(path)


def read_labelmap(path):
    """A label file -> labelmap volume node that is not in any scene."""
    node = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetCenterImage(False)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise SlicerLogicError("could not read the segmentation file {}".format(path))
    return node


def child_environment(lib_parent=LIB_PARENT, base=None):
    """Environment for the background process: the TACEResponseLib folder first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    parts = [lib_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != lib_parent]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def predict_command(python_executable, inputs, output_dir, model=None, device="auto", tumor_mask=None):
    command = [str(python_executable), "-m", "TACEResponseLib", "predict"]
    command += [str(p) for p in inputs]
    command += ["-o", str(output_dir), "--progress", "jsonl", "--device", device or "auto"]
    if model:
        command += ["--model", str(model)]
    if tumor_mask:
        command += ["--tumor-mask", str(tumor_mask)]
    return command


def parse_progress_line(line):
    """A JSON progress object from one stdout line, or None for anything else."""
    line = (line or "").strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "stage" not in message:
        return None
    return message


def overall_fraction(stage, fraction):
    start, end = STAGE_SPANS.get(stage, (None, None))
    if start is None:
        return None
    fraction = min(max(float(fraction or 0.0), 0.0), 1.0)
    return start + (end - start) * fraction


def error_message(exit_code, stderr_text):
    """The command's one-line explanation ('error: ...'), or a plain account of the failure."""
    lines = [line.strip() for line in (stderr_text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    if exit_code is not None and exit_code < 0:
        return "the prediction process was stopped (signal {})".format(-exit_code)
    tail = lines[-1] if lines else "no message"
    return "the prediction process failed with exit code {}: {}".format(exit_code, tail)


def read_result(output_dir):
    path = os.path.join(str(output_dir), RESULT_NAME)
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError) as exc:
        raise SlicerLogicError("could not read the prediction result {} ({})".format(path, exc)) from None


# -------------------------------------------------------------------------------------------------------
# scene helpers


class _TemporaryNodes:
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


def _unique_name(scene, name):
    """``name``, or ``name_1``... when a node of that name exists (a second prediction for the same CT)."""
    return scene.GenerateUniqueName(name) if scene.GetFirstNodeByName(name) is not None else name


def _matrix(volume_node):
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


def _same_geometry(node_a, node_b, tolerance_mm=1e-3):
    if node_a.GetImageData().GetDimensions() != node_b.GetImageData().GetDimensions():
        return False
    a, b = _matrix(node_a), _matrix(node_b)
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


def segment_ids(segmentation_node, labels):
    """{label name: segment ID} for the segments this module made (by recorded ID, then by name)."""
    recorded = _json_attribute(segmentation_node, ATTR_SEGMENT_IDS) or {}
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


def segment_masks(scene, segmentation_node, reference_volume, ids):
    """{key: boolean array (k, j, i)} of each segment ID on the reference volume's grid."""
    masks = {}
    for key, segment_id in ids.items():
        with _TemporaryNodes(scene):
            labelmap = slicer.vtkMRMLLabelMapVolumeNode()
            scene.AddNode(labelmap)
            one = vtk.vtkStringArray()
            one.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    segmentation_node, one, labelmap, reference_volume):
                raise SlicerLogicError("could not export segment {} of {}".format(key, segmentation_node.GetName()))
            masks[key] = slicer.util.arrayFromVolume(labelmap) > 0
    return masks


def fingerprint(mask):
    digest = hashlib.sha256()
    digest.update(str(mask.shape).encode("ascii"))
    digest.update(np.packbits(mask.astype(bool), axis=None).tobytes())
    return digest.hexdigest()


def content_fingerprints(scene, segmentation_node, reference_volume, labels):
    ids = segment_ids(segmentation_node, labels)
    masks = segment_masks(scene, segmentation_node, reference_volume, ids)
    prints = {name: fingerprint(mask) for name, mask in masks.items()}
    for label in labels:
        prints.setdefault(str(label["name"]), "missing")
    return prints


def _json_attribute(node, name):
    text = node.GetAttribute(name) if node is not None else None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _set_json_attribute(node, name, value):
    node.SetAttribute(name, json.dumps(value, sort_keys=True))


def input_volumes(segmentation_node):
    """The input volumes recorded on a segmentation made by this module (phase order), [] if none."""
    count = segmentation_node.GetNumberOfNodeReferences(REF_INPUT_VOLUME)
    return [segmentation_node.GetNthNodeReference(REF_INPUT_VOLUME, i) for i in range(count)]


def labels_of(segmentation_node):
    """The model card labels recorded with a segmentation (name, value, color, terminology)."""
    model = _json_attribute(segmentation_node, ATTR_MODEL) or {}
    return model.get("labels") or []


def edited_segments(scene, segmentation_node, reference_volume=None, labels=None, against=ATTR_PREDICTED_HASHES):
    """Names of the model's segments whose content differs from the model output (or from ``against``).

    A segmentation this module did not make counts as entirely edited: it is the user's work.
    """
    recorded = _json_attribute(segmentation_node, against)
    labels = labels or labels_of(segmentation_node)
    volumes = input_volumes(segmentation_node)
    reference_volume = reference_volume or (volumes[0] if volumes else None)
    if recorded is None or not labels or reference_volume is None:
        count = segmentation_node.GetSegmentation().GetNumberOfSegments()
        return ["all segments"] if count else []
    current = content_fingerprints(scene, segmentation_node, reference_volume, labels)
    return [name for name, value in current.items() if recorded.get(name) != value]


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


# -------------------------------------------------------------------------------------------------------
# results -> nodes


def import_segmentation(scene, label_path, labels, reference_volume, segmentation_node=None, name=None,
                        create_surface=False):
    """Load the command's label file into a segmentation node with one segment per model card label.

    The labelmap must be on the reference volume's grid (the command writes it so); its geometry is then
    snapped to the volume's exactly, so the segments equal the file voxel for voxel. Existing segments made
    by this module are updated in place (their IDs, names and the node's references stay).
    """
    labelmap = read_labelmap(label_path)
    if not _same_geometry(labelmap, reference_volume):
        raise SlicerLogicError("the segmentation file {} does not match the grid of {}".format(
            label_path, reference_volume.GetName()))
    labelmap.SetIJKToRASMatrix(_matrix(reference_volume))
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
        segmentation_node.SetName(_unique_name(scene, name or segmentation_name(reference_volume)))
        scene.AddNode(segmentation_node)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())

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
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids):
        raise SlicerLogicError("could not import {} into {}".format(label_path, segmentation_node.GetName()))
    _set_json_attribute(segmentation_node, ATTR_SEGMENT_IDS, id_map)
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility(True)
        display.SetVisibility2D(True)
        display.SetVisibility3D(True)
    if create_surface:
        segmentation_node.CreateClosedSurfaceRepresentation()
    return segmentation_node


def write_tumor_mask(scene, segmentation_node, reference_volume, path, tumor_segment_id):
    """The Tumor segment on the reference volume's grid -> mask file (uint8, 1 = tumor) for --tumor-mask."""
    with _TemporaryNodes(scene):
        labelmap = slicer.vtkMRMLLabelMapVolumeNode()
        scene.AddNode(labelmap)
        one = vtk.vtkStringArray()
        one.InsertNextValue(tumor_segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, one, labelmap, reference_volume):
            raise SlicerLogicError("could not export the tumor segment of {}".format(segmentation_node.GetName()))
        write_volume(labelmap, path)
    return str(path)


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


RESULT_ROWS = (
    # key, label, unit
    ("response_probability", "Response probability", ""),
    ("risk_category", "Risk category", ""),
    ("risk_cutoff", "Risk cutoff (probability)", ""),
    ("risk_meaning", "Risk meaning", ""),
    ("liver_volume_ml", "Liver volume (with tumor)", "mL"),
    ("liver_parenchyma_volume_ml", "Liver parenchyma volume", "mL"),
    ("tumor_volume_ml", "Tumor volume", "mL"),
    ("tumor_count", "Tumor count", ""),
    ("largest_tumor_diameter_mm", "Largest tumor diameter (axial)", "mm"),
    ("tumor_burden_percent", "Tumor burden", "%"),
    ("tumor_source", "Tumor source", ""),
    ("tumor_edited", "Tumor edited", ""),
    ("liver_edited", "Liver edited", ""),
    ("measured_on", "Measured on", ""),
    ("model_name", "Model", ""),
    ("model_version", "Model version", ""),
    ("model_sha256", "Model SHA-256", ""),
    ("intended_use", "Intended use", ""),
    ("device", "Device", ""),
    ("fold_probabilities", "Fold probabilities", ""),
    ("warnings", "Warnings", ""),
    ("computed_at", "Computed at", ""),
    ("software", "Software", ""),
)


def result_values(result):
    """Flat {key: text} of a result document, for the table."""
    model = result.get("model", {})
    measured = result.get("measurements", {})
    software = result.get("software", {})
    values = {
        "response_probability": "{:.4f}".format(result["response_probability"]),
        "risk_category": result.get("risk_category", ""),
        "risk_cutoff": "{:.4f}".format(result["risk_cutoff"]) if "risk_cutoff" in result else "",
        "risk_meaning": result.get("risk_meaning", ""),
        "tumor_source": result.get("tumor_source", ""),
        "tumor_edited": "yes" if result.get("tumor_edited") else "no",
        "liver_edited": "yes" if result.get("liver_edited") else "no",
        "measured_on": result.get("measured_on", ""),
        "model_name": model.get("name", ""),
        "model_version": model.get("version", ""),
        "model_sha256": model.get("sha256", ""),
        "intended_use": model.get("intended_use", ""),
        "device": result.get("device", ""),
        "fold_probabilities": ", ".join("{:.4f}".format(p) for p in result.get("fold_probabilities", [])),
        "warnings": "; ".join(result.get("warnings", [])),
        "computed_at": result.get("computed_at", ""),
        "software": "{} {}".format(software.get("name", "tace-response"), software.get("version", "")).strip(),
    }
    for key, value in measured.items():
        values[key] = str(value)
    return values


def fill_table(scene, result, table_node=None, name=None):
    """Write a result into a table node (one row per quantity: Measurement, Value, Unit, Key)."""
    if table_node is None:
        table_node = slicer.vtkMRMLTableNode()
        table_node.SetName(_unique_name(scene, name or "TACE response"))
        scene.AddNode(table_node)
    values = result_values(result)
    table = table_node.GetTable()
    table.Initialize()
    columns = []
    for title in ("Measurement", "Value", "Unit", "Key"):
        column = vtk.vtkStringArray()
        column.SetName(title)
        columns.append(column)
    for key, label, unit in RESULT_ROWS:
        if key not in values:
            continue
        for column, text in zip(columns, (label, values[key], unit, key)):
            column.InsertNextValue(str(text))
    for column in columns:
        table.AddColumn(column)
    table_node.SetUseColumnTitleAsColumnHeader(True)
    _set_json_attribute(table_node, ATTR_RESULT, result)
    table_node.Modified()
    return table_node


def table_result(table_node):
    """The result document stored with a table node (None if the table was not made by this module)."""
    return _json_attribute(table_node, ATTR_RESULT)


def table_values(table_node):
    """{key: text} as the table shows it (the Key column), e.g. after the user reopened a scene."""
    table = table_node.GetTable()
    key_column = table.GetColumnByName("Key")
    value_column = table.GetColumnByName("Value")
    if key_column is None or value_column is None:
        return {}
    return {key_column.GetValue(i): value_column.GetValue(i) for i in range(table.GetNumberOfRows())}


# -------------------------------------------------------------------------------------------------------
# models, devices, dependencies (no MRML, kept here so the widget stays thin and this stays testable)


class ModelChoice:
    """One entry of the model selector: a registry name or a package folder, with its card when known."""

    def __init__(self, key, title, source, card=None, available=True, entry=None, problem=None):
        self.key = key            # what --model gets: registry name or package path
        self.title = title
        self.source = source      # "bundled", "download" or "folder"
        self.card = card
        self.available = available
        self.entry = entry or {}
        self.problem = problem

    @property
    def phases(self):
        if self.card:
            return phases_of(self.card)
        phases = self.entry.get("phases") or self.entry.get("inputs", {}).get("phases")
        return list(phases) if phases else ["CT"]

    @property
    def intended_use(self):
        if self.card:
            return self.card.get("intended_use", "")
        return self.entry.get("intended_use", "")

    def __repr__(self):
        return "ModelChoice({!r}, {})".format(self.key, self.source)


def model_choices(registry_path=None, folders=()):
    """The models a user can pick: the registry's, then package folders they loaded before."""
    choices = []
    try:
        entries = model_package.read_registry(registry_path or model_package.REGISTRY_PATH)
    except TACEResponseError as exc:
        entries = []
        choices.append(ModelChoice("", "(no model registry)", "bundled", available=False, problem=str(exc)))
    base = os.path.dirname(str(registry_path or model_package.REGISTRY_PATH))
    for entry in entries:
        name = entry["name"]
        title = entry.get("title") or name
        if "path" in entry:
            folder = os.path.join(base, entry["path"])
            try:
                card = model_package.read_card(folder)
                choices.append(ModelChoice(name, title, "bundled", card=card, entry=entry))
            except TACEResponseError as exc:
                choices.append(ModelChoice(name, title, "bundled", available=False, entry=entry, problem=str(exc)))
        else:
            choice = ModelChoice(name, title, "download", available=False, entry=entry)
            try:
                package = model_package.resolve(name, allow_download=False)
                choice.card, choice.available = package.card, True
            except TACEResponseError:
                pass  # not downloaded yet: the widget asks before downloading
            choices.append(choice)
    for folder in folders:
        try:
            card = model_package.read_card(folder)
        except TACEResponseError:
            continue  # a folder that was moved or deleted since
        title = "{} {} ({})".format(card["name"], card["version"], folder)
        choices.append(ModelChoice(str(folder), title, "folder", card=card))
    return choices


def detect_devices():
    """What the device selector shows: [(value, text, enabled)] and a one-line description of the GPU."""
    gpu_name, mps = None, False
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                gpu_name = torch.cuda.get_device_name(0)
            mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        except Exception:  # a broken torch install must not break the panel
            gpu_name = None
    if gpu_name:
        description = "GPU: {}".format(gpu_name)
        gpu = ("cuda", "GPU ({})".format(gpu_name), True)
    elif mps:
        description = "GPU: Apple MPS"
        gpu = ("mps", "GPU (Apple MPS)", True)
    elif importlib.util.find_spec("torch") is None:
        description = "GPU: unknown until PyTorch is installed"
        gpu = ("cuda", "GPU (PyTorch not installed yet)", True)
    else:
        description = "No GPU found: the CPU will be used (seconds to a minute per CT)"
        gpu = ("cuda", "GPU (none found)", False)
    automatic = "Automatic ({})".format("GPU" if (gpu_name or mps) else "CPU")
    return [("auto", automatic, True), ("cpu", "CPU", True), gpu], description


def missing_packages(names=REQUIRED_PACKAGES):
    return [name for name in names if importlib.util.find_spec(name) is None]


def pip_constraints(names=SLICER_OWNED_PACKAGES):
    """Constraints that pin the packages Slicer owns at their installed versions during a pip install."""
    from importlib import metadata

    lines = []
    for name in names:
        try:
            lines.append("{}=={}".format(name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + ("\n" if lines else "")


# -------------------------------------------------------------------------------------------------------
# one run of the command, from scene to scene


class PredictionJob:
    """What one Predict or Update needs between starting the command and applying its result."""

    def __init__(self, kind, command, env, work_dir, output_dir, volume_ids, model_key, card,
                 segmentation_id=None, table_id=None):
        self.kind = kind                  # "predict" or "update"
        self.command = command
        self.env = env
        self.work_dir = work_dir
        self.output_dir = output_dir
        self.volume_ids = volume_ids
        self.model_key = model_key
        self.card = card
        self.segmentation_id = segmentation_id
        self.table_id = table_id
        self.stage = "starting"
        self.fraction = 0.0
        self.fingerprints = None          # update: the segments' content when the mask was written
        self.measurements = None          # update: measurements of the edited segmentation

    def handle_line(self, line):
        """Feed one stdout line; returns True when the progress moved."""
        message = parse_progress_line(line)
        if message is None:
            return False
        stage = str(message.get("stage"))
        overall = overall_fraction(stage, message.get("progress", 0.0))
        self.stage = stage
        if overall is not None:
            self.fraction = max(self.fraction, overall)
        return True

    @property
    def labels(self):
        return list(self.card["labels"])


class TACEResponseSceneLogic:
    """Predict and Update on one scene. The process runner is injectable; ``run`` drives a job to its end."""

    def __init__(self, scene, python_executable, lib_parent=LIB_PARENT, temp_root=None):
        self.scene = scene
        self.python_executable = python_executable
        self.lib_parent = lib_parent
        self.temp_root = temp_root

    # -- models

    def resolve_model(self, key, allow_download=False, progress=None):
        return model_package.resolve(key or model_package.DEFAULT_MODEL, allow_download=allow_download,
                                     progress=progress)

    # -- starting

    def _work_dir(self):
        if self.temp_root:
            os.makedirs(self.temp_root, exist_ok=True)
        return tempfile.mkdtemp(prefix="TACEResponse-", dir=self.temp_root)

    def _write_inputs(self, work_dir, volume_nodes, phases):
        paths = []
        for index, (node, phase) in enumerate(zip(volume_nodes, phases)):
            paths.append(write_volume(node, os.path.join(work_dir, "input{}_{}.nrrd".format(index, phase))))
        return paths

    def owned_segmentation(self, segmentation_node, volume_nodes):
        """``segmentation_node`` if it may receive a prediction for these volumes, else None (make a new one)."""
        if segmentation_node is None or self.scene.GetNodeByID(segmentation_node.GetID()) is None:
            return None
        recorded = [node.GetID() if node else None for node in input_volumes(segmentation_node)]
        wanted = [node.GetID() for node in volume_nodes]
        if recorded == wanted:
            return segmentation_node
        if not recorded and segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            return segmentation_node  # an empty segmentation the user created for this
        return None

    def start_predict(self, volume_nodes, model_key, device="auto", segmentation_node=None, table_node=None,
                      overwrite_edited=False, package=None):
        """Check the inputs, write them to a temporary folder, and build the command (nothing runs yet)."""
        package = package or self.resolve_model(model_key)
        phases = phases_of(package.card)
        volume_nodes = list(volume_nodes)
        problem = check_inputs(volume_nodes, phases)
        if problem:
            raise SlicerLogicError(problem)
        volume_nodes = volume_nodes[:len(phases)]
        segmentation_node = self.owned_segmentation(segmentation_node, volume_nodes)
        if segmentation_node is not None and not overwrite_edited:
            edited = edited_segments(self.scene, segmentation_node, volume_nodes[0], package.card["labels"])
            if edited:
                raise EditedSegmentationError(segmentation_node, edited)
        work_dir = self._work_dir()
        try:
            inputs = self._write_inputs(work_dir, volume_nodes, phases)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        output_dir = os.path.join(work_dir, "output")
        command = predict_command(self.python_executable, inputs, output_dir, model_key, device)
        if table_node is not None and segmentation_node is None:
            table_node = None  # a new segmentation gets a new table
        return PredictionJob("predict", command, child_environment(self.lib_parent), work_dir, output_dir,
                             [node.GetID() for node in volume_nodes], model_key, package.card,
                             segmentation_node.GetID() if segmentation_node else None,
                             table_node.GetID() if table_node else None)

    def start_update(self, segmentation_node, model_key, device="auto", package=None):
        """Write the inputs and the edited Tumor segment, measure the edited segmentation, build the command."""
        package = package or self.resolve_model(model_key)
        volume_nodes = input_volumes(segmentation_node)
        if not volume_nodes or any(node is None for node in volume_nodes):
            raise SlicerLogicError("the CT volume(s) {} was made from are no longer in the scene".format(
                segmentation_node.GetName()))
        phases = phases_of(package.card)
        problem = check_inputs(volume_nodes, phases)
        if problem:
            raise SlicerLogicError(problem)
        labels = package.card["labels"]
        ids = segment_ids(segmentation_node, labels)
        tumor_name = str(find_label(labels, "Tumor")["name"])
        if tumor_name not in ids:
            raise SlicerLogicError("{} has no {} segment; add one (Segment Editor) and draw the tumor in it".format(
                segmentation_node.GetName(), tumor_name))
        reference = volume_nodes[0]
        work_dir = self._work_dir()
        try:
            inputs = self._write_inputs(work_dir, volume_nodes, phases)
            mask_path = write_tumor_mask(self.scene, segmentation_node, reference,
                                         os.path.join(work_dir, "tumor_mask.nrrd"), ids[tumor_name])
            masks = segment_masks(self.scene, segmentation_node, reference, ids)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        output_dir = os.path.join(work_dir, "output")
        command = predict_command(self.python_executable, inputs, output_dir, model_key, device, mask_path)
        table = segmentation_node.GetNodeReference(REF_RESULT_TABLE)
        job = PredictionJob("update", command, child_environment(self.lib_parent), work_dir, output_dir,
                            [node.GetID() for node in volume_nodes], model_key, package.card,
                            segmentation_node.GetID(), table.GetID() if table else None)
        job.fingerprints = {name: fingerprint(mask) for name, mask in masks.items()}
        for label in labels:
            job.fingerprints.setdefault(str(label["name"]), "missing")
        job.measurements = measure_masks(masks, labels, reference)
        return job

    # -- running (synchronously; the widget polls a ProcessRunner from a timer instead)

    def run(self, job, runner_class=ProcessRunner, on_progress=None, idle=None, timeout=None, **finish_options):
        """Run the job's command to its end and apply the result. Returns the outcome (see ``finish``)."""
        def on_line(line):
            if job.handle_line(line) and on_progress is not None:
                on_progress(job.stage, job.fraction)

        try:
            code, stderr_text = run_to_completion(job.command, env=job.env, on_line=on_line, idle=idle,
                                                  timeout=timeout, runner_class=runner_class)
        except BaseException:
            self.discard(job)
            raise
        return self.finish(job, code, stderr_text, **finish_options)

    # -- applying

    def finish(self, job, exit_code, stderr_text="", overwrite_edited=False, new_segmentation=False,
               create_surface=False, keep_files=False):
        """Apply a finished command's result to the scene; returns {"segmentation", "table", "result"}.

        On failure raises PredictionFailed (scene unchanged). If the target segmentation was edited while
        the command ran, raises EditedSegmentationError and keeps the job's files so the caller can ask the
        user and call again with ``overwrite_edited`` or ``new_segmentation``. The temporary folder is
        removed afterwards unless ``keep_files`` (then call ``discard``).
        """
        try:
            if exit_code != 0:
                raise PredictionFailed(error_message(exit_code, stderr_text), exit_code)
            result = read_result(job.output_dir)
            if job.kind == "predict":
                outcome = self._apply_predict(job, result, overwrite_edited, new_segmentation, create_surface)
            else:
                outcome = self._apply_update(job, result)
        except EditedSegmentationError:
            raise
        except BaseException:
            self.discard(job)
            raise
        if not keep_files:
            self.discard(job)
        return outcome

    def discard(self, job):
        """Remove the job's temporary folder (inputs, mask, outputs)."""
        if job.work_dir and os.path.isdir(job.work_dir):
            shutil.rmtree(job.work_dir, ignore_errors=True)

    def _volumes(self, job):
        nodes = [self.scene.GetNodeByID(node_id) for node_id in job.volume_ids]
        if any(node is None for node in nodes):
            raise SlicerLogicError("an input volume was removed from the scene while the prediction ran")
        return nodes

    def _describe(self, result, job, volume_nodes):
        """The CLI's result, plus what Slicer knows: input node names, time, edit state."""
        result = dict(result)
        result["inputs"] = [node.GetName() for node in volume_nodes]
        result["model_key"] = job.model_key
        result["computed_at"] = datetime.datetime.now().isoformat(timespec="seconds")
        result.setdefault("software", {"name": "tace-response", "version": __version__})
        return result

    def _apply_predict(self, job, result, overwrite_edited, new_segmentation, create_surface):
        volume_nodes = self._volumes(job)
        reference = volume_nodes[0]
        labels = job.labels
        segmentation_node = None
        if job.segmentation_id and not new_segmentation:
            segmentation_node = self.scene.GetNodeByID(job.segmentation_id)
        if segmentation_node is not None and not overwrite_edited:
            edited = edited_segments(self.scene, segmentation_node, reference, labels)
            if edited:
                raise EditedSegmentationError(segmentation_node, edited)
        table_node = None
        if segmentation_node is not None:
            table_node = segmentation_node.GetNodeReference(REF_RESULT_TABLE)
        if table_node is None and job.table_id and not new_segmentation:
            table_node = self.scene.GetNodeByID(job.table_id)

        label_path = os.path.join(job.output_dir, SEGMENTATION_NAME)
        segmentation_node = import_segmentation(self.scene, label_path, labels, reference, segmentation_node,
                                                create_surface=create_surface)
        segmentation_node.RemoveNodeReferenceIDs(REF_INPUT_VOLUME)
        for node in volume_nodes:
            segmentation_node.AddNodeReferenceID(REF_INPUT_VOLUME, node.GetID())
        _set_json_attribute(segmentation_node, ATTR_MODEL, {
            "key": job.model_key, "name": job.card["name"], "version": job.card["version"], "labels": labels})
        prints = content_fingerprints(self.scene, segmentation_node, reference, labels)
        _set_json_attribute(segmentation_node, ATTR_PREDICTED_HASHES, prints)
        _set_json_attribute(segmentation_node, ATTR_RESULT_HASHES, prints)

        result = self._describe(result, job, volume_nodes)
        result.update({"tumor_edited": False, "liver_edited": False, "measured_on": "model output"})
        table_node = fill_table(self.scene, result, table_node, table_name(reference))
        segmentation_node.SetNodeReferenceID(REF_RESULT_TABLE, table_node.GetID())
        place_in_subject_hierarchy(self.scene, reference, [segmentation_node, table_node])
        return {"segmentation": segmentation_node, "table": table_node, "result": result}

    def _apply_update(self, job, result):
        volume_nodes = self._volumes(job)
        reference = volume_nodes[0]
        segmentation_node = self.scene.GetNodeByID(job.segmentation_id)
        if segmentation_node is None:
            raise SlicerLogicError("the segmentation was removed from the scene while the update ran")
        labels = job.labels
        predicted = _json_attribute(segmentation_node, ATTR_PREDICTED_HASHES) or {}
        tumor_name = str(find_label(labels, "Tumor")["name"])
        liver_name = str(find_label(labels, "Liver")["name"])

        result = self._describe(result, job, volume_nodes)
        result["measurements_from_command"] = result.get("measurements")
        result["measurements"] = job.measurements
        result["tumor_source"] = "user mask (edited {} segment)".format(tumor_name)
        result["tumor_edited"] = job.fingerprints.get(tumor_name) != predicted.get(tumor_name)
        result["liver_edited"] = job.fingerprints.get(liver_name) != predicted.get(liver_name)
        result["measured_on"] = "edited segmentation"
        result["tumor_mask"] = "{} segment of {}".format(tumor_name, segmentation_node.GetName())
        table_node = self.scene.GetNodeByID(job.table_id) if job.table_id else None
        table_node = fill_table(self.scene, result, table_node, table_name(reference))
        segmentation_node.SetNodeReferenceID(REF_RESULT_TABLE, table_node.GetID())
        _set_json_attribute(segmentation_node, ATTR_RESULT_HASHES, job.fingerprints)
        place_in_subject_hierarchy(self.scene, reference, [table_node])
        return {"segmentation": segmentation_node, "table": table_node, "result": result}

    # -- state for the panel

    def result_is_current(self, segmentation_node):
        """False when the segmentation was edited after its result was computed (Update is due)."""
        return not edited_segments(self.scene, segmentation_node, against=ATTR_RESULT_HASHES)

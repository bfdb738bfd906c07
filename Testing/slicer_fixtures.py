"""Helpers for testing the Slicer logic against slicer-core (real MRML classes, no Qt, no Slicer app).

- ``SceneHarness``: a vtkMRMLScene with the application logic and the module logics the Slicer logic
  needs (colors, volumes, segmentations, subject hierarchy, tables), as Slicer would set them up.
- ``write_random_model``: a model package with random weights and a small network (fast on a CPU).
- ``load_dicom_series`` / ``add_volume``: volume nodes read through storage nodes, as Slicer's loaders do.
- ``save_scene`` / ``SceneHarness.load``: save as .mrml + bulk files through storage nodes, and reopen.
- ``paint_block``: what a Segment Editor paint stroke does to a segment, with a known box.
"""

import os

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")
HCC_TACE_CT = os.path.join(SHARED_DATA, "hcc-tace-seg-HCC_048-portal-venous")


def _slicer():
    import slicer  # imported late: collecting tests must not fail where slicer-core is missing

    return slicer


class SceneHarness:
    """A scene wired like Slicer's: application logic, default colors, and module logics registered."""

    MODULES = (
        ("Volumes", "vtkSlicerVolumesLogic"),
        ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
        ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
        ("Tables", "vtkSlicerTablesLogic"),
    )

    def __init__(self):
        import vtk

        slicer = _slicer()
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        # Slicer registers its color logic as the Colors module logic; the volumes logic looks for it there
        self.app_logic.SetModuleLogic("Colors", self.app_logic.GetColorLogic())
        self.logics = {}
        for name, class_name in self.MODULES:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic

    @property
    def hierarchy(self):
        return _slicer().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def node_ids(self):
        return sorted(self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes()))

    @classmethod
    def load(cls, mrml_path):
        """A fresh harness with the saved scene read back (bulk data through the storage nodes)."""
        harness = cls()
        harness.scene.SetURL(str(mrml_path))
        if not harness.scene.Connect():
            raise RuntimeError("could not read scene {}".format(mrml_path))
        return harness


def add_study(harness, volume_node, patient="Patient 1", study="CT abdomen"):
    """Put a volume under patient/study items, as the DICOM module does."""
    hierarchy = harness.hierarchy
    patient_item = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), patient)
    study_item = hierarchy.CreateStudyItem(patient_item, study)
    hierarchy.CreateItem(study_item, volume_node)
    return study_item


def load_dicom_series(harness, folder, name="CT"):
    """A scalar volume node from a DICOM series, read through a storage node with slices in position order."""
    import SimpleITK as sitk

    slicer = _slicer()
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(files[0])
    storage.ResetFileNameList()
    for path in files:
        storage.AddFileName(path)
    storage.SetSingleFile(False)
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetName(name)
    harness.scene.AddNode(volume)
    harness.scene.AddNode(storage)
    volume.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(volume):
        raise RuntimeError("could not read DICOM series {}".format(folder))
    volume.CreateDefaultDisplayNodes()
    return volume


def add_volume(harness, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), directions=None, name="CT",
               label=False):
    """A volume node holding ``array`` (k, j, i) with the given RAS geometry."""
    import vtk

    slicer = _slicer()
    node = slicer.vtkMRMLLabelMapVolumeNode() if label else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    if directions is not None:
        matrix = vtk.vtkMatrix4x4()
        for r in range(3):
            for c in range(3):
                matrix.SetElement(r, c, directions[r][c])
        node.SetIJKToRASDirectionMatrix(matrix)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.AllocateScalars(vtk.VTK_SHORT if array.dtype == np.int16 else vtk.VTK_UNSIGNED_CHAR
                          if array.dtype == np.uint8 else vtk.VTK_FLOAT, 1)
    node.SetAndObserveImageData(image)
    slicer.util.arrayFromVolume(node)[...] = array
    image.Modified()
    harness.scene.AddNode(node)
    return node


def synthetic_ct(shape=(40, 64, 64), seed=0):
    """A small abdomen-like CT array (HU, int16): air, a body ellipse, a bright 'liver' and a dark lesion."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    nz, ny, nx = shape
    ct = np.full(shape, -1000.0, np.float32)
    body = ((x - nx / 2) / (0.45 * nx)) ** 2 + ((y - ny / 2) / (0.35 * ny)) ** 2 < 1
    ct[body] = 40.0
    liver = ((x - 0.4 * nx) / (0.2 * nx)) ** 2 + ((y - 0.5 * ny) / (0.18 * ny)) ** 2 + ((z - nz / 2) / (0.35 * nz)) ** 2 < 1
    ct[liver] = 110.0
    lesion = ((x - 0.4 * nx) ** 2 + (y - 0.5 * ny) ** 2 + (z - nz / 2) ** 2) < (0.06 * nx) ** 2
    ct[lesion] = 60.0
    ct += rng.normal(0, 8, shape).astype(np.float32)
    return ct.astype(np.int16)


def random_model_card(name="test-random", phases=("portal_venous",)):
    """A complete model card for a small random-weights network (no clinical meaning)."""
    return {
        "name": name,
        "version": "0.0.1",
        "intended_use": "random weights for software tests - not for clinical use",
        "training_data": "none: random weights",
        "inputs": {"phases": list(phases)},
        "preprocessing": {"spacing_mm": [3.0, 3.0, 3.0], "intensity_window_hu": [-100.0, 250.0]},
        "network": {"channels": [4, 8], "head_hidden": 8},
        "labels": [
            {"name": "Liver", "value": 1, "color": [0.86, 0.55, 0.45],
             "terminology": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
                             "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}}},
            {"name": "Tumor", "value": 2, "color": [0.95, 0.85, 0.25],
             "terminology": {"category": {"scheme": "SCT", "code": "49755003",
                                          "meaning": "Morphologically Altered Structure"},
                             "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"},
                             "anatomic_region": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}}},
        ],
        "risk": {"cutoff": 0.5, "how_chosen": "fixed for tests"},
        "license": "Apache-2.0",
        "weights": [],
    }


def write_random_model(folder, seed=0, **card_options):
    """Write a random-weights model package into ``folder`` (must not exist) and return it verified."""
    import torch

    from TACEResponseLib import model_package

    card = random_model_card(**card_options)
    torch.manual_seed(seed)
    network = model_package.build_network(card)
    return model_package.write_package(folder, card, [network.state_dict()])


def save_scene(harness, folder, file_names):
    """Save the scene like Slicer's Save dialog: each storable node through its storage node, then .mrml.

    ``file_names`` maps nodes to file names inside ``folder``.
    """
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    scene = harness.scene
    scene.SetRootDirectory(folder)
    scene.SetURL(os.path.join(folder, "scene.mrml"))
    for node, file_name in file_names.items():
        storage = node.GetStorageNode()
        if storage is None or not storage.SupportedFileType(file_name):
            node.AddDefaultStorageNode()
            storage = node.GetStorageNode()
        storage.ResetFileNameList()
        storage.SetFileName(os.path.join(folder, file_name))
        if hasattr(storage, "SetSingleFile"):
            storage.SetSingleFile(True)  # a volume read from a DICOM file list is written as one file
        if not storage.WriteData(node):
            raise RuntimeError("could not write {} to {}".format(node.GetName(), file_name))
    if not scene.Commit():
        raise RuntimeError("could not write scene.mrml")
    return os.path.join(folder, "scene.mrml")


def box_labelmap(reference_volume, box):
    """A labelmap node (not in a scene) on the reference volume's grid, 1 inside ``box`` ((k0, k1), (j0, j1),
    (i0, i1)) and 0 elsewhere; returns the node and its voxel array (a view: change it, then Modified())."""
    import vtk

    slicer = _slicer()
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    matrix = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(matrix)
    labelmap.SetIJKToRASMatrix(matrix)
    image = vtk.vtkImageData()
    image.SetDimensions(reference_volume.GetImageData().GetDimensions())
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    labelmap.SetAndObserveImageData(image)
    array = slicer.util.arrayFromVolume(labelmap)
    array[...] = 0
    (k0, k1), (j0, j1), (i0, i1) = box
    array[k0:k1, j0:j1, i0:i1] = 1
    image.Modified()
    return labelmap, array


def paint_block(harness, segmentation_node, segment_id, reference_volume, box):
    """Set the voxels of ``box`` ((k0, k1), (j0, j1), (i0, i1)) on the reference grid into a segment.

    Like a Segment Editor paint stroke with default masking: the painted voxels leave the other segments.
    """
    import vtk

    slicer = _slicer()
    with_mask, array = box_labelmap(reference_volume, box)
    image = with_mask.GetImageData()
    painted = array.astype(bool)
    # the stroke merged with what the segment holds, then written as the segment's whole content:
    # MODE_MERGE_MAX with a 0/1 image into an empty segment of a shared labelmap layer was seen to land
    # the voxels in the layer's label 1 (another segment) in slicer-core
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    with_segment = slicer.vtkMRMLLabelMapVolumeNode()
    harness.scene.AddNode(with_segment)
    one = vtk.vtkStringArray()
    one.InsertNextValue(segment_id)
    if not logic.ExportSegmentsToLabelmapNode(segmentation_node, one, with_segment, reference_volume):
        raise RuntimeError("could not read segment {}".format(segment_id))
    array[slicer.util.arrayFromVolume(with_segment) > 0] = 1
    harness.scene.RemoveNode(with_segment)
    image.Modified()
    oriented = logic.CreateOrientedImageDataFromVolumeNode(with_mask)
    if not logic.SetBinaryLabelmapToSegment(oriented, segmentation_node, segment_id, logic.MODE_REPLACE):
        raise RuntimeError("could not paint into segment {}".format(segment_id))
    return painted

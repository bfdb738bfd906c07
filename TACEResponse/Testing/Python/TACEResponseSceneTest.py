"""In-Slicer checks of TACEResponseLib.slicer_logic on the application's scene (run by ctest inside Slicer).

Outside Slicer the same functions are tested against slicer-core (Testing/test_slicer_logic.py). Here the
application adds what slicer-core lacks: subject hierarchy plugins that create items for every node, the
Segment Editor's array helpers, and slicer.util scene saving to .mrb. No model, no torch, no CLI.
Python 3.9 compatible.
"""

import json
import os
import sys
import unittest

import numpy as np
import slicer
import vtk

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

from TACEResponseLib import slicer_logic  # noqa: E402

LABELS = [
    {"name": "Liver", "value": 1, "color": [0.86, 0.55, 0.45]},
    {"name": "Tumor", "value": 2, "color": [0.95, 0.85, 0.25]},
]


class TACEResponseSceneTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()
        self.tempDir = slicer.util.tempDirectory("TACEResponseSceneTest")

    def tearDown(self):
        import shutil

        shutil.rmtree(self.tempDir, ignore_errors=True)

    def runTest(self):
        self.setUp()
        self.test_ImportEditSaveReload()
        self.tearDown()

    def makeVolumeAndLabels(self):
        import SimpleITK as sitk

        ct = np.full((30, 60, 50), -1000, np.int16)
        ct[5:25, 10:50, 10:40] = 100
        ijkToRAS = vtk.vtkMatrix4x4()
        for axis, spacing in enumerate((1.5, 1.5, 3.0)):
            ijkToRAS.SetElement(axis, axis, spacing)
        volume = slicer.util.addVolumeFromArray(ct, ijkToRAS=ijkToRAS, name="Scene test CT")
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
        study = hierarchy.CreateStudyItem(patient, "Study")
        hierarchy.SetItemParent(hierarchy.GetItemByDataNode(volume), study)

        reference = sitk.ReadImage(slicer_logic.write_volume(volume, os.path.join(self.tempDir, "ct.nrrd")))
        labels = np.zeros(ct.shape, np.uint8)
        labels[6:24, 12:48, 12:38] = 1
        labels[12:16, 25:32, 20:27] = 2
        image = sitk.GetImageFromArray(labels)
        image.CopyInformation(reference)
        path = os.path.join(self.tempDir, "segmentation.nii.gz")
        sitk.WriteImage(image, path)
        return volume, labels, path, study

    def test_ImportEditSaveReload(self):
        scene = slicer.mrmlScene
        volume, labels, path, study = self.makeVolumeAndLabels()
        segmentation = slicer_logic.import_segmentation(scene, path, LABELS, volume, create_surface=True)
        ids = slicer_logic.segment_ids(segmentation, LABELS)
        for label in LABELS:
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ids[label["name"]], volume)
            np.testing.assert_array_equal(mask > 0, labels == label["value"])
        table = slicer_logic.fill_table(scene, {"response_probability": 0.25, "risk_category": "high",
                                                "risk_cutoff": 0.5, "measurements": {"tumor_volume_ml": 1.0}},
                                        name="Scene test CT TACE response")
        slicer_logic.place_in_subject_hierarchy(scene, volume, [segmentation, table])
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        for node in (segmentation, table):
            self.assertEqual(hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)), study)

        # what the Segment Editor does to the Tumor segment, then the edit is detected
        prints = slicer_logic.content_fingerprints(scene, segmentation, volume, LABELS)
        segmentation.SetAttribute(slicer_logic.ATTR_PREDICTED_HASHES, json.dumps(prints))
        segmentation.AddNodeReferenceID(slicer_logic.REF_INPUT_VOLUME, volume.GetID())
        segmentation.SetAttribute(slicer_logic.ATTR_MODEL, json.dumps({"labels": LABELS}))
        self.assertEqual(slicer_logic.edited_segments(scene, segmentation), [])
        tumor = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ids["Tumor"], volume)
        tumor[18:22, 30:40, 20:30] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(tumor, segmentation, ids["Tumor"], volume)
        self.assertEqual(slicer_logic.edited_segments(scene, segmentation), ["Tumor"])
        maskPath = slicer_logic.write_tumor_mask(scene, segmentation, volume, os.path.join(self.tempDir, "m.nrrd"),
                                                 ids["Tumor"])
        self.assertTrue(os.path.isfile(maskPath))

        # save to .mrb with Slicer's own writers and read it back
        sceneFile = os.path.join(self.tempDir, "scene.mrb")
        self.assertTrue(slicer.util.saveScene(sceneFile))
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(sceneFile)
        segmentation = slicer.util.getFirstNodeByName(volume.GetName() + " TACE segmentation")
        self.assertIsNotNone(segmentation)
        self.assertEqual(slicer_logic.edited_segments(slicer.mrmlScene, segmentation), ["Tumor"])
        table = slicer.util.getFirstNodeByName("Scene test CT TACE response")
        self.assertEqual(slicer_logic.table_values(table)["risk_category"], "high")

"""The module's self-test (Reload and Test; registered as a ctest). Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import logging
import os

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from . import model_package, slicer_logic, terminology
from .module_logic import TACEResponseLogic
from .sample_data import SAMPLE_CT_NAME, SAMPLE_CT_PATH, SAMPLE_CT_SHA256, SAMPLE_LABEL_PATH, registerSampleData

FULL_SELF_TEST_VARIABLE = "TACE_RESPONSE_FULL_SELF_TEST"


class TACEResponseTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test.

    By default (the ctest on the extension build servers, and Reload and Test) it installs nothing and needs
    no PyTorch: the sample CT, the model registry and card, the bundled reference labels imported as Liver and
    Tumor segments with names, colors and codes that resolve in the shipped terminology, the result table and
    the parameter node. The full path (Predict on CPU, edit the tumor, Update, save and reopen the scene) runs
    the real background process and only when asked: set TACE_RESPONSE_FULL_SELF_TEST=1, or call
    test_PredictEditUpdate(). It never installs packages; without them it says so and returns.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WithoutPyTorch()
        if os.environ.get(FULL_SELF_TEST_VARIABLE) == "1":
            self.setUp()
            self.test_PredictEditUpdate()
        else:
            logging.info("TACE Response: the full Predict test was not run (set {name}=1 to run it)".format(
                name=FULL_SELF_TEST_VARIABLE))

    def test_WithoutPyTorch(self):
        self.delayDisplay("Model registry, sample CT, segments, terminology, table (no PyTorch needed)")
        logic = TACEResponseLogic()
        choices = {choice.key: choice for choice in logic.modelChoices()}
        self.assertIn(model_package.DEFAULT_MODEL, choices)
        card = choices[model_package.DEFAULT_MODEL].card
        self.assertIsNotNone(card, "the bundled demo model card is missing")
        volume = self.loadCT()
        self.assertIsNotNone(volume)
        self.assertIsNone(slicer_logic.check_inputs([volume], slicer_logic.phases_of(card)))
        labelPath = SAMPLE_LABEL_PATH
        segmentation = slicer_logic.import_segmentation(slicer.mrmlScene, labelPath, card["labels"], volume)
        segments = segmentation.GetSegmentation()
        self.assertEqual([segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())],
                         [str(label["name"]) for label in card["labels"]])
        # the shipped terminology loads (the module loaded it at start-up; loading again answers its name)
        self.assertEqual(terminology.load_into(slicer.modules.terminologies.logic()), terminology.CONTEXT_NAME)
        for index in range(segments.GetNumberOfSegments()):
            tag = vtk.reference("")
            self.assertTrue(segments.GetNthSegment(index).GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag))
            self.assertTrue(str(tag).startswith(terminology.CONTEXT_NAME + "~"))
        ids = slicer_logic.segment_ids(segmentation, card["labels"])
        masks = slicer_logic.segment_masks(slicer.mrmlScene, segmentation, volume, ids)
        measured = slicer_logic.measure_masks(masks, card["labels"], volume)
        self.assertGreater(measured["liver_volume_ml"], 0)
        table = slicer_logic.fill_table(slicer.mrmlScene, {"response_probability": 0.5, "measurements": measured})
        self.assertEqual(slicer_logic.table_values(table)["liver_volume_ml"], str(measured["liver_volume_ml"]))
        parameters = logic.getParameterNode()
        parameters.model, parameters.device = model_package.DEFAULT_MODEL, "cpu"
        self.assertEqual((parameters.model, parameters.device), (model_package.DEFAULT_MODEL, "cpu"))
        self.delayDisplay("Test passed (without PyTorch)")

    def loadCT(self):
        if os.path.isfile(SAMPLE_CT_PATH) and SAMPLE_CT_SHA256:
            import SampleData

            registerSampleData()
            return SampleData.downloadSample(SAMPLE_CT_NAME)
        # no bundled sample yet: a synthetic abdomen (body, liver, one lesion) at 1.5 x 1.5 x 3 mm
        import numpy as np

        z, y, x = np.indices((48, 96, 96), dtype=np.float32)
        ct = np.full(z.shape, -1000.0, np.float32)
        ct[((x - 48) / 44) ** 2 + ((y - 48) / 34) ** 2 < 1] = 40.0
        liver = ((x - 38) / 20) ** 2 + ((y - 48) / 18) ** 2 + ((z - 24) / 17) ** 2 < 1
        ct[liver] = 110.0
        ct[(x - 38) ** 2 + (y - 48) ** 2 + (z - 24) ** 2 < 36] = 55.0
        ijkToRAS = vtk.vtkMatrix4x4()
        for axis, spacing in enumerate((1.5, 1.5, 3.0)):
            ijkToRAS.SetElement(axis, axis, spacing)
        return slicer.util.addVolumeFromArray(ct.astype(np.int16), ijkToRAS=ijkToRAS, name="Synthetic CT")

    def test_PredictEditUpdate(self):
        import numpy as np

        self.delayDisplay("Checking dependencies and the demo model (nothing is installed here)")
        logic = TACEResponseLogic()
        missing = slicer_logic.missing_packages()
        choices = {choice.key: choice for choice in logic.modelChoices()}
        if missing or model_package.DEFAULT_MODEL not in choices or not choices[model_package.DEFAULT_MODEL].available:
            # a message, not skipTest: Slicer's test runner would show a skip as an error
            self.delayDisplay("Full Predict test not run: {what} missing".format(
                what=", ".join(missing) if missing else "the bundled demo model"))
            return

        volume = self.loadCT()
        self.assertIsNotNone(volume)
        self.delayDisplay("Predict (CPU)")
        outcome = logic.predict([volume], model_package.DEFAULT_MODEL, "cpu", timeout=1800)
        segmentation, table = outcome["segmentation"], outcome["table"]
        self.assertEqual(segmentation.GetName(), volume.GetName() + " TACE segmentation")
        names = [segmentation.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
        self.assertEqual(names, ["Liver", "Tumor"])
        values = slicer_logic.table_values(table)
        self.assertTrue(0.0 <= float(values["response_probability"]) <= 1.0)
        self.assertIn(values["risk_category"], ("low", "high"))
        self.assertEqual(values["tumor_edited"], "no")

        self.delayDisplay("Edit the tumor and Update")
        labels = slicer_logic.labels_of(segmentation)
        tumorID = slicer_logic.segment_ids(segmentation, labels)["Tumor"]
        tumor = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, tumorID, volume)
        edited = np.zeros(tumor.shape, np.uint8)
        k, j, i = (s // 2 for s in tumor.shape)
        edited[k - 3:k + 3, j - 8:j + 8, i - 8:i + 8] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, tumorID, volume)
        self.assertFalse(logic.sceneLogic.result_is_current(segmentation))
        with self.assertRaises(slicer_logic.EditedSegmentationError):
            logic.sceneLogic.start_predict([volume], model_package.DEFAULT_MODEL, "cpu", segmentation)
        outcome = logic.update(segmentation, model_package.DEFAULT_MODEL, "cpu", timeout=1800)
        values = slicer_logic.table_values(outcome["table"])
        self.assertEqual(values["tumor_edited"], "yes")
        voxelML = float(np.prod(volume.GetSpacing())) / 1000.0
        self.assertAlmostEqual(float(values["tumor_volume_ml"]), edited.sum() * voxelML, delta=0.02)
        self.assertTrue(logic.sceneLogic.result_is_current(segmentation))

        self.delayDisplay("Save and reopen the scene")
        sceneFile = os.path.join(slicer.app.temporaryPath, "TACEResponseSelfTest.mrb")
        self.assertTrue(slicer.util.saveScene(sceneFile))
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(sceneFile)
        os.remove(sceneFile)
        segmentation = slicer.util.getFirstNodeByName(volume.GetName() + " TACE segmentation")
        table = slicer.util.getFirstNodeByName(volume.GetName() + " TACE response")
        self.assertIsNotNone(segmentation)
        self.assertIsNotNone(table)
        self.assertEqual(slicer_logic.table_values(table)["tumor_edited"], "yes")
        self.assertEqual(slicer_logic.edited_segments(slicer.mrmlScene, segmentation), ["Tumor"])

        self.delayDisplay("Panel shows the reopened result")
        slicer.util.selectModule("TACEResponse")
        widget = slicer.modules.taceresponse.widgetRepresentation().self()
        widget.logic.getParameterNode().outputSegmentation = segmentation
        widget.logic.getParameterNode().resultTable = table
        widget.updateResultsPanel(checkEdits=True)
        self.assertTrue(widget.ui.probabilityLabel.text.endswith("%"))
        self.delayDisplay("Test passed")

"""TACE Response: liver and HCC tumor segmentation on CT with a prediction of the response to TACE.

The 3D Slicer shell (module, widget, logic, self-test). The work is done elsewhere:
- ``TACEResponseLib.slicer_logic``: scene <-> files, results -> segmentation and table nodes, the
  correction loop (tested outside Slicer against slicer-core);
- ``TACEResponseLib.process_runner``: the background process with progress and Cancel;
- ``PythonSlicer -m TACEResponseLib predict``: the same command line batch users run.

Python 3.9 compatible (Slicer 5.8).
"""

import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer without translation support
    def _(text):
        return text

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

from TACEResponseLib import model_package, slicer_logic  # noqa: E402
from TACEResponseLib.errors import TACEResponseError  # noqa: E402
from TACEResponseLib.process_runner import ProcessRunner  # noqa: E402

SAMPLE_CT_NAME = "TACESyntheticCT"
SAMPLE_CT_FILE = "synthetic_ct.nii.gz"
SAMPLE_CT_PATH = os.path.join(MODULE_DIR, "Resources", "SampleData", SAMPLE_CT_FILE)
# SHA-256 of Resources/SampleData/synthetic_ct.nii.gz, written here (never computed at registration time);
# Testing/test_slicer_structure.py checks that it matches the file.
SAMPLE_CT_SHA256 = "273ad97995613eb4017c3d7168e8b2667c2548e8c9fd03497c2d9eae2928902e"

TORCH_REQUIREMENT = ">=2.1"
SETTINGS_MODEL_FOLDERS = "TACEResponse/ModelFolders"
RISK_COLORS = {"high": "#c62828", "low": "#2e7d32"}


#
# TACEResponse
#


class TACEResponse(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TACE Response")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []  # PyTorchUtils (PyTorch extension) is used when torch is missing
        self.parent.contributors = ["TACE Response contributors"]
        self.parent.helpText = _("""
Segments the liver and hepatocellular carcinoma (HCC) on a contrast CT and estimates the probability of an
objective response to transarterial chemoembolization (TACE), with liver and tumor measurements.
<ol>
<li>Pick the model and the CT volume (one per phase the model needs), then click <b>Predict</b>.
Prediction runs in the background; <b>Cancel</b> stops it and leaves the scene unchanged.</li>
<li>Check the Liver and Tumor segments in the slice and 3D views. To correct the tumor, click
<b>Edit in Segment Editor</b>, edit, come back and click <b>Update</b>: the measurements are recomputed and the
response is predicted again with your tumor.</li>
<li>Save the scene: the segmentation, the result table and this panel's settings are saved with it.</li>
</ol>
The bundled demo model was trained on synthetic data and is <b>not for clinical use</b>.
See <a href="https://github.com/tace-response/SlicerTACEResponse#using-it-in-3d-slicer">the documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Multi-task network design after Li et al., J Pers Med 2022;12(2):248 ("multi-DL": shared encoder,
segmentation pathway, prediction pathway). Test CT from the TCIA HCC-TACE-Seg collection (Moawad et al., 2021,
CC BY 4.0). Uses PyTorch through the SlicerPyTorch extension.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def registerSampleData():
    """Add the synthetic sample CT to the Sample Data module (checksum written in SAMPLE_CT_SHA256)."""
    import SampleData

    if not os.path.isfile(SAMPLE_CT_PATH) or not SAMPLE_CT_SHA256:
        logging.info("TACE Response: sample CT not registered ({} missing or SAMPLE_CT_SHA256 not set)".format(
            SAMPLE_CT_PATH))
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="TACE Response",
        sampleName=SAMPLE_CT_NAME,
        thumbnailFileName=os.path.join(MODULE_DIR, "Resources", "Icons", "TACEResponse.png"),
        uris=pathlib.Path(SAMPLE_CT_PATH).as_uri(),
        fileNames=SAMPLE_CT_FILE,
        checksums="SHA256:" + SAMPLE_CT_SHA256,
        nodeNames=SAMPLE_CT_NAME,
        loadFileType="VolumeFile",
    )


#
# Parameter node
#


@parameterNodeWrapper
class TACEResponseParameterNode:
    """What the panel holds, saved with the scene.

    inputVolume1..4 - one CT volume per phase the model declares (in the card's order).
    model - registry name (e.g. "demo") or path of a model package folder.
    device - "auto", "cpu", "cuda" or "mps".
    outputSegmentation - the segmentation Predict writes to (None: a new one is created).
    resultTable - the table with probability, risk and measurements.
    """

    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    inputVolume4: vtkMRMLScalarVolumeNode
    model: str = model_package.DEFAULT_MODEL
    device: str = "auto"
    outputSegmentation: vtkMRMLSegmentationNode
    resultTable: vtkMRMLTableNode

    def inputVolumes(self):
        return [self.inputVolume1, self.inputVolume2, self.inputVolume3, self.inputVolume4]


#
# TACEResponseWidget
#


class TACEResponseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Thin: state in the parameter node, work in TACEResponseLogic / slicer_logic."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._choices = []
        self._job = None
        self._runner = None
        self._finishOptions = {}
        self._started = 0.0
        self._shownSegmentationID = None

    # -- setup and teardown -----------------------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TACEResponse.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TACEResponseLogic()

        self._volumeSelectors = [self.ui.inputVolumeSelector1, self.ui.inputVolumeSelector2,
                                 self.ui.inputVolumeSelector3, self.ui.inputVolumeSelector4]
        self._volumeLabels = [self.ui.inputVolumeLabel1, self.ui.inputVolumeLabel2,
                              self.ui.inputVolumeLabel3, self.ui.inputVolumeLabel4]
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModelPackage)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.onDeviceSelected)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.editSegmentationButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.updateButton.connect("clicked(bool)", self.onUpdate)

        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.populateDevices()
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self):
        self.cancelRunningJob()
        self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.updateResultsPanel(checkEdits=True)  # back from the Segment Editor: is an Update due?

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        self.cancelRunningJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume1:
            volume = self.logic.firstCTVolume()
            if volume:
                self._parameterNode.inputVolume1 = volume

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.selectModel(self._parameterNode.model)
            self.selectDevice(self._parameterNode.device)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None):
        self.updateButtons()
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        segmentationID = segmentation.GetID() if segmentation else None
        if segmentationID != self._shownSegmentationID:
            self._shownSegmentationID = segmentationID
            self.updateResultsPanel(checkEdits=True)

    # -- models and devices -----------------------------------------------------------------------------

    def populateModels(self):
        self._choices = self.logic.modelChoices()
        selector = self.ui.modelSelector
        wasBlocked = selector.blockSignals(True)
        selector.clear()
        for index, choice in enumerate(self._choices):
            text = choice.title
            if choice.source == "download" and not choice.available:
                text += _(" (download on first use)")
            selector.addItem(text, choice.key)
            tip = choice.problem or choice.intended_use or choice.key
            selector.setItemData(index, tip, qt.Qt.ToolTipRole)
        selector.blockSignals(wasBlocked)

    def currentChoice(self):
        index = self.ui.modelSelector.currentIndex
        return self._choices[index] if 0 <= index < len(self._choices) else None

    def selectModel(self, key):
        keys = [choice.key for choice in self._choices]
        index = keys.index(key) if key in keys else (keys.index(model_package.DEFAULT_MODEL)
                                                     if model_package.DEFAULT_MODEL in keys else 0)
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.setCurrentIndex(index)
        self.ui.modelSelector.blockSignals(wasBlocked)
        self.onModelSelected(index)

    def onModelSelected(self, index):
        choice = self.currentChoice()
        if self._parameterNode and choice and choice.key and self._parameterNode.model != choice.key:
            self._parameterNode.model = choice.key
        phases = choice.phases if choice else ["CT"]
        for i, (label, selector) in enumerate(zip(self._volumeLabels, self._volumeSelectors)):
            used = i < len(phases)
            label.setVisible(used)
            selector.setVisible(used)
            if used:
                label.text = _("{} CT:").format(slicer_logic.phase_title(phases[i]))
                selector.toolTip = _("CT volume of the {} phase").format(slicer_logic.phase_title(phases[i]).lower())
        self.ui.modelInfoLabel.text = self.modelDescription(choice)
        self.updateButtons()

    @staticmethod
    def modelDescription(choice):
        if choice is None or not choice.key:
            return _("No model found. Use <b>Load model package…</b> to pick a model folder.") + (
                "<br>" + choice.problem if choice is not None and choice.problem else "")
        if choice.problem:
            return "<span style='color:#c62828'>{}</span>".format(choice.problem)
        parts = []
        if choice.card:
            parts.append("<b>{} {}</b>".format(choice.card["name"], choice.card["version"]))
        use = choice.intended_use
        if use:
            color = "#c62828" if "not for clinical use" in use.lower() else "#555555"
            parts.append("<span style='color:{}'>{}</span>".format(color, use))
        if choice.source == "download" and not choice.available:
            parts.append(_("Downloaded when first used, after you agree; its SHA-256 checksum is verified."))
        return "<br>".join(parts)

    def populateDevices(self):
        devices, description = slicer_logic.detect_devices()
        selector = self.ui.deviceSelector
        wasBlocked = selector.blockSignals(True)
        selector.clear()
        for index, (value, text, enabled) in enumerate(devices):
            selector.addItem(text, value)
            if not enabled:
                selector.setItemData(index, 0, qt.Qt.UserRole - 1)  # item flags 0: shown but not selectable
        selector.blockSignals(wasBlocked)
        self.ui.deviceInfoLabel.text = description
        if self._parameterNode:
            self.selectDevice(self._parameterNode.device)

    def selectDevice(self, value):
        index = self.ui.deviceSelector.findData(value)
        wasBlocked = self.ui.deviceSelector.blockSignals(True)
        self.ui.deviceSelector.setCurrentIndex(index if index >= 0 else 0)
        self.ui.deviceSelector.blockSignals(wasBlocked)

    def onDeviceSelected(self, index):
        value = self.ui.deviceSelector.itemData(index)
        if self._parameterNode and value and self._parameterNode.device != value:
            self._parameterNode.device = value

    def onLoadModelPackage(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Select a model package folder"))
        if not folder:
            return
        try:
            with slicer.util.WaitCursor():
                package = model_package.load_package(folder)  # reads the card and verifies the weights' SHA-256
        except TACEResponseError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Not a usable model package"))
            return
        self.logic.rememberModelFolder(str(package.folder))
        self.populateModels()
        self.selectModel(str(package.folder))

    # -- buttons ----------------------------------------------------------------------------------------

    def running(self):
        return self._runner is not None

    def updateButtons(self):
        if not hasattr(self, "ui"):
            return
        reason = self.predictBlocker()
        self.ui.predictButton.enabled = reason is None
        self.ui.predictButton.toolTip = reason or _(
            "Segment liver and tumor and predict the TACE response. Runs in the background; Cancel stops it.")
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        made = segmentation is not None and bool(slicer_logic.labels_of(segmentation))
        self.ui.editSegmentationButton.enabled = segmentation is not None and not self.running()
        self.ui.editSegmentationButton.toolTip = (
            _("Open the Segment Editor on this segmentation and its CT volume") if segmentation is not None
            else _("Run Predict first (or select a segmentation under Outputs)."))
        updateReason = None
        if self.running():
            updateReason = _("A prediction is running.")
        elif not made:
            updateReason = _("Run Predict first: Update works on a segmentation made by this module.")
        self.ui.updateButton.enabled = updateReason is None
        self.ui.updateButton.toolTip = updateReason or _(
            "Recompute the measurements from the edited segments and predict the response again with your tumor.")

    def predictBlocker(self):
        """Why Predict cannot run now (tooltip text), or None."""
        if self._parameterNode is None:
            return _("No parameter node.")
        if self.running():
            return _("A prediction is running.")
        choice = self.currentChoice()
        if choice is None or not choice.key:
            return _("No model: use Load model package… to pick one.")
        if choice.problem:
            return _("The selected model cannot be used: {}").format(choice.problem)
        return slicer_logic.check_inputs(self._parameterNode.inputVolumes(), choice.phases)

    # -- Predict, Update, Cancel ------------------------------------------------------------------------

    def onPredict(self):
        if not self.prepareToRun(self.currentChoice()):
            return
        choice = self.currentChoice()  # refreshed: a model just downloaded now has its card
        volumes = self._parameterNode.inputVolumes()[:len(choice.phases)]
        segmentation = self._parameterNode.outputSegmentation
        options = {}
        try:
            with slicer.util.WaitCursor():
                job = self.logic.sceneLogic.start_predict(volumes, choice.key, self._parameterNode.device,
                                                          segmentation, self._parameterNode.resultTable)
        except slicer_logic.EditedSegmentationError as exc:
            answer = self.askAboutEdits(exc)
            if answer is None:
                return
            options = {"overwrite_edited": answer == "overwrite", "new_segmentation": answer == "new"}
            try:
                with slicer.util.WaitCursor():
                    job = self.logic.sceneLogic.start_predict(
                        volumes, choice.key, self._parameterNode.device,
                        None if answer == "new" else segmentation, None, overwrite_edited=answer == "overwrite")
            except TACEResponseError as error:
                self.showError(str(error))
                return
        except TACEResponseError as exc:
            self.showError(str(exc))
            return
        self.startJob(job, options)

    def onUpdate(self):
        if not self.prepareToRun(self.currentChoice()):
            return
        choice = self.currentChoice()
        try:
            with slicer.util.WaitCursor():
                job = self.logic.sceneLogic.start_update(self._parameterNode.outputSegmentation, choice.key,
                                                         self._parameterNode.device)
        except TACEResponseError as exc:
            self.showError(str(exc))
            return
        self.startJob(job, {})

    def prepareToRun(self, choice):
        """Dependencies installed and the model on disk (both after the user agrees)."""
        if choice is None or not choice.key:
            return False
        if not self.logic.ensureDependencies():
            self.setStatus(_("Not started: the Python packages the prediction needs are not installed."), "#c62828")
            return False
        self.populateDevices()  # a fresh PyTorch install may have found the GPU
        if choice.source == "download" and not choice.available:
            if not self.downloadModel(choice):
                return False
            key = choice.key
            self.populateModels()
            self.selectModel(key)
        return True

    def downloadModel(self, choice):
        url = choice.entry.get("url", "")
        size = choice.entry.get("size_mb")
        text = _("The model '{}' is not on this computer yet.\n\nDownload it from\n{}{}?\n\n"
                 "Its SHA-256 checksum is verified before it is used.").format(
            choice.title, url, " ({} MB)".format(size) if size else "")
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("Download model")):
            return False
        dialog = qt.QProgressDialog(_("Downloading {}…").format(choice.title), _("Cancel"), 0, 100,
                                    slicer.util.mainWindow())
        dialog.setWindowModality(qt.Qt.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.show()

        class Cancelled(Exception):
            pass

        def progress(fraction):
            dialog.setValue(int(100 * fraction))
            slicer.app.processEvents()
            if dialog.wasCanceled:
                raise Cancelled()

        try:
            self.logic.sceneLogic.resolve_model(choice.key, allow_download=True, progress=progress)
        except Cancelled:
            self.setStatus(_("Download cancelled."))
            return False
        except TACEResponseError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle=_("Model download failed"))
            return False
        finally:
            dialog.close()
        return True

    def askAboutEdits(self, error):
        """The user edited the target segmentation: overwrite it, write to a new one, or stop."""
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setIcon(qt.QMessageBox.Warning)
        box.setWindowTitle(_("Edited segmentation"))
        box.setText(_("{} has edits ({}). A new prediction would replace them.").format(
            error.segmentation_node.GetName(), ", ".join(error.edited)))
        box.setInformativeText(_("Keep your edits and write the new prediction to a new segmentation?"))
        newButton = box.addButton(_("New segmentation"), qt.QMessageBox.AcceptRole)
        overwriteButton = box.addButton(_("Overwrite my edits"), qt.QMessageBox.DestructiveRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.setDefaultButton(newButton)
        box.exec_()
        clicked = box.clickedButton()
        if clicked == newButton:
            return "new"
        if clicked == overwriteButton:
            return "overwrite"
        return None

    def startJob(self, job, finishOptions):
        self._job = job
        self._finishOptions = finishOptions
        self._runner = ProcessRunner(job.command, env=job.env)
        try:
            self._runner.start()
        except OSError as exc:
            self._runner = None
            self.logic.sceneLogic.discard(job)
            self.showError(_("Could not start {}: {}").format(job.command[0], exc))
            return
        self._started = time.monotonic()
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.cancelButton.setVisible(True)
        self.ui.cancelButton.enabled = True
        self.setStatus(_("Starting ({})…").format(_("update") if job.kind == "update" else _("prediction")))
        self.updateButtons()
        self._timer.start()

    def onPoll(self):
        if self._runner is None:
            self._timer.stop()
            return
        for line in self._runner.read_lines():
            if self._job.handle_line(line):
                self.ui.progressBar.setValue(int(round(100 * self._job.fraction)))
                self.setStatus(_("{}… ({:.0f} s)").format(self._job.stage.capitalize(),
                                                          time.monotonic() - self._started))
        code = self._runner.poll()
        if code is None:
            return
        self._timer.stop()
        stderrText = self._runner.stderr_text
        self.applyJob(code, stderrText)

    def applyJob(self, code, stderrText):
        job = self._job
        options = dict(self._finishOptions)
        options["create_surface"] = True
        self.setStatus(_("Loading the result…"))
        outcome = None
        try:
            while outcome is None:
                try:
                    with slicer.util.WaitCursor():
                        outcome = self.logic.sceneLogic.finish(job, code, stderrText, **options)
                except slicer_logic.EditedSegmentationError as exc:  # edited while the prediction ran
                    answer = self.askAboutEdits(exc)
                    if answer is None:
                        self.logic.sceneLogic.discard(job)
                        self.setStatus(_("Prediction discarded; your edited segmentation was kept."))
                        return
                    options["overwrite_edited"] = answer == "overwrite"
                    options["new_segmentation"] = answer == "new"
        except TACEResponseError as exc:
            self.showError(str(exc))
            return
        except Exception as exc:  # keep the panel usable; details go to the log
            logging.exception("TACE Response: applying the result failed")
            self.showError(_("Unexpected error while loading the result: {}").format(exc))
            return
        finally:
            self.endRun()
        self.showOutcome(job, outcome)

    def onCancel(self):
        self.cancelRunningJob()
        self.setStatus(_("Cancelled. The scene was not changed."))

    def cancelRunningJob(self):
        if self._runner is None:
            return
        self._timer.stop()
        with slicer.util.WaitCursor():
            self._runner.cancel()
        self.logic.sceneLogic.discard(self._job)
        self.endRun()

    def endRun(self):
        self._runner = None
        self._job = None
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.updateButtons()

    def showOutcome(self, job, outcome):
        segmentation, table = outcome["segmentation"], outcome["table"]
        self._parameterNode.outputSegmentation = segmentation
        self._parameterNode.resultTable = table
        volume = slicer.mrmlScene.GetNodeByID(job.volume_ids[0])
        if job.kind == "predict" and volume is not None:
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
        self.setStatus(_("Done in {:.0f} s.").format(time.monotonic() - self._started), "#2e7d32")
        self.updateResultsPanel(checkEdits=True)  # current, unless edited while it ran

    # -- correction loop --------------------------------------------------------------------------------

    def onEditInSegmentEditor(self):
        segmentation = self._parameterNode.outputSegmentation
        if segmentation is None:
            return
        volumes = [v for v in slicer_logic.input_volumes(segmentation) if v is not None]
        volume = volumes[0] if volumes else self._parameterNode.inputVolume1
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if volume is not None:
            if hasattr(editor, "setSourceVolumeNode"):
                editor.setSourceVolumeNode(volume)
            else:  # Slicer before 5.2
                editor.setMasterVolumeNode(volume)
        labels = slicer_logic.labels_of(segmentation)
        ids = slicer_logic.segment_ids(segmentation, labels) if labels else {}
        tumorID = next((ids[name] for name in ids if name.lower() == "tumor"), None)
        if tumorID:
            editor.setCurrentSegmentID(tumorID)

    # -- results panel ----------------------------------------------------------------------------------

    def setStatus(self, text, color=None):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: {}".format(color) if color else "")

    def showError(self, message):
        """The one-line error (e.g. from the command line) in the panel, in red."""
        self.setStatus(_("Error: {}").format(message), "#c62828")
        logging.error("TACE Response: " + message)

    def updateResultsPanel(self, checkEdits=False):
        if not hasattr(self, "ui"):
            return
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        table = self._parameterNode.resultTable if self._parameterNode else None
        if table is None and segmentation is not None:
            table = segmentation.GetNodeReference(slicer_logic.REF_RESULT_TABLE)
        result = slicer_logic.table_result(table) if table is not None else None
        fields = [self.ui.probabilityLabel, self.ui.riskLabel, self.ui.liverVolumeLabel, self.ui.tumorVolumeLabel,
                  self.ui.tumorCountLabel, self.ui.largestDiameterLabel, self.ui.tumorBurdenLabel,
                  self.ui.tumorSourceLabel, self.ui.modelUsedLabel, self.ui.deviceUsedLabel]
        if result is None:
            for field in fields:
                field.text = "—"
            self.ui.riskLabel.setStyleSheet("")
            self.ui.warningsLabel.text = ""
            self.ui.intendedUseLabel.text = ""
            self.ui.editStateLabel.text = ""
            self.updateButtons()
            return
        m = result.get("measurements", {})
        category = result.get("risk_category", "")
        self.ui.probabilityLabel.text = "{:.0%}".format(result["response_probability"])
        self.ui.riskLabel.text = _("{} risk (cutoff {:.0%})").format(category.capitalize(), result.get("risk_cutoff", 0))
        self.ui.riskLabel.toolTip = result.get("risk_meaning", "")
        self.ui.riskLabel.setStyleSheet("font-weight: bold; color: {}".format(RISK_COLORS.get(category, "black")))
        self.ui.liverVolumeLabel.text = _("{:.0f} mL (parenchyma {:.0f} mL)").format(
            m.get("liver_volume_ml", 0), m.get("liver_parenchyma_volume_ml", 0))
        self.ui.tumorVolumeLabel.text = "{:.1f} mL".format(m.get("tumor_volume_ml", 0))
        self.ui.tumorCountLabel.text = str(m.get("tumor_count", 0))
        self.ui.largestDiameterLabel.text = "{:.1f} mm".format(m.get("largest_tumor_diameter_mm", 0))
        self.ui.tumorBurdenLabel.text = "{:.1f} %".format(m.get("tumor_burden_percent", 0))
        if result.get("tumor_edited"):
            self.ui.tumorSourceLabel.text = _("edited by you (Segment Editor)")
        else:
            self.ui.tumorSourceLabel.text = result.get("tumor_source", "")
        model = result.get("model", {})
        self.ui.modelUsedLabel.text = "{} {}".format(model.get("name", ""), model.get("version", ""))
        self.ui.modelUsedLabel.toolTip = "SHA-256 " + model.get("sha256", "")
        self.ui.deviceUsedLabel.text = result.get("device", "")
        warnings = result.get("warnings", [])
        self.ui.warningsLabel.text = "<br>".join("⚠ " + w for w in warnings)
        use = model.get("intended_use", "")
        self.ui.intendedUseLabel.text = _("Intended use: {}").format(use) if use else ""
        if checkEdits:  # otherwise keep the last answer (finding it exports every segment)
            stale = False
            if segmentation is not None and slicer_logic.labels_of(segmentation):
                with slicer.util.WaitCursor():
                    stale = not self.logic.sceneLogic.result_is_current(segmentation)
            self.ui.editStateLabel.text = _(
                "The segmentation was edited after this result was computed: click <b>Update</b>.") if stale else ""
        self.updateButtons()


#
# TACEResponseLogic
#


class TACEResponseLogic(ScriptedLoadableModuleLogic):
    """Slicer-side services: parameter node, dependencies, models; the scene work is in slicer_logic."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._sceneLogic = None

    def getParameterNode(self):
        return TACEResponseParameterNode(super().getParameterNode())

    @property
    def sceneLogic(self):
        if self._sceneLogic is None or self._sceneLogic.scene is not slicer.mrmlScene:
            tempRoot = os.path.join(slicer.app.temporaryPath, "TACEResponse")
            self._sceneLogic = slicer_logic.TACEResponseSceneLogic(slicer.mrmlScene, self.pythonExecutable(),
                                                                   temp_root=tempRoot)
        return self._sceneLogic

    @staticmethod
    def pythonExecutable():
        """PythonSlicer: Slicer's Python, with the same packages, as a separate process."""
        found = shutil.which("PythonSlicer")
        if found:
            return found
        for folder in (os.path.dirname(sys.executable), os.path.join(slicer.app.slicerHome, "bin")):
            for name in ("PythonSlicer.exe", "PythonSlicer"):
                candidate = os.path.join(folder, name)
                if os.path.isfile(candidate):
                    return candidate
        raise TACEResponseError("PythonSlicer was not found next to Slicer; reinstall 3D Slicer")

    @staticmethod
    def firstCTVolume():
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if not node.IsA("vtkMRMLLabelMapVolumeNode"):
                return node
        return None

    # -- models

    def modelFolders(self):
        folders = qt.QSettings().value(SETTINGS_MODEL_FOLDERS) or []
        if isinstance(folders, str):
            folders = [folders]
        return [folder for folder in folders if os.path.isdir(folder)]

    def rememberModelFolder(self, folder):
        folders = [f for f in self.modelFolders() if f != folder] + [folder]
        qt.QSettings().setValue(SETTINGS_MODEL_FOLDERS, folders)

    def modelChoices(self):
        return slicer_logic.model_choices(folders=self.modelFolders())

    # -- dependencies

    def ensureDependencies(self, askConfirmation=True):
        """Install what the prediction process needs, after confirmation. Returns True when all is there.

        torch comes from the PyTorch extension (PyTorchUtils picks a build that matches the GPU driver);
        other packages are pip-installed with Slicer's own numpy and SimpleITK pinned, never replaced.
        """
        missing = slicer_logic.missing_packages()
        owned = [name for name in missing if name in slicer_logic.SLICER_OWNED_PACKAGES]
        if owned:
            slicer.util.errorDisplay(_("Slicer's own Python package(s) {} are missing; reinstall 3D Slicer.").format(
                ", ".join(owned)))
            return False
        if "torch" in missing and not self.installTorch(askConfirmation):
            return False
        others = [name for name in slicer_logic.missing_packages() if name in slicer_logic.PIP_REQUIREMENTS]
        if others:
            requirements = [slicer_logic.PIP_REQUIREMENTS[name] for name in others]
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    _("TACE Response needs the Python package(s) {} (small). Install now?\n\n"
                      "Slicer's own numpy and SimpleITK are kept as they are.").format(", ".join(others)),
                    windowTitle=_("Install Python packages")):
                return False
            constraints = tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False)
            try:
                constraints.write(slicer_logic.pip_constraints())
                constraints.close()
                with slicer.util.WaitCursor():
                    slicer.util.pip_install(requirements + ["--constraint", constraints.name])
            except Exception as exc:
                self.showInstallFailure(", ".join(others), exc)
                return False
            finally:
                os.remove(constraints.name)
        return not slicer_logic.missing_packages()

    def installTorch(self, askConfirmation=True):
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_(
                "TACE Response needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
                "restart Slicer, and try again."), windowTitle=_("PyTorch extension missing"))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.torchInstalled():
            return True
        try:
            with slicer.util.WaitCursor():
                torch = torchLogic.installTorch(askConfirmation=askConfirmation,
                                                torchVersionRequirement=TORCH_REQUIREMENT)
        except Exception as exc:
            self.showInstallFailure("PyTorch", exc)
            return False
        return torch is not None  # None: the user declined

    @staticmethod
    def showInstallFailure(what, exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        slicer.util.errorDisplay(_(
            "Could not install {}: {}\n\nThis needs an internet connection. If this computer is offline, "
            "install the package(s) on a connected computer with the same Slicer version, or connect and try "
            "again.").format(what, first), windowTitle=_("Installation failed"))

    # -- scripting: the whole Predict without the panel

    def predict(self, volumeNodes, model=model_package.DEFAULT_MODEL, device="auto", segmentationNode=None,
                timeout=None):
        """Run Predict synchronously (keeps the GUI alive) and return {"segmentation", "table", "result"}."""
        job = self.sceneLogic.start_predict(volumeNodes, model, device, segmentationNode)
        return self.sceneLogic.run(job, idle=slicer.app.processEvents, timeout=timeout, create_surface=True)

    def update(self, segmentationNode, model=model_package.DEFAULT_MODEL, device="auto", timeout=None):
        """Run Update synchronously with the current Tumor segment."""
        job = self.sceneLogic.start_update(segmentationNode, model, device)
        return self.sceneLogic.run(job, idle=slicer.app.processEvents, timeout=timeout)


#
# TACEResponseTest
#


class TACEResponseTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: load a CT, Predict on CPU, check segments and table, edit the tumor, Update,
    save and reopen the scene. Runs the real background process with the bundled demo model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PredictEditUpdate()

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

        self.delayDisplay("Checking dependencies and the demo model")
        logic = TACEResponseLogic()
        self.assertTrue(logic.ensureDependencies(askConfirmation=False), "Python dependencies missing")
        choices = {choice.key: choice for choice in logic.modelChoices()}
        if model_package.DEFAULT_MODEL not in choices or not choices[model_package.DEFAULT_MODEL].available:
            self.skipTest("the bundled demo model is not installed")

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

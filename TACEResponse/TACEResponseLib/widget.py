"""The module panel: set-up, scene events and the parameter node; its sections live beside it
(widget_models, widget_runs, widget_results). State is in the parameter node, work in module_logic and
slicer_logic. Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import sys

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .module_logic import TACEResponseLogic
from .widget_install import InstallSection
from .widget_models import ModelAndDeviceSection
from .widget_results import ResultsSection
from .widget_runs import RunSection

# the library modules Slicer's process uses, each after those it imports (reloaded by Reload)
LIB_RELOAD_ORDER = ("i18n", "errors", "model_package", "environment", "terminology", "process_runner",
                    "slicer_errors", "scene_io", "segments", "result_table", "cli", "command", "model_choices",
                    "slicer_logic", "sample_data", "parameters", "dependency_install", "module_logic",
                    "widget_models", "widget_install", "widget_runs", "widget_results", "widget", "self_test")


class TACEResponseWidget(ModelAndDeviceSection, InstallSection, RunSection, ResultsSection,
                         ScriptedLoadableModuleWidget, VTKObservationMixin):
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
        self._sceneSegments = []
        self._deviceProbe = None
        self._probeRunner = None

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
        self._probeTimer = qt.QTimer()
        self._probeTimer.setInterval(200)
        self._probeTimer.connect("timeout()", self.onDeviceProbePoll)
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
        self.ui.useAsLiverButton.connect("clicked(bool)", lambda: self.onUseSceneSegment("Liver"))
        self.ui.useAsTumorButton.connect("clicked(bool)", lambda: self.onUseSceneSegment("Tumor"))

        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.populateDevices()
        self.populateModels()
        self.initializeParameterNode()

    def onReload(self):
        """Reload TACEResponseLib too (the template's Reload only re-reads this file), floors bottom-up."""
        import importlib

        for name in LIB_RELOAD_ORDER:
            module = sys.modules.get("TACEResponseLib." + name)
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self):
        if self._install is not None:
            self._install.cancel()
            self.endInstall()
        self.cancelRunningJob()
        if self._probeRunner is not None:
            self._probeTimer.stop()
            self._probeRunner.cancel()
            self._probeRunner = None
        self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.startDeviceProbe()  # once, in a child process: torch is never imported into Slicer's process
        self.populateSceneSegments()
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
        # the saved choices win over the combo boxes (a scene was loaded, or a script set them)
        if self._parameterNode:
            choice = self.currentChoice()
            if choice is None or choice.key != self._parameterNode.model:
                self.selectModel(self._parameterNode.model)
            if self.ui.deviceSelector.itemData(self.ui.deviceSelector.currentIndex) != self._parameterNode.device:
                self.selectDevice(self._parameterNode.device)
        self.updateButtons()
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        segmentationID = segmentation.GetID() if segmentation else None
        if segmentationID != self._shownSegmentationID:
            self._shownSegmentationID = segmentationID
            self.updateResultsPanel(checkEdits=True)

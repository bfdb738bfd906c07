"""Slicer-side services of the module: the parameter node, the scene logic with PythonSlicer as its
process, remembered model folders, and the install plan of what the prediction process needs.
Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import os
import shutil
import sys

import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import dependency_install, environment, model_package, slicer_logic
from .errors import TACEResponseError
from .i18n import _
from .parameters import TACEResponseParameterNode

TORCH_REQUIREMENT = environment.TORCH_REQUIREMENT
SETTINGS_MODEL_FOLDERS = "TACEResponse/ModelFolders"


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
        raise TACEResponseError(_("PythonSlicer was not found next to Slicer; reinstall 3D Slicer"))

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

    def installPlan(self):
        """What the prediction process still needs and the background commands that install it (see
        dependency_install; the panel asks once and runs them off the GUI thread)."""
        workDir = os.path.join(slicer.app.temporaryPath, "TACEResponse", "install")
        return dependency_install.make_plan(self.pythonExecutable(), workDir, TORCH_REQUIREMENT)

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

"""Slicer-side services of the module: the parameter node, the scene logic with PythonSlicer as its
process, remembered model folders, and installing what the prediction process needs (after one
confirmation). Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import importlib.util
import os
import shutil
import sys
import tempfile

import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import environment, model_package, slicer_logic
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
        """Install what the prediction process needs after one confirmation that lists all of it.
        Returns True when everything is there.

        torch comes from the PyTorch extension (PyTorchUtils picks a build that matches the GPU driver);
        other packages are pip-installed with Slicer's own numpy and SimpleITK pinned, never replaced.
        """
        plan = environment.install_plan(TORCH_REQUIREMENT)
        if plan["owned_missing"]:
            slicer.util.errorDisplay(_("Slicer's own Python package(s) {names} are missing; reinstall 3D Slicer.").format(
                names=", ".join(plan["owned_missing"])))
            return False
        if not plan["lines"]:
            return True
        if plan["torch"] is not None:
            if importlib.util.find_spec("PyTorchUtils") is None:  # the PyTorch extension
                slicer.util.errorDisplay(_(
                    "TACE Response needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
                    "restart Slicer, and try again."), windowTitle=_("PyTorch extension missing"))
                return False
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("TACE Response needs to install:\n\n{items}\n\nSlicer's own numpy and SimpleITK are kept as they "
                  "are. This needs an internet connection and can take several minutes. Install now?").format(
                    items="\n".join("• " + line for line in plan["lines"])),
                windowTitle=_("Install Python packages")):
            return False
        progress = slicer.util.createProgressDialog(labelText=_("Installing Python packages…"), maximum=0)
        try:
            slicer.app.processEvents()
            if plan["torch"] is not None and not self.installTorch(upgrade=plan["torch"] == "upgrade"):
                return False
            if plan["pip"]:
                progress.labelText = _("Installing {names}…").format(names=", ".join(plan["pip"]))
                slicer.app.processEvents()
                constraints = tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False)
                try:
                    constraints.write(environment.pip_constraints())
                    constraints.close()
                    with slicer.util.WaitCursor():
                        slicer.util.pip_install(plan["pip"] + ["--constraint", constraints.name])
                except Exception as exc:
                    self.showInstallFailure(", ".join(plan["pip"]), exc)
                    return False
                finally:
                    os.remove(constraints.name)
        finally:
            progress.close()
        return not environment.install_plan(TORCH_REQUIREMENT)["lines"]

    def installTorch(self, upgrade=False):
        """PyTorch through PyTorchUtils, already confirmed by the user (ensureDependencies asked once)."""
        import PyTorchUtils

        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        try:
            with slicer.util.WaitCursor():
                if upgrade:
                    torchLogic.uninstallTorch()
                torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
        except Exception as exc:
            self.showInstallFailure("PyTorch", exc)
            return False
        return torch is not None

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

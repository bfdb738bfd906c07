"""The panel's model and device selectors: the registry and loaded folders, downloads (progress, Cancel),
and the devices a child process finds (torch is never imported into Slicer). Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import logging
import os

import qt
import slicer

from . import environment, model_package, slicer_logic
from .errors import TACEResponseError
from .i18n import _
from .process_runner import ProcessRunner


class ModelAndDeviceSection:
    """Mixed into TACEResponseWidget: needs self.ui, self.logic, self._parameterNode, self._choices."""

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
        """The model the parameter node holds (what Predict uses), else the combo box's."""
        if self._parameterNode is not None:
            saved = slicer_logic.choice_for(self._choices, self._parameterNode.model)
            if saved is not None:
                return saved
        index = self.ui.modelSelector.currentIndex
        return self._choices[index] if 0 <= index < len(self._choices) else None

    def selectModel(self, key):
        keys = [choice.key for choice in self._choices]
        if key and key not in keys and os.path.isdir(key):  # a package folder saved with the scene
            self.logic.rememberModelFolder(key)
            self.populateModels()
            keys = [choice.key for choice in self._choices]
        index = keys.index(key) if key in keys else (keys.index(model_package.DEFAULT_MODEL)
                                                     if model_package.DEFAULT_MODEL in keys else 0)
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.setCurrentIndex(index)
        self.ui.modelSelector.blockSignals(wasBlocked)
        self.onModelSelected(index)

    def onModelSelected(self, index):
        choice = self._choices[index] if 0 <= index < len(self._choices) else None  # the user's pick
        if self._parameterNode and choice and choice.key and self._parameterNode.model != choice.key:
            self._parameterNode.model = choice.key
        phases = choice.phases if choice else ["CT"]
        for i, (label, selector) in enumerate(zip(self._volumeLabels, self._volumeSelectors)):
            used = i < len(phases)
            label.setVisible(used)
            selector.setVisible(used)
            if used:
                phase = slicer_logic.phase_title(phases[i])
                label.text = _("{phase} CT:").format(phase=phase)
                selector.toolTip = _("CT volume of the {phase} phase").format(phase=phase.lower())
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
            # not translated: matched in the model card, which is written in English
            color = "#c62828" if "not for clinical use" in use.lower() else "#555555"
            parts.append("<span style='color:{}'>{}</span>".format(color, use))
        if choice.source == "download" and not choice.available:
            parts.append(_("Downloaded when first used, after you agree; its SHA-256 checksum is verified."))
        return "<br>".join(parts)

    def startDeviceProbe(self, again=False):
        """Ask a child process which devices PyTorch sees (no torch import here; the answer comes in seconds)."""
        if self._probeRunner is not None or (self._deviceProbe is not None and not again):
            return
        try:
            command = environment.probe_command(self.logic.pythonExecutable())
            self._probeRunner = ProcessRunner(command, env=slicer_logic.child_environment()).start()
        except (OSError, TACEResponseError) as exc:
            logging.warning("TACE Response: could not probe the devices: {error}".format(error=exc))
            self._probeRunner = None
            return
        self._probeLines = []
        self._probeTimer.start()

    def onDeviceProbePoll(self):
        if self._probeRunner is None:
            self._probeTimer.stop()
            return
        self._probeLines += self._probeRunner.read_lines()
        if self._probeRunner.poll() is None:
            return
        self._probeTimer.stop()
        self._probeLines += self._probeRunner.read_lines()
        found = environment.parse_probe("\n".join(self._probeLines))
        if found is None:
            found = {"torch": None, "cuda": None, "mps": False,
                     "error": (self._probeRunner.stderr_text.strip().splitlines() or [_("no answer")])[-1]}
        self._probeRunner = None
        self._deviceProbe = found
        self.populateDevices()

    def populateDevices(self):
        devices, description = environment.device_choices(self._deviceProbe)
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

    def downloadModel(self, choice):
        url = choice.entry.get("url", "")
        size = choice.entry.get("size_mb")
        if size:
            text = _("The model '{model}' is not on this computer yet.\n\nDownload it ({size} MB) from\n{url}?\n\n"
                     "Its SHA-256 checksum is verified before it is used.").format(model=choice.title, size=size, url=url)
        else:
            text = _("The model '{model}' is not on this computer yet.\n\nDownload it from\n{url}?\n\n"
                     "Its SHA-256 checksum is verified before it is used.").format(model=choice.title, url=url)
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("Download model")):
            return False
        dialog = qt.QProgressDialog(_("Downloading {model}…").format(model=choice.title), _("Cancel"), 0, 100,
                                    slicer.util.mainWindow())
        dialog.setWindowModality(qt.Qt.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.show()

        class Cancelled(Exception):
            pass

        def progress(fraction):
            if fraction is None:  # the server sent no size: a busy bar, Cancel still works
                dialog.setMaximum(0)
            else:
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

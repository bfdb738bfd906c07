"""The panel's Predict, Update and Cancel: buttons, the background process polled from a timer, the log
box, and applying the result. Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import logging
import time

import qt
import slicer

from . import slicer_logic
from .errors import TACEResponseError
from .i18n import _
from .process_runner import ProcessRunner


class RunSection:
    """Mixed into TACEResponseWidget: needs self.ui, self.logic, self._parameterNode, self._timer."""

    def running(self):
        return self._runner is not None or self.installing()

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
        if self.installing():
            updateReason = _("Python packages are being installed.")
        elif self.running():
            updateReason = _("A prediction is running.")
        elif not made:
            updateReason = _("Run Predict first: Update works on a segmentation made by this module.")
        self.ui.updateButton.enabled = updateReason is None
        self.ui.updateButton.toolTip = updateReason or _(
            "Recompute the measurements from the edited segments and predict the response again with your tumor "
            "(and your liver, when you edited it).")
        canTake = updateReason is None and bool(self._sceneSegments)
        self.ui.useAsLiverButton.enabled = canTake
        self.ui.useAsTumorButton.enabled = canTake

    def predictBlocker(self):
        """Why Predict cannot run now (tooltip text), or None."""
        if self._parameterNode is None:
            return _("No parameter node.")
        if self.installing():
            return _("Python packages are being installed.")
        if self.running():
            return _("A prediction is running.")
        choice = self.currentChoice()
        if choice is None or not choice.key:
            return _("No model: use Load model package… to pick one.")
        if choice.problem:
            return _("The selected model cannot be used: {problem}").format(problem=choice.problem)
        return slicer_logic.check_inputs(self._parameterNode.inputVolumes(), choice.phases)

    def onPredict(self):
        if not self.prepareToRun(self.currentChoice(), self.onPredict):
            return
        choice = self.currentChoice()  # refreshed: a model just downloaded now has its card
        volumes = self._parameterNode.inputVolumes()[:len(choice.phases)]
        options = {"segmentation_node": self._parameterNode.outputSegmentation,
                   "table_node": self._parameterNode.resultTable}
        finishOptions = {}
        # each question answered sets the option that keeps it from being asked again, so this ends
        while True:
            try:
                with slicer.util.WaitCursor():
                    job = self.logic.sceneLogic.start_predict(volumes, choice.key, self._parameterNode.device,
                                                              **options)
                break
            except slicer_logic.NonLinearTransformError as exc:
                if not slicer.util.confirmOkCancelDisplay(exc.question(), windowTitle=_("Non-linear transform")):
                    self.setStatus(_("Not started: {volume} is under a non-linear transform.").format(
                        volume=exc.volume_node.GetName()))
                    return
                options["harden_copies"] = True
            except slicer_logic.EditedSegmentationError as exc:
                answer = self.askAboutEdits(exc)
                if answer is None:
                    return
                finishOptions = {"overwrite_edited": answer == "overwrite", "new_segmentation": answer == "new"}
                options["overwrite_edited"] = answer == "overwrite"
                if answer == "new":
                    options["segmentation_node"] = options["table_node"] = None
            except TACEResponseError as exc:
                self.showError(str(exc))
                return
        self.startJob(job, finishOptions)

    def onUpdate(self):
        if not self.prepareToRun(self.currentChoice(), self.onUpdate):
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

    def prepareToRun(self, choice, retry):
        """Dependencies installed and the model on disk (both after the user agrees). A missing package is
        installed in the background first; ``retry`` (Predict or Update) runs again once it is there."""
        if choice is None or not choice.key:
            return False
        if not self.installThenContinue(retry):
            return False
        self.startDeviceProbe(again=True)  # a fresh PyTorch install may see the GPU
        if choice.source == "download" and not choice.available:
            if not self.downloadModel(choice):
                return False
            key = choice.key
            self.populateModels()
            self.selectModel(key)
        return True

    def askAboutEdits(self, error):
        """The user edited the target segmentation: overwrite it, write to a new one, or stop."""
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setIcon(qt.QMessageBox.Warning)
        box.setWindowTitle(_("Edited segmentation"))
        box.setText(_("{segmentation} has edits ({segments}). A new prediction would replace them.").format(
            segmentation=error.segmentation_node.GetName(), segments=", ".join(error.edited)))
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
            self.showError(_("Could not start {program}: {error}").format(program=job.command[0], error=exc))
            return
        self._started = time.monotonic()
        self.ui.logTextEdit.clear()
        self.ui.logTextEdit.appendPlainText("$ " + " ".join(job.command))
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.cancelButton.setVisible(True)
        self.ui.cancelButton.enabled = True
        self.setStatus(_("Starting the update…") if job.kind == "update" else _("Starting the prediction…"))
        self.updateButtons()
        self._timer.start()

    def onPoll(self):
        if self._runner is None:
            self._timer.stop()
            return
        for line in self._runner.read_lines():
            if not self._job.handle_line(line):
                self.ui.logTextEdit.appendPlainText(line)
            else:
                self.ui.progressBar.setValue(int(round(100 * self._job.fraction)))
                self.setStatus(_("{stage}… ({seconds:.0f} s)").format(stage=self._job.stage.capitalize(),
                                                                      seconds=time.monotonic() - self._started))
        code = self._runner.poll()
        if code is None:
            return
        self._timer.stop()
        stderrText = self._runner.stderr_text
        for line in stderrText.splitlines():
            self.ui.logTextEdit.appendPlainText(line)
        # the whole run in Slicer's log too: the first thing to attach to a bug report
        (logging.info if code == 0 else logging.error)(
            "TACE Response:\n" + slicer_logic.command_log(self._job, code, stderrText))  # not translated: log
        if code != 0:
            self.ui.logCollapsibleButton.collapsed = False
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
            self.showError(_("Unexpected error while loading the result: {error}").format(error=exc))
            return
        finally:
            self.endRun()
        self.showOutcome(job, outcome)

    def onCancel(self):
        if self.cancelInstall():
            return
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
        self.setStatus(_("Done in {seconds:.0f} s.").format(seconds=time.monotonic() - self._started), "#2e7d32")
        self.updateResultsPanel(checkEdits=True)  # current, unless edited while it ran

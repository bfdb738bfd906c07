"""The panel's dependency install: one confirmation listing everything (the exact commands in its details),
then the plan's commands as background processes polled from a timer, their output in the log box, and
Cancel. The plan and the run are dependency_install's (Qt-free, tested outside Slicer); this is the thin Qt
part. Runs inside Slicer only (imports qt and the application); Python 3.9 compatible (Slicer 5.8)."""

import logging
import time

import qt
import slicer

from . import dependency_install
from .i18n import _


class InstallSection:
    """Mixed into TACEResponseWidget: needs self.ui, self.logic and the status and log helpers."""

    _install = None
    _installContinuation = None
    _installTimer = None

    def installing(self):
        return self._install is not None

    def installThenContinue(self, continuation):
        """True when nothing is missing (the caller goes on now). Otherwise, after the user agrees, start the
        install in the background and return False; ``continuation()`` is called once it succeeded."""
        try:
            plan = self.logic.installPlan()
        except OSError as exc:
            self.showError(_("Could not prepare the install: {error}").format(error=exc))
            return False
        if plan.owned_missing:
            slicer.util.errorDisplay(plan.owned_missing_text())
            return False
        if not plan.needed:
            return True
        if not slicer.util.confirmOkCancelDisplay(plan.confirmation_text(), windowTitle=_("Install Python packages"),
                                                  detailedText=plan.commands_text()):
            self.setStatus(_("Not started: the Python packages the prediction needs are not installed."), "#c62828")
            return False
        self._install = dependency_install.InstallRun(plan)
        self._installContinuation = continuation
        self._installStarted = time.monotonic()
        self.ui.logTextEdit.clear()
        self.ui.logCollapsibleButton.collapsed = False
        try:
            self.appendLog(self._install.start())
        except OSError as exc:  # the constraints file could not be written
            self._install = None
            self.showError(_("Could not start the install: {error}").format(error=exc))
            return False
        self.ui.progressBar.setMaximum(0)  # a busy bar: pip reports no overall progress
        self.ui.progressBar.setVisible(True)
        self.ui.cancelButton.setVisible(True)
        self.ui.cancelButton.enabled = True
        self.updateButtons()
        if self._installTimer is None:
            self._installTimer = qt.QTimer()
            self._installTimer.setInterval(200)
            self._installTimer.connect("timeout()", self.onInstallPoll)
        self._installTimer.start()
        self.onInstallPoll()
        return False

    def appendLog(self, lines):
        for line in lines:
            self.ui.logTextEdit.appendPlainText(line)

    def onInstallPoll(self):
        run = self._install
        if run is None:
            self._installTimer.stop()
            return
        self.appendLog(run.poll())
        if not run.finished:
            step = run.step
            self.setStatus(_("{step}… ({seconds:.0f} s)").format(
                step=step.title if step else _("Installing"), seconds=time.monotonic() - self._installStarted))
            return
        continuation = self._installContinuation
        self.endInstall()
        account = "TACE Response install:\n" + "\n".join(run.log)  # not translated: Slicer's log
        (logging.info if run.state == "done" else logging.error)(account)
        if run.state == "cancelled":
            self.setStatus(_("Install cancelled; nothing else was started."))
        elif run.state == "failed":
            self.showError(run.error)
            slicer.util.errorDisplay(_(
                "{error}\n\nThe whole output is in the module's log box. This needs an internet connection; if "
                "this computer is offline, install the package(s) on a connected computer with the same Slicer "
                "version, or connect and try again.").format(error=run.error), windowTitle=_("Installation failed"))
        else:
            still = self.logic.installPlan()
            if still.needed:
                self.showError(_("The install ended but these are still missing: {items}").format(
                    items="; ".join(still.items)))
            else:
                self.setStatus(_("Python packages installed."), "#2e7d32")
                if continuation is not None:
                    continuation()

    def cancelInstall(self):
        if self._install is None:
            return False
        with slicer.util.WaitCursor():
            self._install.cancel()
        self.onInstallPoll()  # reports it and restores the panel
        return True

    def endInstall(self):
        if self._installTimer is not None:
            self._installTimer.stop()
        self._install = None
        self._installContinuation = None
        self.ui.progressBar.setMaximum(100)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.updateButtons()

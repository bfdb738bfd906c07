"""Installing what the prediction process needs, off Slicer's GUI thread: the plan (what is missing, the
exact commands, the text of the one confirmation) and a run that starts those commands one after another
as background processes through the injected process runner, streaming their output to the caller.

- safetensors comes from PyPI with ``PythonSlicer -m pip install`` (what ``slicer.util.pip_install`` runs,
  but in the background);
- PyTorch comes from light-the-torch, as the PyTorch extension (PyTorchUtils) installs it: ``ltt install``
  picks the build that matches the GPU driver (CPU when there is none). An old torch is upgraded the same
  way: pip replaces a version that does not meet the requirement;
- Slicer's own numpy and SimpleITK are pinned at their installed versions by a constraints file passed to
  every command, so no install replaces them.

No Qt and no MRML: the panel (widget_install) asks once and polls :class:`InstallRun` from a timer.
Written for Python 3.9 (the Python bundled with Slicer 5.8).
"""

import importlib
import importlib.util
import os

from . import environment
from .i18n import _
from .process_runner import ProcessRunner

LTT_REQUIREMENT = "light-the-torch>=0.7"
# quiet, non-interactive pip: no prompt can block a process nobody can type into, and no progress bar
# redrawn with carriage returns in a log box that shows lines
PIP_OPTIONS = ("--disable-pip-version-check", "--no-input", "--progress-bar", "off")
CONSTRAINTS_NAME = "slicer-constraints.txt"


class InstallStep:
    """One background command of an install, with what the log box says it does."""

    def __init__(self, title, command):
        self.title = title
        self.command = [str(part) for part in command]

    def __repr__(self):
        return "InstallStep({!r})".format(self.title)


class InstallPlan:
    """What is missing and the commands that install it; empty ``steps`` when nothing is."""

    def __init__(self, torch, requirements, items, steps, owned_missing, constraints_path, constraints):
        self.torch = torch                  # None, "install" or "upgrade"
        self.requirements = requirements    # everything that will be installed, as pip requirements
        self.items = items                  # one line per requirement, for the confirmation
        self.steps = steps
        self.owned_missing = owned_missing  # Slicer's own packages that are missing: reinstall Slicer
        self.constraints_path = constraints_path
        self.constraints = constraints      # the constraints file's text (the pins)

    @property
    def needed(self):
        return bool(self.steps)

    def confirmation_text(self):
        return _("TACE Response needs to install:\n\n{items}\n\nSlicer's own numpy and SimpleITK stay as they "
                 "are. This needs an internet connection and can take several minutes; it runs in the background "
                 "with its output in the log box, and Cancel stops it. Install now?").format(
            items="\n".join("• " + line for line in self.items))

    def commands_text(self):
        """The exact commands, for the confirmation's details and the log."""
        return "\n".join("$ " + " ".join(step.command) for step in self.steps)

    def owned_missing_text(self):
        return _("Slicer's own Python package(s) {names} are missing; reinstall 3D Slicer.").format(
            names=", ".join(self.owned_missing))


def make_plan(python_executable, work_dir, torch_requirement=environment.TORCH_REQUIREMENT, missing=None,
              torch_version=None, ltt_installed=None):
    """The plan for this environment (``missing``, ``torch_version`` and ``ltt_installed`` override what is
    looked up, for tests). Nothing is imported and nothing runs."""
    importlib.invalidate_caches()  # a package installed since the last look is found
    missing = environment.missing_packages() if missing is None else list(missing)
    if ltt_installed is None:
        ltt_installed = importlib.util.find_spec("light_the_torch") is not None
    problem = environment.torch_version_problem(torch_requirement, torch_version)
    owned_missing = [name for name in missing if name in environment.SLICER_OWNED_PACKAGES]
    constraints_path = os.path.join(str(work_dir), CONSTRAINTS_NAME)
    python = str(python_executable)
    torch, requirements, items, steps = None, [], [], []
    if "torch" in missing or problem is not None:
        torch = "install" if "torch" in missing else "upgrade"
        requirement = "torch" + torch_requirement
        if torch == "install":
            items.append(_("PyTorch {requirement}, the build that matches this computer's GPU driver (up to a few "
                           "GB), chosen by light-the-torch as the PyTorch extension does").format(
                requirement=torch_requirement))
        else:
            items.append(_("{problem} It is upgraded (up to a few GB); other modules that already use PyTorch may "
                           "need a Slicer restart.").format(problem=problem))
        if not ltt_installed:
            requirements.append(LTT_REQUIREMENT)
            items.append(_("{requirement} from PyPI (small; it picks the PyTorch build)").format(
                requirement=LTT_REQUIREMENT))
            steps.append(InstallStep(_("Installing {requirement}").format(requirement=LTT_REQUIREMENT),
                                     pip_install_command(python, [LTT_REQUIREMENT], constraints_path)))
        requirements.append(requirement)
        steps.append(InstallStep(_("Installing PyTorch {requirement}").format(requirement=torch_requirement),
                                 [python, "-m", "light_the_torch", "install"] + list(PIP_OPTIONS)
                                 + ["--constraint", constraints_path, requirement]))
    small = [environment.PIP_REQUIREMENTS[name] for name in missing if name in environment.PIP_REQUIREMENTS]
    if small:
        requirements += small
        items += [_("{requirement} from PyPI (small)").format(requirement=requirement) for requirement in small]
        steps.append(InstallStep(_("Installing {requirements}").format(requirements=", ".join(small)),
                                 pip_install_command(python, small, constraints_path)))
    if owned_missing:
        steps = []  # nothing is installed into a broken Slicer
    return InstallPlan(torch, requirements, items, steps, owned_missing, constraints_path,
                       environment.pip_constraints())


def pip_install_command(python_executable, requirements, constraints_path):
    return ([str(python_executable), "-m", "pip", "install"] + list(PIP_OPTIONS)
            + ["--constraint", str(constraints_path)] + list(requirements))


def install_environment(base=None):
    """The install processes' environment: Slicer's own (as ``slicer.util.pip_install`` uses), unbuffered."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class InstallRun:
    """Runs a plan's steps in order, each a background process; ``poll()`` from a timer (or a loop).

    ``state`` is "running", then "done", "failed" (``error`` says which step and why) or "cancelled".
    """

    def __init__(self, plan, runner_class=ProcessRunner, env=None):
        self.plan = plan
        self.runner_class = runner_class
        self.env = install_environment() if env is None else env
        self.state = "ready"
        self.error = None
        self.step_index = -1
        self.log = []          # every line shown so far: commands, their output, their errors
        self._runner = None

    @property
    def finished(self):
        return self.state in ("done", "failed", "cancelled")

    @property
    def step(self):
        return self.plan.steps[self.step_index] if 0 <= self.step_index < len(self.plan.steps) else None

    def start(self):
        """Write the constraints file and start the first step; returns the lines to show."""
        folder = os.path.dirname(self.plan.constraints_path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(self.plan.constraints_path, "w", encoding="utf-8") as stream:
            stream.write(self.plan.constraints)
        self.state = "running"
        return self._next()

    def _next(self):
        self.step_index += 1
        if self.step is None:
            self.state = "done"
            return []
        lines = [self.step.title + "…", "$ " + " ".join(self.step.command)]
        try:
            self._runner = self.runner_class(self.step.command, env=self.env).start()
        except OSError as exc:
            self._runner = None
            self._fail(_("could not start {program}: {error}").format(program=self.step.command[0], error=exc))
            lines.append(self.error)
        self.log += lines
        return lines

    def _fail(self, message):
        self.state = "failed"
        self.error = message

    def poll(self):
        """New output lines since the last call; advances to the next step when one ends."""
        if self.state != "running" or self._runner is None:
            return []
        lines = self._runner.read_lines()
        code = self._runner.poll()
        if code is not None:
            lines += self._runner.read_lines()
            errors = [line for line in self._runner.stderr_text.splitlines() if line.strip()]
            lines += errors
            self._runner = None
            if code != 0:
                self._fail(_("{step} failed (exit code {code}): {reason}").format(
                    step=self.step.title, code=code, reason=errors[-1].strip() if errors else _("no message")))
                lines.append(self.error)
            else:
                self.log += lines
                return lines + self._next()
        self.log += lines
        return lines

    def cancel(self):
        """Stop the running step with everything it started; the later steps never start."""
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None
        if not self.finished:
            self.state = "cancelled"

"""Installing dependencies off the GUI thread (dependency_install, Qt-free): the plan's exact commands and its
one confirmation, the constraints that keep Slicer's numpy and SimpleITK, and the run through the real
process runner: output streamed step by step, a failing step stopping the rest, Cancel ending the process.
Nothing is installed: the real pip runs the planned command in dry-run mode with no index."""

import os
import sys
import time

import pytest

from TACEResponseLib import dependency_install as di
from TACEResponseLib import environment

PYTHON = sys.executable


def _plan(tmp_path, **lookups):
    return di.make_plan("/opt/Slicer/bin/PythonSlicer", tmp_path / "install", ">=2.1", **lookups)


def test_nothing_to_install_in_a_complete_environment(tmp_path):
    plan = di.make_plan(PYTHON, tmp_path, ">=2.1")  # this environment has torch, safetensors, numpy, SimpleITK
    assert not plan.needed and plan.steps == [] and plan.items == [] and plan.torch is None


def test_plan_for_a_fresh_slicer_lists_every_command_once(tmp_path):
    plan = _plan(tmp_path, missing=["torch", "safetensors"], torch_version=None, ltt_installed=False)
    constraints = str(tmp_path / "install" / di.CONSTRAINTS_NAME)
    pip = ["/opt/Slicer/bin/PythonSlicer", "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--progress-bar", "off", "--constraint", constraints]
    assert [step.command for step in plan.steps] == [
        pip + ["light-the-torch>=0.7"],
        ["/opt/Slicer/bin/PythonSlicer", "-m", "light_the_torch", "install", "--disable-pip-version-check",
         "--no-input", "--progress-bar", "off", "--constraint", constraints, "torch>=2.1"],
        pip + ["safetensors>=0.4"],
    ]
    assert plan.torch == "install" and plan.requirements == ["light-the-torch>=0.7", "torch>=2.1", "safetensors>=0.4"]
    text = plan.confirmation_text()
    # one confirmation naming everything, each once, and saying how to stop it
    assert len(plan.items) == 3 and all(text.count("• " + item) == 1 for item in plan.items)
    assert "PyTorch >=2.1" in text and "safetensors>=0.4" in text and "light-the-torch>=0.7" in text
    assert "Cancel" in text and "numpy and SimpleITK" in text
    assert plan.commands_text().splitlines() == ["$ " + " ".join(step.command) for step in plan.steps]


def test_plan_upgrades_an_old_torch_and_reuses_light_the_torch(tmp_path):
    plan = _plan(tmp_path, missing=[], torch_version="1.13.1", ltt_installed=True)
    assert plan.torch == "upgrade" and len(plan.steps) == 1
    assert plan.steps[0].command[1:4] == ["-m", "light_the_torch", "install"]
    assert plan.steps[0].command[-1] == "torch>=2.1"  # pip replaces a version that does not meet it
    assert "PyTorch 1.13.1 is installed" in plan.items[0] and "restart" in plan.items[0]
    assert not _plan(tmp_path, missing=[], torch_version="2.4.0", ltt_installed=False).needed


def test_a_missing_slicer_package_is_never_installed(tmp_path):
    plan = _plan(tmp_path, missing=["numpy", "safetensors"], ltt_installed=True)
    assert plan.owned_missing == ["numpy"] and plan.steps == [] and not plan.needed
    assert "numpy" in plan.owned_missing_text() and "reinstall 3D Slicer" in plan.owned_missing_text()


def test_constraints_pin_slicers_own_packages_at_their_installed_versions(tmp_path):
    from importlib import metadata

    plan = _plan(tmp_path, missing=["safetensors"], ltt_installed=True)
    pins = sorted(line for line in plan.constraints.splitlines() if line)
    assert pins == sorted(["numpy=={}".format(metadata.version("numpy")),
                           "SimpleITK=={}".format(metadata.version("SimpleITK"))])


def _drive(run, timeout=120, until=None):
    lines = run.start()
    deadline = time.monotonic() + timeout
    while not run.finished and time.monotonic() < deadline:
        lines += run.poll()
        if until is not None and until(lines):
            return lines
        time.sleep(0.05)
    assert run.finished, "the install did not finish within {} s".format(timeout)
    return lines


def test_real_pip_runs_the_planned_command_in_the_background(tmp_path):
    """The exact planned pip command (every option, the constraints file) through the process runner; pip's
    dry-run and no-index settings come from its environment variables, so nothing is downloaded or changed."""
    plan = di.make_plan(PYTHON, tmp_path, ">=2.1", missing=["safetensors"], ltt_installed=True)
    env = dict(di.install_environment(), PIP_DRY_RUN="1", PIP_NO_INDEX="1")
    run = di.InstallRun(plan, env=env)
    lines = _drive(run, timeout=300)
    assert run.state == "done", run.log
    assert os.path.isfile(plan.constraints_path)
    with open(plan.constraints_path, encoding="utf-8") as stream:
        assert stream.read() == plan.constraints
    assert lines[1] == "$ " + " ".join(plan.steps[0].command)
    assert any("Requirement already satisfied: safetensors" in line for line in lines), lines


def _steps(tmp_path, *codes):
    return [di.InstallStep("step {}".format(index), [PYTHON, "-c", code]) for index, code in enumerate(codes)]


def _manual_plan(tmp_path, steps):
    return di.InstallPlan("install", [], [], steps, [], str(tmp_path / "c.txt"), "numpy==1\n")


def test_steps_run_in_order_and_a_failure_stops_the_rest(tmp_path):
    marker = tmp_path / "third-ran"
    steps = _steps(tmp_path,
                   "print('one'); print('two')",
                   "import sys; print('working'); sys.stderr.write('error: no network\\n'); sys.exit(3)",
                   "open({!r}, 'w').close()".format(str(marker)))
    run = di.InstallRun(_manual_plan(tmp_path, steps))
    lines = _drive(run)
    assert run.state == "failed"
    assert "step 1" in run.error and "exit code 3" in run.error and "error: no network" in run.error
    assert lines.index("one") < lines.index("two") < lines.index("working") < lines.index(run.error)
    assert not marker.exists(), "a step after the failing one ran"
    assert run.log == lines


def test_cancel_ends_the_running_step_and_starts_no_other(tmp_path):
    marker = tmp_path / "second-ran"
    steps = _steps(tmp_path,
                   "import os, time; print(os.getpid(), flush=True); time.sleep(120)",
                   "open({!r}, 'w').close()".format(str(marker)))
    run = di.InstallRun(_manual_plan(tmp_path, steps))
    lines = _drive(run, until=lambda seen: any(line.isdigit() for line in seen))
    pid = int(next(line for line in lines if line.isdigit()))
    run.cancel()
    assert run.state == "cancelled" and run.finished
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    run.poll()
    time.sleep(0.2)
    assert not marker.exists()


def test_a_program_that_cannot_start_is_a_failure_not_a_traceback(tmp_path):
    steps = [di.InstallStep("Installing x", [str(tmp_path / "no-such-python"), "-m", "pip"])]
    run = di.InstallRun(_manual_plan(tmp_path, steps))
    run.start()
    assert run.state == "failed" and "could not start" in run.error and "no-such-python" in run.error


def test_environment_no_longer_plans_installs_itself():
    assert not hasattr(environment, "install_plan")  # one plan, in dependency_install

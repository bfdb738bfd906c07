"""What the prediction process needs from the Python environment, found without importing PyTorch here.

Slicer's own process never imports torch (opening the module must stay fast, and an upgraded torch can then
be used without a restart): the devices are probed by a short child process
(``PythonSlicer -m TACEResponseLib.environment``, which prints one JSON line), and the installed torch
version is read from its package metadata.

Written for Python 3.9 (the Python bundled with Slicer 5.8). No Qt, no MRML.
"""

import importlib.util
import json
import re
import sys

TORCH_REQUIREMENT = ">=2.1"

# python packages the background process needs; Slicer ships numpy and SimpleITK and they must never be
# replaced by a pip install (the module refuses to install those two and pins them while installing others)
REQUIRED_PACKAGES = ("torch", "safetensors", "numpy", "SimpleITK")
SLICER_OWNED_PACKAGES = ("numpy", "SimpleITK")
PIP_REQUIREMENTS = {"safetensors": "safetensors>=0.4"}

DEVICE_VALUES = ("auto", "cpu", "cuda", "mps")


# -------------------------------------------------------------------------------------------------------
# devices


def probe_command(python_executable):
    """The child process that reports torch's version and devices as one JSON line."""
    return [str(python_executable), "-m", "TACEResponseLib.environment"]


def probe():
    """{"torch": version or None, "cuda": GPU name or None, "mps": bool} (imports torch: child process only)."""
    found = {"torch": None, "cuda": None, "mps": False}
    if importlib.util.find_spec("torch") is None:
        return found
    try:
        import torch

        found["torch"] = str(torch.__version__)
        if torch.cuda.is_available():
            found["cuda"] = torch.cuda.get_device_name(0)
        found["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except Exception as exc:  # a broken torch install is reported, not raised
        found["error"] = "{}: {}".format(type(exc).__name__, exc)
    return found


def parse_probe(stdout_text):
    """The probe's JSON line from the child's stdout, or None when it printed none."""
    for line in reversed((stdout_text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict) and "torch" in found:
                return found
    return None


def device_choices(found=None):
    """What the device selector shows, [(value, text, enabled)], and a one-line description.

    ``found`` is the probe's answer, or None while it has not answered (the choices are then offered
    unverified: the command says clearly if the GPU asked for is not there).
    """
    if found is None:
        return ([("auto", "Automatic", True), ("cpu", "CPU", True), ("cuda", "GPU (CUDA)", True)],
                "Looking for a GPU…")
    if found.get("error"):
        description = "PyTorch does not load ({}); the CPU will be tried".format(found["error"])
        gpu = ("cuda", "GPU (PyTorch does not load)", False)
    elif found.get("cuda"):
        description = "GPU: {}".format(found["cuda"])
        gpu = ("cuda", "GPU ({})".format(found["cuda"]), True)
    elif found.get("mps"):
        description = "GPU: Apple MPS"
        gpu = ("mps", "GPU (Apple MPS)", True)
    elif not found.get("torch"):
        description = "GPU: unknown until PyTorch is installed"
        gpu = ("cuda", "GPU (PyTorch not installed yet)", True)
    else:
        description = "No GPU found: the CPU will be used (seconds to a minute per CT)"
        gpu = ("cuda", "GPU (none found)", False)
    automatic = "Automatic ({})".format("GPU" if (found.get("cuda") or found.get("mps")) else "CPU")
    return [("auto", automatic, True), ("cpu", "CPU", True), gpu], description


# -------------------------------------------------------------------------------------------------------
# packages


def missing_packages(names=REQUIRED_PACKAGES):
    return [name for name in names if importlib.util.find_spec(name) is None]


def installed_version(name):
    """The installed distribution's version from its metadata (nothing is imported), or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _release(version):
    """'2.1.0+cu121' -> (2, 1, 0); pre-release and local parts are ignored."""
    numbers = re.match(r"\s*(\d+(?:\.\d+)*)", str(version))
    return tuple(int(part) for part in numbers.group(1).split(".")) if numbers else ()


def _pad(a, b):
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def satisfies(version, requirement):
    """Whether ``version`` meets a requirement such as '>=2.1' or '>=2.1,<3' (the operators pip uses most)."""
    release = _release(version)
    for clause in filter(None, (c.strip() for c in requirement.split(","))):
        match = re.match(r"(>=|<=|==|!=|>|<)\s*(\S+)", clause)
        if not match:
            raise ValueError("unsupported version requirement {!r}".format(clause))
        operator, bound = match.group(1), _release(match.group(2))
        left, right = _pad(release, bound)
        if not {">=": left >= right, "<=": left <= right, "==": left == right, "!=": left != right,
                ">": left > right, "<": left < right}[operator]:
            return False
    return True


def torch_version_problem(requirement=TORCH_REQUIREMENT, version=None):
    """A sentence when the installed torch does not meet ``requirement`` (None when it does, or is absent)."""
    version = installed_version("torch") if version is None else version
    if version is None or satisfies(version, requirement):
        return None
    return "PyTorch {} is installed; TACE Response needs PyTorch {}.".format(version, requirement)


def install_plan(torch_requirement=TORCH_REQUIREMENT):
    """What has to be installed before a prediction can run, for one confirmation listing all of it:
    {"torch": None | "install" | "upgrade", "pip": [requirements], "owned_missing": [names],
     "lines": [one line per item, for the dialog]}. Nothing is imported."""
    missing = missing_packages()
    plan = {"torch": None, "pip": [], "owned_missing": [name for name in missing if name in SLICER_OWNED_PACKAGES],
            "lines": []}
    problem = torch_version_problem(torch_requirement)
    if "torch" in missing:
        plan["torch"] = "install"
        plan["lines"].append("PyTorch {} through the PyTorch extension (a build matching your GPU driver; "
                             "up to a few GB)".format(torch_requirement))
    elif problem is not None:
        plan["torch"] = "upgrade"
        plan["lines"].append(problem + " It is upgraded through the PyTorch extension (up to a few GB; other "
                             "modules using PyTorch may need a Slicer restart).")
    for name in missing:
        if name in PIP_REQUIREMENTS:
            plan["pip"].append(PIP_REQUIREMENTS[name])
            plan["lines"].append("{} from PyPI (small)".format(PIP_REQUIREMENTS[name]))
    return plan


def pip_constraints(names=SLICER_OWNED_PACKAGES):
    """Constraints that pin the packages Slicer owns at their installed versions during a pip install."""
    lines = []
    for name in names:
        version = installed_version(name)
        if version is not None:
            lines.append("{}=={}".format(name, version))
    return "\n".join(lines) + ("\n" if lines else "")


def main():
    sys.stdout.write(json.dumps(probe()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
    from .i18n import _  # here, not at the top: the probe's child process never loads Slicer's i18n

    if found is None:
        return ([("auto", _("Automatic"), True), ("cpu", _("CPU"), True), ("cuda", _("GPU (CUDA)"), True)],
                _("Looking for a GPU…"))
    if found.get("error"):
        description = _("PyTorch does not load ({error}); the CPU will be tried").format(error=found["error"])
        gpu = ("cuda", _("GPU (PyTorch does not load)"), False)
    elif found.get("cuda"):
        description = _("GPU: {name}").format(name=found["cuda"])
        gpu = ("cuda", _("GPU ({name})").format(name=found["cuda"]), True)
    elif found.get("mps"):
        description = _("GPU: Apple MPS")
        gpu = ("mps", _("GPU (Apple MPS)"), True)
    elif not found.get("torch"):
        description = _("GPU: unknown until PyTorch is installed")
        gpu = ("cuda", _("GPU (PyTorch not installed yet)"), True)
    else:
        description = _("No GPU found: the CPU will be used (seconds to a minute per CT)")
        gpu = ("cuda", _("GPU (none found)"), False)
    automatic = _("Automatic (GPU)") if (found.get("cuda") or found.get("mps")) else _("Automatic (CPU)")
    return [("auto", automatic, True), ("cpu", _("CPU"), True), gpu], description


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
            # not translated: a programming error, never shown to users
            raise ValueError("unsupported version requirement {clause!r}".format(clause=clause))
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
    from .i18n import _  # here, not at the top: see device_choices

    return _("PyTorch {version} is installed; TACE Response needs PyTorch {requirement}.").format(
        version=version, requirement=requirement)


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

"""The background command ``PythonSlicer -m TACEResponseLib predict ... --progress jsonl``: its command line
and environment, its progress lines, its log and its one-line error, and one run's state (PredictionJob).

No MRML and no Qt. Written for Python 3.9 (the Python bundled with Slicer 5.8).
"""

import json
import os

from .cli import RESULT_NAME
from .i18n import _
from .slicer_errors import SlicerLogicError

# the folder holding TACEResponseLib (TACEResponse/ in the source tree and in the installed module):
# it goes on the PYTHONPATH of the background process
LIB_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# progress: where each stage of the command sits on the overall bar (start, end)
STAGE_SPANS = {
    "starting": (0.0, 0.02),
    "load model": (0.02, 0.08),  # not translated: the stage names the command prints
    "read": (0.08, 0.12),
    "localize": (0.12, 0.16),
    "preprocess": (0.16, 0.18),
    "network": (0.18, 0.85),
    "postprocess": (0.85, 0.93),
    "done": (0.93, 0.95),
    "result": (0.95, 0.95),
    "import": (0.95, 1.0),
}


def child_environment(lib_parent=LIB_PARENT, base=None):
    """Environment for the background process: the TACEResponseLib folder first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    parts = [lib_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != lib_parent]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def predict_command(python_executable, inputs, output_dir, model=None, device="auto", tumor_mask=None,
                    liver_mask=None):
    command = [str(python_executable), "-m", "TACEResponseLib", "predict"]
    command += [str(p) for p in inputs]
    command += ["-o", str(output_dir), "--progress", "jsonl", "--device", device or "auto"]
    if model:
        command += ["--model", str(model)]
    if tumor_mask:
        command += ["--tumor-mask", str(tumor_mask)]
    if liver_mask:
        command += ["--liver-mask", str(liver_mask)]
    return command


def parse_progress_line(line):
    """A JSON progress object from one stdout line, or None for anything else."""
    line = (line or "").strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "stage" not in message:
        return None
    return message


def overall_fraction(stage, fraction):
    start, end = STAGE_SPANS.get(stage, (None, None))
    if start is None:
        return None
    fraction = min(max(float(fraction or 0.0), 0.0), 1.0)
    return start + (end - start) * fraction


def command_log(job, exit_code, stderr_text):
    """The whole account of one run for the log box and Slicer's log: command, output, errors, exit code."""
    lines = ["$ " + " ".join(job.command)]
    lines += job.log_lines
    lines += (stderr_text or "").splitlines()
    lines.append("exit code {code}".format(code=exit_code))  # not translated: the log, as the command's
    return "\n".join(lines)


def error_message(exit_code, stderr_text):
    """The command's one-line explanation ('error: ...'), or a plain account of the failure."""
    lines = [line.strip() for line in (stderr_text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    if exit_code is not None and exit_code < 0:
        return _("the prediction process was stopped (signal {signal})").format(signal=-exit_code)
    tail = lines[-1] if lines else _("no message")
    return _("the prediction process failed with exit code {code}: {reason}").format(code=exit_code, reason=tail)


def read_result(output_dir):
    path = os.path.join(str(output_dir), RESULT_NAME)
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError) as exc:
        raise SlicerLogicError(_("could not read the prediction result {path} ({error})").format(
            path=path, error=exc)) from None


class PredictionJob:
    """What one Predict or Update needs between starting the command and applying its result."""

    def __init__(self, kind, command, env, work_dir, output_dir, volume_ids, model_key, card,
                 segmentation_id=None, table_id=None):
        self.kind = kind                  # "predict" or "update"
        self.command = command
        self.env = env
        self.work_dir = work_dir
        self.output_dir = output_dir
        self.volume_ids = volume_ids
        self.model_key = model_key
        self.card = card
        self.segmentation_id = segmentation_id
        self.table_id = table_id
        self.stage = "starting"
        self.fraction = 0.0
        self.fingerprints = None          # update: the segments' content when the mask was written
        self.measurements = None          # update: measurements of the edited segmentation
        self.log_lines = []               # the command's stdout lines that are not progress
        self.created_volume_ids = []      # hardened copies made for this job (removed if it is discarded)
        self.applied = False              # its result is in the scene

    def handle_line(self, line):
        """Feed one stdout line; returns True when the progress moved (other lines go to ``log_lines``)."""
        message = parse_progress_line(line)
        if message is None:
            self.log_lines.append(line)
            return False
        stage = str(message.get("stage"))
        overall = overall_fraction(stage, message.get("progress", 0.0))
        self.stage = stage
        if overall is not None:
            self.fraction = max(self.fraction, overall)
        return True

    @property
    def labels(self):
        return list(self.card["labels"])

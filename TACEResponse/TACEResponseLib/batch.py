"""`tace-response batch`: a cohort through the predict path, one output folder per case, and summary.csv.

Each case runs exactly what `tace-response predict` runs (cli.run_predict) with a Predictor that its worker
process built once and keeps (``worker_predictor``), so batch results equal single predictions. A case is
finished when its result.json is complete (predict writes it last and atomically); ``--resume`` skips
finished cases and reruns the others. Failures are recorded in the case's batch.json and summary.csv and
never stop the batch. summary.csv is rebuilt from the case folders and replaced atomically.
"""

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from .errors import InputError, TACEResponseError

SUMMARY_NAME = "summary.csv"
CASE_RECORD_NAME = "batch.json"  # per case: status, error, time, worker (provenance of the batch run)
RESULT_NAME = "result.json"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MEASUREMENT_KEYS = ("liver_volume_ml", "liver_parenchyma_volume_ml", "tumor_volume_ml", "tumor_count",
                    "largest_tumor_diameter_mm", "tumor_burden_percent")
SUMMARY_COLUMNS = (("case_id", "status", "error", "response_probability", "risk_category") + MEASUREMENT_KEYS
                   + ("warnings", "inputs", "series_used", "model", "time_s", "output"))


@dataclass
class Case:
    case_id: str
    inputs: List[str]
    tumor_mask: Optional[str] = None
    problem: Optional[str] = None  # known before running (e.g. an empty cell in the table)
    liver_mask: Optional[str] = None


@dataclass
class CaseSettings:
    """What every case of one batch shares; pickled to the workers."""

    out_root: str
    model_folder: str
    device: str = "cpu"
    full_volume: bool = False
    preview: bool = False
    report: bool = False
    dicom: bool = False


@dataclass
class CaseOutcome:
    case_id: str
    status: str  # "ok" or "failed"
    error: str = ""
    time_s: float = 0.0
    worker: str = ""
    predictor_loads: int = 0


# ---- reading the cohort ------------------------------------------------------------------------------------


def _check_case_id(case_id, where):
    if not case_id or case_id in (".", "..") or "/" in case_id or "\\" in case_id or case_id.startswith("."):
        raise InputError(where, "case_id {!r} cannot be a folder name".format(case_id))


def _strip_image_suffix(name):
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def read_case_table(path, phases):
    """CSV with ``case_id`` and ``image_<phase>`` per phase (the dataset.csv format; other columns ignored,
    ``tumor_mask`` and ``liver_mask`` optional). Relative paths are relative to the table's folder (made absolute, so that
    workers on other machines or in other folders find the same files)."""
    path = Path(os.path.abspath(str(path)))
    try:
        with open(str(path), newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, "cannot read the case table: {}".format(exc))
    if not rows:
        raise InputError(path, "case table has no rows")
    columns = ["image_" + phase for phase in phases]
    missing = [c for c in ["case_id"] + columns if c not in rows[0]]
    if missing:
        raise InputError(path, "missing column(s) {} (the model's phases are {})".format(
            ", ".join(missing), ", ".join(phases)))
    cases, seen = [], set()
    for number, row in enumerate(rows, start=2):
        case_id = (row["case_id"] or "").strip()
        _check_case_id(case_id, "{} line {}".format(path, number))
        if case_id in seen:
            raise InputError(path, "case_id {!r} appears twice (line {})".format(case_id, number))
        seen.add(case_id)
        inputs, problem = [], None
        for column in columns:
            value = (row[column] or "").strip()
            if not value:
                problem = "no image given in column {}".format(column)
            inputs.append(str(path.parent / value) if value else "")
        masks = [(row.get(column) or "").strip() for column in ("tumor_mask", "liver_mask")]
        tumor_mask, liver_mask = (str(path.parent / m) if m else None for m in masks)
        cases.append(Case(case_id, inputs, tumor_mask, problem, liver_mask))
    return cases


def read_case_folder(folder, phases, exclude=()):
    """One case per image file or sub-folder (a DICOM series or study; with several phases, a sub-folder
    holding one ``<phase>.<ext>`` file each). Hidden entries and ``exclude`` (the output folder) are skipped."""
    folder = Path(os.path.abspath(str(folder)))
    excluded = {os.path.realpath(str(p)) for p in exclude}
    cases = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or os.path.realpath(str(entry)) in excluded:
            continue
        if entry.is_dir():
            by_phase = {}
            for child in entry.iterdir():
                stem = _strip_image_suffix(child.name)
                if stem in phases and child.is_file():
                    by_phase[stem] = str(child)
            inputs = [by_phase[p] for p in phases] if len(by_phase) == len(phases) and len(phases) > 1 \
                else [str(entry)]
            cases.append(Case(entry.name, inputs))
        else:
            case_id = _strip_image_suffix(entry.name)
            if case_id is None:
                continue  # .raw data files beside .mhd headers, notes, tables
            cases.append(Case(case_id, [str(entry)]))
    if not cases:
        raise InputError(folder, "no cases found (expected image files or one sub-folder per case)")
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(folder, "several entries give case id(s) {}".format(", ".join(duplicates)))
    for case in cases:
        _check_case_id(case.case_id, folder)
    return cases


def read_cases(input_path, phases, out_dir):
    if not os.path.exists(input_path):
        raise InputError(input_path, "does not exist")
    if os.path.isdir(input_path):
        return read_case_folder(input_path, phases, exclude=[out_dir])
    if input_path.lower().endswith((".csv", ".tsv")):
        return read_case_table(input_path, phases)
    raise InputError(input_path, "batch input must be a .csv case table or a folder of cases")


# ---- one case, in a worker -----------------------------------------------------------------------------------

_PREDICTORS = {}
_PREDICTOR_LOADS = [0]
_PREDICTOR_LOCK = threading.Lock()


def worker_predictor(settings):
    """The Predictor of this worker process, built on first use and kept for every later case."""
    key = (settings.model_folder, settings.device, settings.full_volume)
    with _PREDICTOR_LOCK:
        if key not in _PREDICTORS:
            from .model_package import load_package
            from .predictor import Predictor

            _PREDICTORS[key] = Predictor(load_package(settings.model_folder), device=settings.device,
                                         coarse_to_fine=not settings.full_volume)
            _PREDICTOR_LOADS[0] += 1
        return _PREDICTORS[key]


def _one_line(exc):
    if isinstance(exc, TACEResponseError):
        return str(exc).replace("\n", " ")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return "unexpected {}: {}".format(type(exc).__name__, text)


def _write_json_atomically(path, document):
    folder = os.path.dirname(path)
    descriptor, temporary = tempfile.mkstemp(prefix=".batch-", suffix=".json", dir=folder)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)


def remove_leftovers(case_dir):
    """Staging folders and temporary files of a run killed mid-write (this batch owns the case folder)."""
    if not os.path.isdir(case_dir):
        return
    for name in os.listdir(case_dir):
        if name.startswith(".tace-response-") or name.startswith(".batch-"):
            path = os.path.join(case_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)


def _predict_argv(case, settings, out_dir):
    argv = ["predict", "-o", out_dir, "--model", settings.model_folder, "--device", settings.device,
            "--progress", "none", "--overwrite"]
    argv += ["--full-volume"] if settings.full_volume else []
    argv += ["--preview"] if settings.preview else []
    argv += ["--report"] if settings.report else []
    argv += ["--dicom"] if settings.dicom else []
    argv += ["--tumor-mask", case.tumor_mask] if case.tumor_mask else []
    argv += ["--liver-mask", case.liver_mask] if case.liver_mask else []
    return argv + ["--"] + list(case.inputs)


def run_case(case, settings):
    """Predict one case into OUT_ROOT/<case_id>/ exactly as `tace-response predict` would; never raises for a
    bad case (its error is the outcome). The case's batch.json records what happened."""
    from . import cli

    started = time.perf_counter()
    out_dir = os.path.join(settings.out_root, case.case_id)
    os.makedirs(out_dir, exist_ok=True)
    remove_leftovers(out_dir)
    status, error = "ok", ""
    try:
        if case.problem:
            raise InputError(None, case.problem)
        predictor = worker_predictor(settings)
        args = cli.build_parser().parse_args(_predict_argv(case, settings, out_dir))
        with contextlib.redirect_stdout(io.StringIO()):  # predict's summary lines; summary.csv has them
            cli.run_predict(args, predictor=predictor)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        status, error = "failed", _one_line(exc)
    outcome = CaseOutcome(case.case_id, status, error, round(time.perf_counter() - started, 3),
                          "{}:{}".format(socket.gethostname(), os.getpid()), _PREDICTOR_LOADS[0])
    if os.path.isdir(out_dir):
        _write_json_atomically(os.path.join(out_dir, CASE_RECORD_NAME), {
            "case_id": case.case_id, "status": status, "error": error, "time_s": outcome.time_s,
            "inputs": list(case.inputs), "worker": outcome.worker, "predictor_loads": outcome.predictor_loads})
    return outcome


class _CaseRunner:
    """``run_case`` with the batch's settings bound, picklable for process pools and Dask."""

    def __init__(self, settings):
        self.settings = settings

    def __call__(self, case):
        return run_case(case, self.settings)


# ---- state on disk -> summary ------------------------------------------------------------------------------


def finished_result(case_dir):
    """The case's result.json when it is complete, else None."""
    try:
        with open(os.path.join(case_dir, RESULT_NAME), encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, ValueError):
        return None
    required = ("response_probability", "risk_category", "measurements", "model")
    if not isinstance(document, dict) or any(key not in document for key in required):
        return None
    if not os.path.isfile(os.path.join(case_dir, "segmentation.nii.gz")):
        return None
    return document


def _case_record(case_dir):
    try:
        with open(os.path.join(case_dir, CASE_RECORD_NAME), encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return {}


def _series_text(series):
    if not series:
        return ""
    if isinstance(series, dict):
        series = [dict(phase=k, **v) if isinstance(v, dict) else {"phase": k, "series": v} for k, v in series.items()]
    parts = []
    for entry in series if isinstance(series, list) else [series]:
        if isinstance(entry, dict):
            keys = [k for k in ("phase", "series_number", "description", "series_instance_uid") if k in entry]
            parts.append(" ".join(str(entry[k]) for k in keys) if keys else json.dumps(entry, sort_keys=True))
        else:
            parts.append(str(entry))
    return "; ".join(parts)


def case_state(case_dir):
    """(status, result document or None, batch record): "ok" when result.json is complete and no later
    failure was recorded (a failed --overwrite keeps the old result.json, but the case failed), "failed"
    when batch.json says so, else "pending"."""
    record = _case_record(case_dir)
    document = finished_result(case_dir)
    if record.get("status") == "failed" and document is not None:
        record_time = os.path.getmtime(os.path.join(case_dir, CASE_RECORD_NAME))
        if record_time >= os.path.getmtime(os.path.join(case_dir, RESULT_NAME)):
            document = None
    if document is not None:
        return "ok", document, record
    return ("failed" if record.get("status") == "failed" else "pending"), None, record


def summary_row(case, out_root):
    case_dir = os.path.join(out_root, case.case_id)
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row["case_id"] = case.case_id
    row["output"] = case.case_id
    status, document, record = case_state(case_dir)
    if status == "ok":
        m = document["measurements"]
        row.update(status="ok", response_probability=document["response_probability"],
                   risk_category=document["risk_category"], warnings=len(document.get("warnings", [])),
                   inputs=";".join(document.get("inputs", [])), series_used=_series_text(document.get("series")),
                   model="{} {}".format(document["model"]["name"], document["model"]["version"]),
                   time_s=record.get("time_s", document.get("timings_s", {}).get("total", "")))
        row.update({key: m.get(key, "") for key in MEASUREMENT_KEYS})
    elif status == "failed":
        row.update(status="failed", error=record.get("error", ""), time_s=record.get("time_s", ""),
                   inputs=";".join(record.get("inputs", case.inputs)))
    else:
        row.update(status="pending", inputs=";".join(case.inputs))
    return row


def write_summary(rows, out_root):
    """summary.csv replaced atomically: readers see the old table or the new one, never half of one."""
    descriptor, temporary = tempfile.mkstemp(prefix=".summary-", suffix=".csv", dir=out_root)
    with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(SUMMARY_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, os.path.join(out_root, SUMMARY_NAME))


# ---- the command ---------------------------------------------------------------------------------------------


class _NoBar:
    def set_postfix(self, **kwargs):
        pass

    def update(self, count):
        pass

    def close(self):
        pass


def _progress_bar(total, mode):
    try:
        from tqdm import tqdm
    except ImportError:
        if mode == "bar":
            raise InputError(None, "--progress bar needs tqdm: pip install \"tace-response[batch]\"")
        return _NoBar()

    disable = {"bar": False, "none": True}.get(mode)  # None: only on a terminal
    return tqdm(total=total, unit="case", file=sys.stderr, disable=disable, dynamic_ncols=True,
                desc="cases", smoothing=0.1)


def run_batch(args):
    from . import model_package

    out_root = os.path.abspath(args.output)
    if os.path.exists(out_root) and not os.path.isdir(out_root):
        raise InputError(out_root, "output path exists and is not a folder")
    if args.resume and args.overwrite:
        raise InputError(None, "--resume keeps finished cases, --overwrite redoes them: choose one")
    if args.executor != "dask" and args.scheduler:
        raise InputError(None, "--scheduler needs --executor dask")
    if args.workers < 1:
        raise InputError(None, "--workers must be at least 1")
    package = model_package.resolve(args.model)  # a bad model stops here, before any case
    cases = read_cases(args.input, package.card["inputs"]["phases"], out_root)

    states = {c.case_id: case_state(os.path.join(out_root, c.case_id))[0] for c in cases}
    done_before = [c for c in cases if states[c.case_id] != "pending"]
    if done_before and not (args.resume or args.overwrite):
        raise InputError(out_root, "already holds results of {} case(s); use --resume to continue or --overwrite "
                                   "to redo them".format(len(done_before)))
    finished = {c.case_id for c in cases if states[c.case_id] == "ok"} if args.resume else set()
    to_run = [c for c in cases if c.case_id not in finished]
    settings = CaseSettings(out_root, str(package.folder), args.device, args.full_volume, args.preview, args.report,
                            getattr(args, "dicom", False))
    if (args.preview or args.report):
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise InputError(None, "--preview and --report need matplotlib: pip install \"tace-response[preview]\"")
    from .executors import make_executor

    # the executor first: an unreachable scheduler is refused before anything is written
    executor = make_executor(args.executor, args.workers, args.scheduler) if to_run else None
    try:
        os.makedirs(out_root, exist_ok=True)
        for case in cases:
            remove_leftovers(os.path.join(out_root, case.case_id))
        for name in os.listdir(out_root):
            if name.startswith(".summary-"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(out_root, name))
        rows = {c.case_id: summary_row(c, out_root) for c in cases}
        write_summary([rows[c.case_id] for c in cases], out_root)
    except BaseException:
        if executor is not None:
            executor.close()
        raise
    sys.stderr.write("{} case(s): {} to run, {} finished before; model {} {}; {}\n".format(
        len(cases), len(to_run), len(finished), package.name, package.version,
        executor.name + " x{}".format(args.workers) if executor else "nothing to do"))
    counts = {"ok": 0, "failed": 0}
    last_written = time.monotonic()
    bar = _progress_bar(len(to_run), args.progress)
    try:
        for case, outcome, error in (executor.results(_CaseRunner(settings), to_run) if executor else ()):
            if error is not None:  # the task could not run at all (worker died): record it like a failure
                outcome = CaseOutcome(case.case_id, "failed", "worker lost: " + _one_line(error))
                case_dir = os.path.join(out_root, case.case_id)
                os.makedirs(case_dir, exist_ok=True)
                _write_json_atomically(os.path.join(case_dir, CASE_RECORD_NAME), {
                    "case_id": case.case_id, "status": "failed", "error": outcome.error, "time_s": 0.0,
                    "inputs": list(case.inputs)})
            rows[case.case_id] = summary_row(case, out_root)
            counts["ok" if rows[case.case_id]["status"] == "ok" else "failed"] += 1
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"], refresh=False)
            bar.update(1)
            if time.monotonic() - last_written > 5.0:
                write_summary([rows[c.case_id] for c in cases], out_root)
                last_written = time.monotonic()
    except KeyboardInterrupt:
        sys.stderr.write("batch interrupted: summary.csv lists the finished cases; continue with --resume\n")
        raise
    finally:
        bar.close()
        if executor is not None:
            executor.close()
        # the final table comes from the case folders alone
        rows = {c.case_id: summary_row(c, out_root) for c in cases}
        write_summary([rows[c.case_id] for c in cases], out_root)
    statuses = [rows[c.case_id]["status"] for c in cases]
    failed = [c.case_id for c in cases if rows[c.case_id]["status"] == "failed"]
    print("{} ok, {} failed of {} case(s); summary in {}".format(
        statuses.count("ok"), len(failed), len(cases), os.path.join(out_root, SUMMARY_NAME)))
    for case_id in failed:
        print("failed: {}: {}".format(case_id, rows[case_id]["error"]))
    return 0 if not failed else 4

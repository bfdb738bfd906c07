"""`tace-response predict`: argument parsing, exit codes, progress lines; nothing else.

Exit codes: 0 ok; 2 bad input or usage; 3 model problem; 1 unexpected; 4 (batch) finished but some cases
failed. Errors are one line on stderr and leave no output files behind.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from . import __version__
from .errors import InputError, TACEResponseError

RESULT_NAME = "result.json"
SEGMENTATION_NAME = "segmentation.nii.gz"
PREVIEW_NAME = "preview.png"
REPORT_NAME = "report.pdf"


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, like every other bad input."""

    def error(self, message):
        raise InputError(None, "{}: {} (see '{} --help')".format(self.prog, message, self.prog))


def build_parser():
    parser = _OneLineParser(prog="tace-response", description="Liver/HCC segmentation and TACE response prediction.")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    predict = sub.add_parser("predict", help="segment liver and tumor and predict TACE response")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="CT volume file (NRRD, NIfTI, MHA) or DICOM series folder; one per phase the model declares")
    predict.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for segmentation.nii.gz and result.json")
    predict.add_argument("--model", default=None, metavar="NAME|PATH", help="registry name or package folder/.zip (default: demo)")
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    predict.add_argument("--tumor-mask", default=None, metavar="MASK", help="tumor mask (nonzero = tumor) replacing the predicted tumor")
    predict.add_argument("--liver-mask", default=None, metavar="MASK",
                         help="liver mask (nonzero = liver, tumor may be included) replacing the predicted liver")
    predict.add_argument("--progress", choices=["bar", "jsonl", "none"], default=None,
                         help="progress display (default: bar on a terminal, none otherwise)")
    predict.add_argument("--full-volume", action="store_true",
                         help="skip the model's coarse liver localisation and run the main network everywhere")
    predict.add_argument("--preview", action="store_true",
                         help="also write preview.png: axial and coronal slices with liver and tumor outlines")
    predict.add_argument("--report", action="store_true",
                         help="also write report.pdf: a one-page patient report with the preview and the numbers")
    predict.add_argument("--dicom", action="store_true",
                         help="also write segmentation.dcm (DICOM SEG) and report.dcm (DICOM SR); DICOM input only")
    predict.add_argument("--series", action="append", default=[], metavar="PHASE=SeriesInstanceUID",
                         help="with a study folder as INPUT: use this series for PHASE (repeatable)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing results in OUTDIR")
    predict.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    _add_batch_parser(sub)
    from . import pacs  # light: its network libraries load only when the command runs

    pacs.add_parser(sub)
    return parser


def _add_batch_parser(sub):
    batch = sub.add_parser("batch", help="predict a cohort: one output folder per case and summary.csv")
    batch.add_argument("input", metavar="INPUT",
                       help="case table (.csv: case_id, image_<phase> per phase) or a folder with one file or "
                            "sub-folder (DICOM series/study) per case")
    batch.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for OUTDIR/<case_id>/ and summary.csv")
    batch.add_argument("--model", default=None, metavar="NAME|PATH", help="registry name or package folder/.zip (default: demo)")
    batch.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    batch.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes (local) or LocalCluster workers (dask without --scheduler); "
                            "each loads the model once")
    batch.add_argument("--executor", choices=["local", "dask"], default="local",
                       help="local process pool, or a Dask distributed cluster")
    batch.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="Dask scheduler, e.g. tcp://host:8786 (without it: a LocalCluster on this machine)")
    batch.add_argument("--resume", action="store_true", help="skip the cases whose result.json is complete")
    batch.add_argument("--overwrite", action="store_true", help="redo every case, replacing earlier results")
    batch.add_argument("--preview", action="store_true", help="preview.png per case")
    batch.add_argument("--report", action="store_true", help="report.pdf per case")
    batch.add_argument("--dicom", action="store_true", help="segmentation.dcm and report.dcm per case (DICOM input)")
    batch.add_argument("--full-volume", action="store_true", help="as for predict")
    batch.add_argument("--progress", choices=["bar", "none"], default=None,
                       help="progress bar with ETA on stderr (default: on a terminal)")
    batch.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")


class _Progress:
    def __init__(self, mode):
        self.mode = mode

    def __call__(self, stage, fraction):
        if self.mode == "jsonl":
            print(json.dumps({"stage": stage, "progress": round(float(fraction), 3)}), flush=True)
        elif self.mode == "bar":
            width = 30
            filled = int(round(width * fraction))
            sys.stderr.write("\r{:<12} [{}{}] {:3.0f}%".format(stage, "#" * filled, "." * (width - filled), 100 * fraction))
            if stage == "done":
                sys.stderr.write("\n")
            sys.stderr.flush()


def _existing_outputs(out_dir):
    return [name for name in (RESULT_NAME, SEGMENTATION_NAME) if os.path.exists(os.path.join(out_dir, name))]


def result_document(prediction, package, inputs, tumor_mask, liver_mask=None):
    spread = max(prediction.fold_probabilities) - min(prediction.fold_probabilities)
    return {
        "response_probability": round(prediction.response_probability, 4),
        "risk_category": prediction.risk_category,
        "risk_cutoff": prediction.risk_cutoff,
        "risk_meaning": "low = likely objective responder (mRECIST CR+PR); high = likely SD+PD",
        "fold_probabilities": [round(p, 4) for p in prediction.fold_probabilities],
        "fold_probability_spread": round(spread, 4),
        "model": {"name": package.name, "version": package.version, "sha256": package.sha256,
                  "intended_use": package.card["intended_use"]},
        "measurements": prediction.measurements,
        "tumor_source": prediction.tumor_source,
        "liver_source": prediction.liver_source,
        "labels": {label["name"]: int(label["value"]) for label in package.card["labels"]},
        "inputs": [os.path.abspath(p) for p in inputs],
        "tumor_mask": os.path.abspath(tumor_mask) if tumor_mask else None,
        "liver_mask": os.path.abspath(liver_mask) if liver_mask else None,
        "warnings": prediction.warnings,
        "device": prediction.device,
        "timings_s": prediction.timings_s,
        "software": {"name": "tace-response", "version": __version__},
    }


def _require_matplotlib(args):
    import importlib.util

    if (getattr(args, "preview", False) or getattr(args, "report", False)) \
            and importlib.util.find_spec("matplotlib") is None:
        raise InputError(None, "--preview and --report need matplotlib: pip install \"tace-response[preview]\"")


def _write_views(staging, args, image, prediction, document):
    """preview.png and/or report.pdf in the staging folder; the names written."""
    if not (getattr(args, "preview", False) or getattr(args, "report", False)):
        return []
    from . import preview

    labels = document["labels"]
    slices = preview.preview_slices(image, prediction.label_image, labels["Liver"], labels["Tumor"])
    names = []
    if args.preview:
        preview.write_preview(os.path.join(staging, PREVIEW_NAME), slices, document)
        names.append(PREVIEW_NAME)
    if args.report:
        from . import patient_report

        patient_report.write_report(os.path.join(staging, REPORT_NAME), slices, document)
        names.append(REPORT_NAME)
    return names


def run_predict(args, predictor=None):
    """One prediction, outputs written atomically. ``predictor``: an already loaded one (batch workers)."""
    started = time.perf_counter()
    # imported here so `--help` and usage errors answer without loading torch
    from . import image_io, model_package
    from .predictor import Predictor

    out_dir = args.output
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(out_dir, "output path exists and is not a folder")
    if os.path.isdir(out_dir) and _existing_outputs(out_dir) and not args.overwrite:
        raise InputError(out_dir, "already holds {}; use --overwrite to replace".format(
            " and ".join(_existing_outputs(out_dir))))
    _require_matplotlib(args)
    if getattr(args, "dicom", False):
        from . import dicom_outputs

        dicom_outputs.check_inputs(args.inputs)
    mode = args.progress or ("bar" if sys.stderr.isatty() else "none")
    progress = _Progress(mode)

    progress("load model", 0.0)
    package = predictor.package if predictor is not None else model_package.resolve(args.model)
    phases = package.card["inputs"]["phases"]
    study_mode = (len(args.inputs) == 1 and os.path.isdir(args.inputs[0])) or getattr(args, "series", None)
    if len(args.inputs) != len(phases) and not study_mode:
        raise InputError(None, "model {} expects {} input(s), one per phase ({}); got {}".format(
            package.name, len(phases), ", ".join(phases), len(args.inputs)))
    read_started = time.perf_counter()
    progress("read", 0.0)
    study = None
    if study_mode:  # a folder: one series per phase picked from the study it holds (dicom_study)
        from . import dicom_study

        study = dicom_study.open_study(args.inputs, phases, getattr(args, "series", None))
    if study is None and len(args.inputs) != len(phases):
        raise InputError(None, "model {} expects {} input(s), one per phase ({}); got {}".format(
            package.name, len(phases), ", ".join(phases), len(args.inputs)))
    images, warnings = (list(study.images), list(study.warnings)) if study is not None else ([], [])
    for path in (args.inputs if study is None else ()):
        image, read_warnings = image_io.read_image(path)
        images.append(image)
        warnings += read_warnings
    input_paths = list(args.inputs) if study is None else [args.inputs[0]] * len(phases)
    mask = image_io.read_mask(args.tumor_mask) if args.tumor_mask else None
    liver_mask_path = getattr(args, "liver_mask", None)
    liver_mask = image_io.read_mask(liver_mask_path) if liver_mask_path else None
    read_time = time.perf_counter() - read_started

    if predictor is None:
        predictor = Predictor(package, device=args.device, progress=progress, coarse_to_fine=not args.full_volume)
    prediction = predictor.predict(images, input_paths, tumor_mask=mask, tumor_mask_path=args.tumor_mask,
                                   liver_mask=liver_mask, liver_mask_path=liver_mask_path)
    prediction.warnings[:0] = warnings
    prediction.timings_s["read"] = round(read_time, 3)

    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tace-response-", dir=out_dir)
    try:
        image_io.write_atomically(prediction.label_image, os.path.join(staging, SEGMENTATION_NAME))
        prediction.timings_s["total"] = round(time.perf_counter() - started, 3)
        document = result_document(prediction, package, args.inputs, args.tumor_mask, liver_mask_path)
        document["series"] = study.record() if study is not None else None
        with open(os.path.join(staging, RESULT_NAME), "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=2)
            stream.write("\n")
        views = _write_views(staging, args, images[0], prediction, document)
        if getattr(args, "dicom", False):
            views += dicom_outputs.write(staging, prediction.label_image, document, package,
                                         dicom_outputs.source_paths(args.inputs, study), __version__)
        # result.json last: its presence marks a finished run (batch --resume relies on it)
        for name in [SEGMENTATION_NAME] + views + [RESULT_NAME]:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    except BaseException:
        for name in (SEGMENTATION_NAME, PREVIEW_NAME, REPORT_NAME, RESULT_NAME, "segmentation.dcm", "report.dcm"):
            if created and os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
    if mode != "jsonl":
        _print_summary(document, out_dir)
    else:
        print(json.dumps({"stage": "result", "progress": 1.0, "output": os.path.abspath(out_dir)}), flush=True)
    return 0


def _print_summary(document, out_dir):
    m = document["measurements"]
    print("Response probability {:.0%} -> {} risk (cutoff {:.2f}; model {} {})".format(
        document["response_probability"], document["risk_category"], document["risk_cutoff"],
        document["model"]["name"], document["model"]["version"]))
    print("Liver {:.0f} mL, tumor {:.1f} mL in {} lesion(s), largest {:.1f} mm, burden {:.1f}%".format(
        m["liver_volume_ml"], m["tumor_volume_ml"], m["tumor_count"], m["largest_tumor_diameter_mm"],
        m["tumor_burden_percent"]))
    for warning in document["warnings"]:
        print("warning: " + warning)
    print("Wrote {} and {} in {}".format(SEGMENTATION_NAME, RESULT_NAME, out_dir))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command == "batch":
            from . import batch

            return batch.run_batch(args)
        if args.command == "pacs":
            from . import pacs

            return pacs.run_pacs(args)
        if args.command != "predict":
            raise InputError(None, "tace-response: give a command, e.g. 'tace-response predict CT.nii.gz -o out'")
        return run_predict(args)
    except TACEResponseError as exc:
        sys.stderr.write("error: {}\n".format(str(exc).replace("\n", " ")))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # the last guard: one line, no traceback, unless asked for
        if debug:
            raise
        sys.stderr.write("error: unexpected {}: {} (rerun with --debug for details)\n".format(
            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
        return 1

"""`tace-response-train`: synth, train, export, test, cv, evaluate. Errors follow the prediction CLI's rules."""

import json
import sys

from TACEResponseLib.cli import _OneLineParser
from TACEResponseLib.errors import TACEResponseError


def build_parser():
    parser = _OneLineParser(prog="tace-response-train", description="Train and evaluate TACE Response models.")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)

    synth = sub.add_parser("synth", help="generate a synthetic HCC phantom cohort")
    synth.add_argument("-o", "--output", required=True)
    synth.add_argument("--cases", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--phases", default="portal_venous", help="comma-separated, e.g. arterial,portal_venous")
    synth.add_argument("--workers", type=int, default=1)
    synth.add_argument("--size-scale", type=float, default=1.0, help="multiplies voxel spacing (2 = 8x fewer voxels)")

    train = sub.add_parser("train", help="train the multi-task network on a dataset folder")
    train.add_argument("dataset")
    train.add_argument("-o", "--output", required=True, metavar="RUNDIR")
    train.add_argument("--config", default=None, help="JSON file overriding the default configuration")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--resume", action="store_true", help="continue from RUNDIR/checkpoint")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--cache", default=None, help="folder for preprocessed cases (default RUNDIR/cache)")
    train.add_argument("--init-weights", default=None, metavar="SAFETENSORS",
                       help="fine-tune: start from these weights (a run's final.safetensors or a model package's "
                            "weights file) instead of a fresh initialisation")

    export = sub.add_parser("export", help="package a finished run as a model package")
    export.add_argument("run", nargs="+", help="one run, or several (e.g. cross-validation folds) for an ensemble")
    export.add_argument("-o", "--output", required=True, metavar="MODELDIR")
    export.add_argument("--localizer", default=None, metavar="RUNDIR",
                        help="a run trained at coarse spacing to find the liver first (coarse-to-fine), or a "
                             "model package whose localiser to reuse")
    export.add_argument("--roi-margin-mm", type=float, default=15.0,
                        help="margin around the localised liver that the main network sees")
    export.add_argument("--tile-size", type=int, default=None,
                        help="inference tile edge in voxels (default: the training run's)")
    export.add_argument("--name", default=None)
    export.add_argument("--version", default="0.1.0")
    export.add_argument("--intended-use", default=None)
    export.add_argument("--training-data", default=None, help="JSON file describing the training data")
    export.add_argument("--test-metrics", action="append", default=None, metavar="METRICS_JSON",
                        help="metrics.json from 'test' to record as held-out metrics (repeat for more cohorts: "
                             "held_out_test, held_out_test_2, ...)")
    export.add_argument("--reproduce", default=None, help="the command line that reproduces this model")

    refit = sub.add_parser("refit", help="refit the response pathway on statistics computed by the Predictor")
    refit.add_argument("run")
    refit.add_argument("dataset", help="the dataset the run was trained on")
    refit.add_argument("-o", "--output", required=True, metavar="NEWRUNDIR")
    refit.add_argument("--localizer", default=None, metavar="RUNDIR", help="as for export")
    refit.add_argument("--tile-size", type=int, default=None)
    refit.add_argument("--intensity-bins", type=int, default=None, metavar="N",
                       help="give the response pathway lesion-to-liver intensity contrasts from N-bin histograms "
                            "(0: none); the pathway is then fitted anew")
    refit.add_argument("--head-hidden", type=int, default=None, metavar="N",
                       help="0: a logistic response pathway (penalised fit on standardised inputs); N > 0: a hidden "
                            "layer of N units; the pathway is then fitted anew")
    refit.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])

    test = sub.add_parser("test", help="predict every case of a dataset with a model package and score it")
    test.add_argument("model")
    test.add_argument("dataset")
    test.add_argument("-o", "--output", required=True)
    test.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    test.add_argument("--full-volume", action="store_true",
                      help="skip the package's coarse liver localisation and process the whole field of view")

    cv = sub.add_parser("cv", help="stratified k-fold cross-validation of the networks, clinical and combined models")
    cv.add_argument("dataset")
    cv.add_argument("-o", "--output", required=True, metavar="RUNDIR")
    cv.add_argument("--folds", type=int, required=True)
    cv.add_argument("--config", default=None, help="JSON file overriding the default training configuration")
    cv.add_argument("--epochs", type=int, default=None)
    cv.add_argument("--max-steps", type=int, default=None)
    cv.add_argument("--external", default=None, metavar="DATASET2", help="external test cohort (dataset folder)")
    cv.add_argument("--models", default="multitask", help="comma-separated: multitask,classification,segmentation")
    cv.add_argument("--clinical", default=None, metavar="VARS",
                    help="clinical variables, e.g. age,sex,log(afp),bclc (default: those of the synthetic cohort "
                         "present in the dataset; 'none' skips the clinical and combined models)")
    cv.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    evaluate = sub.add_parser("evaluate", help="report of a cross-validation: AUCs, DeLong, calibration, KM, Dice")
    evaluate.add_argument("run", metavar="RUNDIR")
    evaluate.add_argument("-o", "--output", required=True, metavar="REPORTDIR")
    evaluate.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates for the AUC CI")
    evaluate.add_argument("--overwrite", action="store_true")

    hcc = sub.add_parser("import-hcc-tace-seg", help="import the TCIA HCC-TACE-Seg collection (DICOM + DICOM-SEG + "
                                                     "clinical xlsx) as a dataset folder")
    hcc.add_argument("--tcia-dir", required=True, help="folder the NBIA Data Retriever wrote (searched recursively)")
    hcc.add_argument("--clinical", required=True, metavar="XLSX", help="HCC-TACE-Seg_clinical_data-V2.xlsx (or .csv)")
    hcc.add_argument("-o", "--output", required=True, metavar="DATASET")
    hcc.add_argument("--reader", default="majority", help="mRECIST reader for the response: 1, 2, 3 or majority")
    hcc.add_argument("--phases", default="portal_venous",
                     help="comma-separated: native (pre_contrast), arterial, portal_venous, delayed")
    hcc.add_argument("--reference-phase", default=None,
                     help="the phase of the CT the SEG was drawn on, when descriptions and enhancement cannot tell")
    hcc.add_argument("--sheet", default="data table", help="worksheet of the clinical workbook")

    folder = sub.add_parser("import-folder", help="import a folder of NIfTI/NRRD images and label maps with a CSV")
    folder.add_argument("--images", required=True, metavar="DIR")
    folder.add_argument("--labels", required=True, metavar="DIR")
    folder.add_argument("--table", required=True, metavar="CSV", help="one row per case (.csv, .tsv or .xlsx)")
    folder.add_argument("-o", "--output", required=True, metavar="DATASET")
    folder.add_argument("--id-column", default="case_id")
    folder.add_argument("--response-column", default=None, help="1/0 (or CR/PR/SD/PD); default: 'response' if present")
    folder.add_argument("--phases", default="portal_venous", help="comma-separated phase names, in channel order")
    folder.add_argument("--label-map", default=None, metavar="SRC=DST,...",
                        help="label values to 0 background / 1 liver / 2 tumor, e.g. 1=1,2=2 (unlisted -> 0)")
    folder.add_argument("--os-columns", default=None, metavar="TIME,EVENT")
    folder.add_argument("--ttp-columns", default=None, metavar="TIME,EVENT")
    return parser


def _read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def run(args):
    if args.command == "synth":
        from .phantoms import generate_cohort

        cohort = generate_cohort(args.output, args.cases, seed=args.seed, phases=tuple(args.phases.split(",")),
                                 workers=args.workers, size_scale=args.size_scale,
                                 progress=lambda done, total: print("{}/{}".format(done, total), file=sys.stderr))
        bayes = cohort["bayes_auc"]  # None when the cohort lacks responders or non-responders
        print("wrote {} cases to {} (bayes_auc {})".format(args.cases, args.output,
                                                           "n/a" if bayes is None else "{:.3f}".format(bayes)))
    elif args.command == "train":
        from .config import load_config
        from .train import train

        config = load_config(args.config, epochs=args.epochs, max_steps=args.max_steps)
        train(args.dataset, args.output, config, resume=args.resume, device=args.device, cache_dir=args.cache,
              init_weights=args.init_weights)
    elif args.command == "export":
        from .export import export_run

        extra = {"held_out_test" + ("_{}".format(k + 1) if k else ""): _read_json(path)
                 for k, path in enumerate(args.test_metrics or [])} or None
        training_data = _read_json(args.training_data) if args.training_data else None
        package = export_run(args.run, args.output, name=args.name, version=args.version,
                             intended_use=args.intended_use, training_data=training_data,
                             reproduce=args.reproduce, extra_metrics=extra, localizer_dir=args.localizer,
                             roi_margin_mm=args.roi_margin_mm, tile_size=args.tile_size)
        print("wrote model package {} ({} {}, sha256 {})".format(args.output, package.name, package.version,
                                                                  package.sha256))
    elif args.command == "refit":
        from .refit import refit_run

        refit_run(args.run, args.dataset, args.output, localizer_dir=args.localizer, tile_size=args.tile_size,
                  device=args.device, intensity_bins=args.intensity_bins,
                  head_hidden=args.head_hidden)
    elif args.command == "test":
        from .evaluate_cases import test_model

        summary = test_model(args.model, args.dataset, args.output, device=args.device,
                             coarse_to_fine=not args.full_volume)
        print(json.dumps(summary, indent=2))
    elif args.command == "cv":
        from .clinical_model import parse_variables
        from .config import load_config
        from .cv import cross_validate

        config = load_config(args.config, epochs=args.epochs, max_steps=args.max_steps)
        clinical = None if args.clinical is None else parse_variables(args.clinical)
        cross_validate(args.dataset, args.output, config, args.folds, models=parse_variables(args.models),
                       external=args.external, clinical_variables=clinical, device=args.device)
    elif args.command == "evaluate":
        from .report import evaluate

        report = evaluate(args.run, args.output, n_boot=args.bootstrap, overwrite=args.overwrite)
        print(json.dumps({"auc": report["auc"], "logrank_p": report["logrank_p"]}, indent=2))
    elif args.command == "import-hcc-tace-seg":
        from .import_hcc_tace_seg import import_collection
        from .import_output import summary_text

        report = import_collection(args.tcia_dir, args.clinical, args.output, reader=args.reader, phases=args.phases,
                                   reference_phase=args.reference_phase, sheet=args.sheet)
        print(summary_text(report))
    elif args.command == "import-folder":
        from .import_folder import import_folder
        from .import_output import summary_text

        report = import_folder(args.images, args.labels, args.table, args.output, id_column=args.id_column,
                               response_column=args.response_column, phases=args.phases, label_map=args.label_map,
                               os_columns=args.os_columns, ttp_columns=args.ttp_columns)
        print(summary_text(report))
    else:
        raise TACEResponseError("give a command: synth, import-hcc-tace-seg, import-folder, train, refit, export, test, "
                                "cv or evaluate (see --help)")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(build_parser().parse_args(argv))
    except TACEResponseError as exc:
        sys.stderr.write("error: {}\n".format(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130

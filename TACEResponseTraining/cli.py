"""`tace-response-train`: synth, train, export, test. Errors follow the prediction CLI's rules."""

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

    export = sub.add_parser("export", help="package a finished run as a model package")
    export.add_argument("run")
    export.add_argument("-o", "--output", required=True, metavar="MODELDIR")
    export.add_argument("--name", default=None)
    export.add_argument("--version", default="0.1.0")
    export.add_argument("--intended-use", default=None)
    export.add_argument("--training-data", default=None, help="JSON file describing the training data")
    export.add_argument("--test-metrics", default=None, help="metrics.json from 'test' to record as held-out metrics")
    export.add_argument("--reproduce", default=None, help="the command line that reproduces this model")

    test = sub.add_parser("test", help="predict every case of a dataset with a model package and score it")
    test.add_argument("model")
    test.add_argument("dataset")
    test.add_argument("-o", "--output", required=True)
    test.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    return parser


def _read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def run(args):
    if args.command == "synth":
        from .synth import generate_cohort

        cohort = generate_cohort(args.output, args.cases, seed=args.seed, phases=tuple(args.phases.split(",")),
                                 workers=args.workers, size_scale=args.size_scale,
                                 progress=lambda done, total: print("{}/{}".format(done, total), file=sys.stderr))
        print("wrote {} cases to {} (bayes_auc {:.3f})".format(args.cases, args.output, cohort["bayes_auc"]))
    elif args.command == "train":
        from .config import load_config
        from .train import train

        config = load_config(args.config, epochs=args.epochs, max_steps=args.max_steps)
        train(args.dataset, args.output, config, resume=args.resume, device=args.device, cache_dir=args.cache)
    elif args.command == "export":
        from .export import export_run

        extra = {"held_out_test": _read_json(args.test_metrics)} if args.test_metrics else None
        training_data = _read_json(args.training_data) if args.training_data else None
        package = export_run(args.run, args.output, name=args.name, version=args.version,
                             intended_use=args.intended_use, training_data=training_data,
                             reproduce=args.reproduce, extra_metrics=extra)
        print("wrote model package {} ({} {}, sha256 {})".format(args.output, package.name, package.version,
                                                                  package.sha256))
    elif args.command == "test":
        from .evaluate_cases import test_model

        summary = test_model(args.model, args.dataset, args.output, device=args.device)
        print(json.dumps(summary, indent=2))
    else:
        raise TACEResponseError("give a command: synth, train, export or test (see --help)")
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

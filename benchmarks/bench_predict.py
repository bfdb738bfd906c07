"""Prediction speed and memory against the SegResNet sliding-window baseline, whole processes, CPU.

    python benchmarks/bench_predict.py [--model demo] [--repeats 1] [--inputs hcc048 phantom300] [--no-baseline]

For each input, `tace-response predict` and the baseline (benchmarks/baseline_segresnet.py: 1.5 mm,
Auto3DSeg SegResNet, 224x224x144 windows, overlap 0.625) run as separate processes, alternating, so both
see the same machine load. Each run's wall time, CPU time and peak RSS are printed, then a table with
the ratio ours / baseline (median over repeats). Inputs: the real HCC_048 DICOM series (512x512x89) and
a synthetic phantom resampled to 512x512x300 at 0.7x0.7x1 mm (benchmarks/phantom.py).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_stats import measure  # noqa: E402

HERE = Path(__file__).resolve().parent
HCC_048 = HERE.parent.parent / "shared" / "data" / "hcc-tace-seg-HCC_048-portal-venous"


def ours(path, out, model, device, extra=()):
    stats = measure([sys.executable, "-m", "TACEResponseLib", "predict", str(path), "-o", str(out), "--model", model,
                     "--device", device, "--progress", "none", "--overwrite"] + list(extra))
    if stats["returncode"] == 0:
        with open(Path(out) / "result.json", encoding="utf-8") as stream:
            stats["stages"] = json.load(stream)["timings_s"]
    return stats


def baseline(path, out, roi):
    return measure([sys.executable, str(HERE / "baseline_segresnet.py"), str(path), "-o", str(out),
                    "--roi"] + [str(r) for r in roi])


def make_inputs(names, tmp):
    inputs = {}
    for name in names:
        if name == "hcc048":
            if not HCC_048.is_dir():
                sys.exit("benchmark input missing: {}".format(HCC_048))
            inputs["HCC_048 DICOM 512x512x89"] = str(HCC_048)
        elif name == "phantom300":
            from phantom import make_phantom

            path = Path(tmp) / "phantom300.nii.gz"
            make_phantom(path, (512, 512, 300), (0.7, 0.7, 1.0), seed=0)
            inputs["phantom 512x512x300"] = str(path)
        else:
            sys.exit("unknown input {}: use hcc048 or phantom300".format(name))
    return inputs


def _line(label, stats):
    if stats["returncode"] != 0:
        return "{:<34} FAILED ({})".format(label, stats["stderr_tail"])
    return "{:<34} wall {:7.2f} s  cpu {:7.2f} s  peak RSS {:6.0f} MB  {}".format(
        label, stats["wall_s"], stats["cpu_s"], stats["peak_rss_mb"], stats.get("stages", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--inputs", nargs="+", default=["hcc048", "phantom300"])
    parser.add_argument("--roi", type=int, nargs=3, default=[224, 224, 144], help="baseline window (x y z)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--full-volume", action="store_true", help="run ours without coarse-to-fine")
    parser.add_argument("--json", default=None, help="also write all runs here")
    args = parser.parse_args()
    extra = ["--full-volume"] if args.full_volume else []
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_inputs(args.inputs, tmp).items():
            runs = {"ours": [], "baseline": []}
            for repeat in range(args.repeats):
                stats = ours(path, Path(tmp) / "ours", args.model, args.device, extra)
                print(_line("{} ours #{}".format(name, repeat + 1), stats), flush=True)
                runs["ours"].append(stats)
                if not args.no_baseline:
                    stats = baseline(path, Path(tmp) / "baseline", args.roi)
                    print(_line("{} baseline #{}".format(name, repeat + 1), stats), flush=True)
                    runs["baseline"].append(stats)
            results.append((name, runs))
    print("\nmachine: {} ({} cores), python {}, device {}; baseline window {}".format(
        platform.processor() or platform.machine(), os.cpu_count(), platform.python_version(), args.device,
        "x".join(map(str, args.roi))))
    print("{:<26} {:>14} {:>14} {:>14} {:>14} {:>9}".format(
        "input", "ours wall s", "ours RSS MB", "base wall s", "base RSS MB", "ratio"))
    summary = []
    for name, runs in results:
        ok = {k: [r for r in v if r["returncode"] == 0] for k, v in runs.items()}
        ours_wall = statistics.median(r["wall_s"] for r in ok["ours"]) if ok["ours"] else float("nan")
        ours_rss = max((r["peak_rss_mb"] for r in ok["ours"]), default=float("nan"))
        base_wall = statistics.median(r["wall_s"] for r in ok["baseline"]) if ok["baseline"] else float("nan")
        base_rss = max((r["peak_rss_mb"] for r in ok["baseline"]), default=float("nan"))
        ratio = ours_wall / base_wall if ok["baseline"] else float("nan")
        print("{:<26} {:>14.2f} {:>14.0f} {:>14.2f} {:>14.0f} {:>9.3f}".format(
            name, ours_wall, ours_rss, base_wall, base_rss, ratio))
        summary.append({"input": name, "ours_wall_s": ours_wall, "ours_peak_rss_mb": ours_rss,
                        "baseline_wall_s": base_wall, "baseline_peak_rss_mb": base_rss, "ratio": ratio, "runs": runs})
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

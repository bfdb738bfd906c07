"""Prediction speed and memory on real-size CTs, whole process (torch import and model load included).

    python benchmarks/bench_predict.py [--model demo] [--repeats 2]

Inputs: the real HCC_048 DICOM series (512x512x89) and the same CT resliced to 512x512x130 (1.71 mm),
written to a temporary NIfTI. Prints one line per run and a summary table.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_stats import measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HCC_048 = REPO.parent / "shared" / "data" / "hcc-tace-seg-HCC_048-portal-venous"


def resliced(source, slices, out_path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(source)))
    image = reader.Execute()
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    spacing[2] = spacing[2] * (size[2] - 1) / (slices - 1)
    size[2] = slices
    reference = sitk.Image(size, image.GetPixelID())
    reference.SetSpacing(spacing)
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    sitk.WriteImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024), str(out_path), True)
    return out_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not HCC_048.is_dir():
        sys.exit("benchmark input missing: {}".format(HCC_048))
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {"HCC_048 DICOM 512x512x89": str(HCC_048),
                  "HCC_048 resliced 512x512x130": str(resliced(HCC_048, 130, Path(tmp) / "ct130.nii.gz"))}
        rows = []
        for name, path in inputs.items():
            runs = []
            for repeat in range(args.repeats):
                out = Path(tmp) / "out-{}-{}".format(len(rows), repeat)
                stats = measure([sys.executable, "-m", "TACEResponseLib", "predict", path, "-o", str(out),
                                 "--model", args.model, "--device", args.device, "--progress", "none"])
                if stats["returncode"] != 0:
                    sys.exit("prediction failed on {}: {}".format(name, stats["stderr_tail"]))
                with open(out / "result.json") as stream:
                    stats["stages"] = json.load(stream)["timings_s"]
                runs.append(stats)
                print("{:<30} run {}: wall {:6.2f} s  cpu {:6.2f} s  peak RSS {:6.0f} MB  stages {}".format(
                    name, repeat + 1, stats["wall_s"], stats["cpu_s"], stats["peak_rss_mb"], stats["stages"]))
            rows.append((name, runs))
    print("\nmachine: {} ({} cores), python {}, device {}".format(platform.processor() or platform.machine(),
                                                                  os.cpu_count(), platform.python_version(), args.device))
    print("{:<30} {:>12} {:>12} {:>14}".format("input", "wall s (med)", "cpu s (med)", "peak RSS MB"))
    for name, runs in rows:
        print("{:<30} {:>12.2f} {:>12.2f} {:>14.0f}".format(
            name, statistics.median(r["wall_s"] for r in runs), statistics.median(r["cpu_s"] for r in runs),
            max(r["peak_rss_mb"] for r in runs)))


if __name__ == "__main__":
    main()

"""CUDA against CPU on one input: whole-process wall time, stage timings and agreement of the outputs.

    python benchmarks/bench_devices.py INPUT [--model demo] [--repeats 3] [--json OUT.json]

Runs `tace-response predict --device cuda` REPEATS times and `--device cpu` once, as separate processes
(torch import, CUDA start-up and model load included), then compares the two label maps (Dice per label)
and the response probabilities. Records the GPU model with the numbers.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_stats import measure  # noqa: E402


def predict(path, out, model, device):
    stats = measure([sys.executable, "-m", "TACEResponseLib", "predict", str(path), "-o", str(out), "--model", model,
                     "--device", device, "--progress", "none"])
    if stats["returncode"] != 0:
        sys.exit("prediction on {} failed with exit status {}: {}".format(device, stats["returncode"],
                                                                          stats["stderr_tail"]))
    with open(Path(out) / "result.json", encoding="utf-8") as stream:
        result = json.load(stream)
    stats.update(stages=result["timings_s"], probability=result["response_probability"], device=result["device"])
    return stats


def dice(a, b):
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark compares CUDA with CPU")
    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        cuda_runs = [predict(args.input, Path(tmp) / "cuda{}".format(i), args.model, "cuda")
                     for i in range(args.repeats)]
        cpu_run = predict(args.input, Path(tmp) / "cpu", args.model, "cpu")
        cuda_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(tmp) / "cuda0" / "segmentation.nii.gz")))
        cpu_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(tmp) / "cpu" / "segmentation.nii.gz")))
    report = {
        "gpu": gpu,
        "input": args.input,
        "cuda_runs": cuda_runs,
        "cuda_wall_s_median": statistics.median(r["wall_s"] for r in cuda_runs),
        "cuda_in_process_s_median": statistics.median(
            sum(r["stages"].get(k, 0.0) for k in ("localize", "preprocess", "network", "postprocess"))
            for r in cuda_runs),
        "cpu_run": cpu_run,
        "agreement": {"liver_dice": dice(cuda_labels == 1, cpu_labels == 1),
                      "tumor_dice": dice(cuda_labels == 2, cpu_labels == 2),
                      "organ_dice": dice(cuda_labels > 0, cpu_labels > 0),
                      "probability_difference": abs(cuda_runs[0]["probability"] - cpu_run["probability"])},
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()

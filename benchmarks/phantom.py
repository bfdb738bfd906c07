"""Benchmark inputs at a chosen grid: a synthetic abdominal CT resampled onto e.g. 512x512x300 at 0.7x0.7x1 mm.

    python benchmarks/phantom.py OUT.nii.gz [--size 512 512 300] [--spacing 0.7 0.7 1.0] [--seed 0]

The anatomy comes from the synthetic cohort generator, so the phantom has a liver and lesions and the
prediction does the work it does on a patient. Also writes the phantom's reference labels next to it
(OUT-label.nii.gz).
"""

import argparse

import numpy as np
import SimpleITK as sitk

from TACEResponseTraining.phantoms import case_rng, generate_case


def make_phantom(out_path, size=(512, 512, 300), spacing=(0.7, 0.7, 1.0), seed=0, label_path=None):
    case = generate_case(case_rng(seed, 0), "phantom")
    source = case.images["portal_venous"]
    centre = source.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in source.GetSize()])
    reference = sitk.Image([int(n) for n in size], sitk.sitkInt16)
    reference.SetSpacing([float(s) for s in spacing])
    # centre the new grid on the phantom's centre, axis-aligned like most scanners write
    reference.SetOrigin([float(c - (n - 1) * s / 2.0) for c, n, s in zip(centre, size, spacing)])
    image = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    sitk.WriteImage(image, str(out_path), True)
    if label_path:
        label = sitk.Resample(case.label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        sitk.WriteImage(label, str(label_path), True)
    return image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    label_path = str(args.output).replace(".nii.gz", "") + "-label.nii.gz"
    image = make_phantom(args.output, args.size, args.spacing, args.seed, label_path)
    array = sitk.GetArrayViewFromImage(image)
    print("wrote {} {} (HU {}..{})".format(args.output, image.GetSize(), int(np.min(array)), int(np.max(array))))


if __name__ == "__main__":
    main()

"""The comparison pipeline: what a user would run instead (MONAIAuto3DSeg-style SegResNet).

    python benchmarks/baseline_segresnet.py INPUT -o OUTDIR [--roi 224 224 144] [--device cpu]

Resample to 1.5 mm isotropic, Auto3DSeg's SegResNet (init_filters 32, blocks_down 1-2-2-4-4, blocks_up
1-1-1-1), MONAI sliding-window inference (gaussian, overlap 0.625), argmax, resample the labels back onto
the input grid and write them. Weights are random: the cost of a forward pass does not depend on them.
Run as a whole process so its wall time includes importing torch and MONAI, as ours does.
"""

import argparse
import os
import sys
import time

import numpy as np
import SimpleITK as sitk

SPACING_MM = 1.5
HU_RANGE = (-200.0, 300.0)


def read(path):
    if os.path.isdir(path):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(path))
        return reader.Execute()
    return sitk.ReadImage(path)


def to_isotropic(image):
    size = [int(round(n * s / SPACING_MM)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), [SPACING_MM] * 3,
                         image.GetDirection(), -1024.0, sitk.sitkFloat32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--roi", type=int, nargs=3, default=[224, 224, 144], help="window in voxels, x y z")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SegResNet

    started = time.perf_counter()
    image = read(args.input)
    resampled = to_isotropic(image)
    array = sitk.GetArrayFromImage(resampled)  # z, y, x
    low, high = HU_RANGE
    array = (np.clip(array, low, high) - low) / (high - low)
    # MONAI works in (x, y, z) order after LoadImage; transpose so the window's (x, y, z) matches the volume
    volume = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 1, 0)))[None, None].to(args.device)

    torch.manual_seed(0)
    network = SegResNet(spatial_dims=3, init_filters=32, in_channels=1, out_channels=3, blocks_down=(1, 2, 2, 4, 4),
                        blocks_up=(1, 1, 1, 1), dropout_prob=0.2).to(args.device).eval()
    with torch.inference_mode():
        logits = sliding_window_inference(volume, tuple(args.roi), 1, network, overlap=0.625, mode="gaussian")
        labels = torch.argmax(logits, dim=1)[0].to(torch.uint8).cpu().numpy().transpose(2, 1, 0)
    del logits
    label_image = sitk.GetImageFromArray(np.ascontiguousarray(labels))
    label_image.CopyInformation(resampled)
    back = sitk.Resample(label_image, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    os.makedirs(args.output, exist_ok=True)
    sitk.WriteImage(back, os.path.join(args.output, "segmentation.nii.gz"), True)
    print("baseline done in {:.1f} s (volume {} at 1.5 mm)".format(time.perf_counter() - started,
                                                                  resampled.GetSize()), file=sys.stderr)


if __name__ == "__main__":
    main()

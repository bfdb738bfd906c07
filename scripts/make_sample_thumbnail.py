"""Draw the Sample Data thumbnail of the bundled synthetic CT: the axial slice through the largest tumor area,
in an abdominal window, with the reference liver and tumor outlines in the demo model's segment colors.

    python scripts/make_sample_thumbnail.py            # -> TACEResponse/Resources/Icons/TACESyntheticCT.png
    python scripts/make_sample_thumbnail.py --size 512 --output thumb.png

Needs matplotlib (offscreen Agg backend) and SimpleITK. Run it again when the sample CT or its labels change.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")  # offscreen: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOURCES = os.path.join(REPO, "TACEResponse", "Resources")
SAMPLE_CT = os.path.join(RESOURCES, "SampleData", "synthetic_ct.nii.gz")
SAMPLE_LABELS = os.path.join(RESOURCES, "SampleData", "synthetic_ct_label.nii.gz")
DEMO_CARD = os.path.join(RESOURCES, "Models", "demo", "model.json")
OUTPUT = os.path.join(RESOURCES, "Icons", "TACESyntheticCT.png")
WINDOW_HU = (-140.0, 260.0)  # abdominal soft tissue: width 400, level 60
FALLBACK_COLORS = {1: (0.86, 0.55, 0.45), 2: (0.95, 0.85, 0.25)}  # liver, tumor


def label_colors(card_path=DEMO_CARD):
    """{label value: RGB} from the demo model card, so the outlines match the segments users will see."""
    try:
        with open(card_path, encoding="utf-8") as stream:
            labels = json.load(stream)["labels"]
        return {int(label["value"]): tuple(label["color"]) for label in labels if "color" in label}
    except (OSError, ValueError, KeyError):
        return dict(FALLBACK_COLORS)


def axial_slice(ct_path=SAMPLE_CT, label_path=SAMPLE_LABELS, tumor_value=2):
    """The CT and label slices (LPS arrays, rows anterior to posterior) with the most tumor voxels."""
    ct = sitk.GetArrayFromImage(sitk.ReadImage(ct_path)).astype(np.float32)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(label_path))
    if ct.shape != labels.shape:
        raise SystemExit("{}: labels do not match the CT grid ({} vs {})".format(label_path, labels.shape, ct.shape))
    tumor_area = (labels == tumor_value).sum(axis=(1, 2))
    k = int(np.argmax(tumor_area)) if tumor_area.any() else ct.shape[0] // 2
    return ct[k], labels[k]


def render(output=OUTPUT, size=384):
    ct, labels = axial_slice()
    colors = label_colors()
    dpi = 100
    figure = plt.figure(figsize=(size / dpi, size / dpi), dpi=dpi)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.set_axis_off()
    # radiological convention: patient's right on the image's left (LPS columns grow to the left side)
    axes.imshow(np.clip(ct, *WINDOW_HU), cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1],
                interpolation="bilinear", aspect="equal")
    for value in sorted(colors):
        mask = (labels == value).astype(np.float32)
        if mask.any():
            axes.contour(mask, levels=[0.5], colors=[colors[value]], linewidths=max(1.5, size / 160.0))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    figure.savefig(output, dpi=dpi)
    plt.close(figure)
    return output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--size", type=int, default=384, help="width and height in pixels (default 384)")
    arguments = parser.parse_args()
    print(render(arguments.output, arguments.size))


if __name__ == "__main__":
    main()

"""Tumor segmentation on a real CT's background: synthetic lesions inserted into a real liver.

    python benchmarks/inserted_lesions.py [--ct PATH] [--model demo] [--seed 0] [-o OUT]

The real CTs here have no tumor masks. This predicts the liver on the CT (default: HCC_048), paints each
lesion kind of ``TACEResponseTraining.phantoms.inserted_lesions.KINDS`` into it in turn (one lesion per
copy, deep in the predicted liver), predicts again and compares the predicted tumor with the painted
lesion: Dice, predicted and true volume, the share of the lesion labelled tumor, and tumor predicted more
than 10 mm from the lesion. The painted lesions are simple; real lesions' own appearance is not measured.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "TACEResponse"))
sys.path.insert(0, str(HERE.parent))
from TACEResponseLib import image_io, model_package  # noqa: E402
from TACEResponseLib.predictor import Predictor  # noqa: E402
from TACEResponseTraining.phantoms import inserted_lesions  # noqa: E402

HCC_048 = HERE.parent.parent / "shared" / "data" / "hcc-tace-seg-HCC_048-portal-venous"


def score(label_image, truth, tumor_value):
    """Dice, volumes (mL), the lesion's share labelled tumor and the tumor farther than 10 mm from it."""
    predicted = sitk.GetArrayFromImage(label_image) == tumor_value
    lesion = sitk.GetArrayFromImage(truth) > 0
    voxel_ml = float(np.prod(truth.GetSpacing())) / 1000.0
    outside = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(truth > 0, insideIsPositive=False,
                                                                  squaredDistance=False, useImageSpacing=True))
    return {
        "dice": float(2.0 * (predicted & lesion).sum() / max(predicted.sum() + lesion.sum(), 1)),
        "true_ml": float(lesion.sum() * voxel_ml),
        "predicted_ml": float(predicted.sum() * voxel_ml),
        "lesion_labelled_tumor": float((predicted & lesion).sum() / max(lesion.sum(), 1)),
        "tumor_beyond_10mm_ml": float((predicted & (outside > 10.0)).sum() * voxel_ml),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", default=str(HCC_048), help="a real CT (file or DICOM folder)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", help="folder for the painted CTs, masks and results.json")
    args = parser.parse_args(argv)
    out = Path(args.output or tempfile.mkdtemp(prefix="inserted_lesions_"))
    out.mkdir(parents=True, exist_ok=True)
    ct = image_io.read_image(args.ct)[0]
    package = model_package.resolve(args.model)
    predictor = Predictor(package, device=args.device)
    tumor_value = package.label_value("Tumor")
    plain = predictor.predict([ct], [args.ct])
    liver = plain.label_image > 0
    names = list(inserted_lesions.KINDS)
    kinds = [inserted_lesions.KINDS[name] for name in names]
    centres = inserted_lesions.lesion_centres(liver, kinds, seed=args.seed)
    rows = {"ct": args.ct, "model": "{} {}".format(package.name, package.version), "seed": args.seed,
            "without_lesion_tumor_ml": plain.measurements["tumor_volume_ml"], "lesions": {}}
    for index, (name, kind, centre) in enumerate(zip(names, kinds, centres)):
        painted, truth = inserted_lesions.insert_lesion(ct, liver, kind, centre, seed=args.seed + index)
        stem = name.replace(" ", "_")
        sitk.WriteImage(painted, str(out / "{}.nii.gz".format(stem)))
        sitk.WriteImage(truth, str(out / "{}_lesion.nii.gz".format(stem)))
        prediction = predictor.predict([painted], [name])
        rows["lesions"][name] = dict(score(prediction.label_image, truth, tumor_value),
                                     centre_mm=[round(float(c), 1) for c in centre])
        print(name, json.dumps(rows["lesions"][name]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n{} on {} (tumor without a lesion: {:.1f} mL)\n".format(rows["model"], args.ct,
                                                                   rows["without_lesion_tumor_ml"]))
    print("| lesion | true mL | predicted tumor mL | Dice | lesion labelled tumor | tumor > 10 mm away, mL |")
    print("|---|---|---|---|---|---|")
    for name, row in rows["lesions"].items():
        print("| {} | {:.1f} | {:.1f} | {:.2f} | {:.0%} | {:.1f} |".format(
            name, row["true_ml"], row["predicted_ml"], row["dice"], row["lesion_labelled_tumor"],
            row["tumor_beyond_10mm_ml"]))
    print("\nwrote {}".format(out / "results.json"))


if __name__ == "__main__":
    main()

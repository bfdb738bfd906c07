"""Tumor segmentation on a real CT's background: synthetic lesions inserted into a real liver.

    python benchmarks/inserted_lesions.py [--ct PATH] [--model demo] [--seed 0] [--slice-mm T] [--liver MASK]
                                          [-o OUT]

The real CTs here have no tumor masks. This predicts the liver on the CT (default: HCC_048), paints each
lesion kind of ``TACEResponseTraining.phantoms.inserted_lesions.KINDS`` into it in turn (one lesion per
copy, deep in the predicted liver), predicts again and compares the predicted tumor with the painted
lesion: Dice, predicted and true volume, the share of the lesion labelled tumor, and tumor predicted more
than 10 mm from the lesion. The painted lesions are simple; real lesions' own appearance is not measured.

``--liver MASK`` places the lesions in a given liver mask (labels above 0, e.g. another model's
segmentation.nii.gz) instead of the model's own liver, so that two models meet the same lesions.
``--slice-mm T`` reconstructs each painted CT (and its mask) with T mm slices first, as an archive's thick
series would be; it also reports the tumor predicted on the thick CT without a lesion and how well its
liver agrees with the one predicted on the thin original, for each phase of the new slabs against the old
slices (the prediction at the porta hepatis changes with it).
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
from TACEResponseTraining.phantoms import inserted_lesions, thick_slices  # noqa: E402

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


def agreement(organ, reference):
    """Dice of two organ masks, the reference resampled (nearest) onto the first one's grid."""
    a = sitk.GetArrayFromImage(organ) > 0
    b = sitk.GetArrayFromImage(sitk.Resample(reference, organ, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    return float(2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", default=str(HCC_048), help="a real CT (file or DICOM folder)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--liver", help="place the lesions in this liver mask instead of the model's own liver")
    parser.add_argument("--slice-mm", type=float, help="reconstruct the painted CTs with slices this thick")
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
    if args.liver:
        liver = sitk.Resample(image_io.read_mask(args.liver), ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0) > 0
    names = list(inserted_lesions.KINDS)
    kinds = [inserted_lesions.KINDS[name] for name in names]
    centres = inserted_lesions.lesion_centres(liver, kinds, seed=args.seed)
    rows = {"ct": args.ct, "model": "{} {}".format(package.name, package.version), "seed": args.seed,
            "slice_mm": args.slice_mm or ct.GetSpacing()[2], "lesions_placed_in": args.liver or "the model's liver",
            "without_lesion_tumor_ml": plain.measurements["tumor_volume_ml"], "lesions": {}}
    if args.slice_mm:
        # every phase of the new slabs against the old slices: the first k thin slices left out
        rows["without_lesion_tumor_ml_per_slab_phase"], rows["liver_agreement_with_thin_dice_per_slab_phase"] = [], []
        for first in range(max(1, int(round(args.slice_mm / ct.GetSpacing()[2])))):
            thick = predictor.predict([thick_slices.thicker_slices(ct[:, :, first:], args.slice_mm)], ["thick"])
            rows["without_lesion_tumor_ml_per_slab_phase"].append(thick.measurements["tumor_volume_ml"])
            rows["liver_agreement_with_thin_dice_per_slab_phase"].append(
                agreement(thick.label_image > 0, plain.label_image > 0))
        rows["without_lesion_tumor_ml"] = max(rows["without_lesion_tumor_ml_per_slab_phase"])
        rows["liver_agreement_with_thin_dice"] = min(rows["liver_agreement_with_thin_dice_per_slab_phase"])
    for index, (name, kind, centre) in enumerate(zip(names, kinds, centres)):
        painted, truth = inserted_lesions.insert_lesion(ct, liver, kind, centre, seed=args.seed + index)
        if args.slice_mm:
            painted = thick_slices.thicker_slices(painted, args.slice_mm)
            truth = thick_slices.thicker_slices(truth, args.slice_mm, mask=True)
        stem = name.replace(" ", "_")
        sitk.WriteImage(painted, str(out / "{}.nii.gz".format(stem)))
        sitk.WriteImage(truth, str(out / "{}_lesion.nii.gz".format(stem)))
        prediction = predictor.predict([painted], [name])
        rows["lesions"][name] = dict(score(prediction.label_image, truth, tumor_value),
                                     centre_mm=[round(float(c), 1) for c in centre])
        print(name, json.dumps(rows["lesions"][name]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n{} on {}, {:g} mm slices (tumor without a lesion: {}{})\n".format(
        rows["model"], args.ct, rows["slice_mm"],
        " / ".join("{:.1f} mL".format(v) for v in rows.get("without_lesion_tumor_ml_per_slab_phase",
                                                           [rows["without_lesion_tumor_ml"]])),
        "; liver Dice against the thin CT's {}".format(" / ".join(
            "{:.3f}".format(v) for v in rows["liver_agreement_with_thin_dice_per_slab_phase"]))
        if args.slice_mm else ""))
    print("| lesion | true mL | predicted tumor mL | Dice | lesion labelled tumor | tumor > 10 mm away, mL |")
    print("|---|---|---|---|---|---|")
    for name, row in rows["lesions"].items():
        print("| {} | {:.1f} | {:.1f} | {:.2f} | {:.0%} | {:.1f} |".format(
            name, row["true_ml"], row["predicted_ml"], row["dice"], row["lesion_labelled_tumor"],
            row["tumor_beyond_10mm_ml"]))
    print("\nwrote {}".format(out / "results.json"))


if __name__ == "__main__":
    main()

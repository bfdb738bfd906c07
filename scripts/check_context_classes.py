"""Has a model learnt its neighbouring-organ classes? Mean probability of each class at its own voxels.

    python scripts/check_context_classes.py MODEL DATASET [--cases 10] [--crop 96]

DATASET is a synthetic cohort (tace-response-train synth: it has context maps). For each of the first
``--cases`` cases, the main network's first fold runs on the central ``--crop``^3 voxels of the model grid
(one forward pass, no tiling, no post-processing) and the softmax of every class is averaged over the voxels
of that class. A class the network has learnt scores near 1; one it has not, near 0 (it is then background
in effect). Training's own cases show what was learnt; held-out ones, what generalises.
"""

import argparse

import numpy as np
import torch

from TACEResponseLib import model_package
from TACEResponseLib.preprocessing import PreprocessingSpec
from TACEResponseTraining.dataset import load_case, read_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--crop", type=int, default=96)
    args = parser.parse_args()
    package = model_package.resolve(args.model)
    network = package.build_networks()[0]
    names = ["background"] + [label["name"] for label in package.card["labels"]]
    names += list(package.card["network"].get("context_classes", []))
    spec = PreprocessingSpec.from_card(package.card)
    crop = args.crop - args.crop % network.size_multiple
    sums, counts = np.zeros(len(names)), np.zeros(len(names))
    for record in read_dataset(args.dataset, spec.phases)[:args.cases]:
        case = load_case(record, spec, network.size_multiple, None, with_context=True)
        starts = [max(0, (n - crop) // 2) for n in case.label.shape]
        box = tuple(slice(s, s + crop) for s in starts)
        image = np.ascontiguousarray(case.image[(slice(None),) + box].astype(np.float32))
        with torch.inference_mode():
            logits, _, _ = network.forward_maps(torch.from_numpy(image)[None])
        probabilities = torch.softmax(logits.float(), 1)[0].numpy()
        label = case.label[box]
        for index in range(len(names)):
            voxels = label == index
            sums[index] += probabilities[index][voxels].sum()
            counts[index] += voxels.sum()
    print("{:16s} {:>12s} {:>10s}".format("class", "voxels", "mean p"))
    for name, total, count in zip(names, sums, counts):
        print("{:16s} {:12d} {:>10s}".format(name, int(count), "{:.3f}".format(total / count) if count else "-"))


if __name__ == "__main__":
    main()

"""Neighbouring organs as extra training classes: the dataset merges the context map into the label map, the
network gets the extra outputs, and inference still reports liver and tumor only."""

import numpy as np
import torch

from TACEResponseLib import image_io, preprocessing
from TACEResponseLib.model_package import build_network
from TACEResponseTraining.config import load_config
from TACEResponseTraining.dataset import CONTEXT_OFFSET, cache_path, load_case, read_dataset
from TACEResponseTraining.model_card import network_card
from TACEResponseTraining.phantoms import CONTEXT_NAMES, generate_cohort


def test_context_map_fills_the_background_of_the_training_labels(tmp_path):
    generate_cohort(tmp_path / "cohort", 2, seed=4, size_scale=3.0)
    config = load_config(None, context_classes=list(CONTEXT_NAMES), spacing_mm=[6.0, 6.0, 6.0])
    card = network_card(config)
    spec = preprocessing.PreprocessingSpec.from_card(card)
    record = read_dataset(tmp_path / "cohort", spec.phases)[0]
    assert record.context_label and record.context_label.endswith(".nii.gz")

    plain = load_case(record, spec, 16, tmp_path / "cache")
    merged = load_case(record, spec, 16, tmp_path / "cache", with_context=True)
    assert cache_path(record, spec, tmp_path / "cache", 16) != cache_path(record, spec, tmp_path / "cache", 16, True)
    # liver and tumor are untouched; background gains the context classes, shifted past the foreground
    foreground = (plain.label == 1) | (plain.label == 2)
    assert np.array_equal(merged.label[foreground], plain.label[foreground])
    assert set(np.unique(merged.label[~foreground])) <= {0} | {CONTEXT_OFFSET + k for k in range(1, 6)}
    assert (merged.label > CONTEXT_OFFSET).any()
    assert merged.organ_box == plain.organ_box
    # the context map on the model grid, read independently, is what was merged
    context = preprocessing.labels_to_grid(image_io.read_mask(record.context_label),
                                           preprocessing.prepare([image_io.read_image(record.images[0])[0]],
                                                                 spec).grid)
    assert (context > 0).sum() >= (merged.label > CONTEXT_OFFSET).sum() * 0.9


def test_extra_classes_widen_the_segmentation_output_only():
    config = load_config(None, context_classes=list(CONTEXT_NAMES), channels=[4, 8], spacing_mm=[6.0, 6.0, 6.0])
    card = network_card(config)
    assert card["network"]["context_classes"] == list(CONTEXT_NAMES)
    assert [label["name"] for label in card["labels"]] == ["Liver", "Tumor"]
    network = build_network(card)
    seg_logits, _ = network(torch.zeros(1, 1, 16, 16, 16))
    assert seg_logits.shape[1] == 3 + len(CONTEXT_NAMES)
    old = build_network(network_card(load_config(None, channels=[4, 8], spacing_mm=[6.0, 6.0, 6.0])))
    assert old(torch.zeros(1, 1, 16, 16, 16))[0].shape[1] == 3  # cards without context classes are unchanged


def test_context_dice_prices_a_missed_neighbour_as_a_class_not_by_its_voxels():
    from TACEResponseTraining import losses

    target = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    target[0, :8] = 1  # liver
    target[0, 8:10] = CONTEXT_OFFSET + 1  # spleen: 1/8 of the voxels
    # confident and right about liver and background, but the spleen called background
    logits = torch.full((1, 3 + len(CONTEXT_NAMES), 16, 16, 16), -8.0)
    logits[:, 0] = 8.0
    logits[0, 1, :8] = 8.0
    logits[0, 0, :8] = -8.0
    foreground_only = losses.segmentation_loss(logits, target)
    with_context = losses.segmentation_loss(logits, target, dice_classes=range(1, logits.shape[1]))
    # cross-entropy alone prices the missed spleen at its share of the voxels; its Dice term at a whole class
    assert with_context > foreground_only + 0.1
    assert load_config(None)["context_dice"] is False  # older recipes train as they did

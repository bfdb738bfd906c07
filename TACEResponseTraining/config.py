"""Training configuration: defaults, overridden by a JSON file and by command-line flags."""

import json

from TACEResponseLib.errors import InputError

TASKS = ("multitask", "segmentation", "classification")

DEFAULT_CONFIG = {
    "phases": ["portal_venous"],
    "spacing_mm": [2.0, 2.0, 2.0],
    "intensity_window_hu": [-200.0, 300.0],
    "channels": [8, 16, 32, 64, 128],
    # 0: the response pathway is a logistic model over standardised pooled statistics, fitted on whole cases
    # with an L2 penalty (head_l2 = 1/C), head_deep_l2_factor times stronger on the deepest encoder features;
    # > 0: a hidden layer of that width (older models), trained for head_refit_epochs
    "head_hidden": 0,
    "head_l2": 1.0,
    "head_deep_l2_factor": 100.0,
    # soft intensity-histogram bins across the HU window for the response pathway's lesion-to-liver contrasts
    # (washout, necrosis, rim enhancement); 0 turns them off. 26 bins of a 500 HU window are 20 HU wide.
    "intensity_bins": 26,
    "patch_size": [64, 64, 64],
    "batch_size": 2,
    "epochs": 10,
    "max_steps": None,
    "steps_per_epoch": None,
    "learning_rate": 2e-3,
    "weight_decay": 1e-5,
    # loss = segmentation (soft Dice + cross-entropy, equal parts) + response_weight * BCE(response)
    "response_weight": 0.5,
    # "multitask": the loss above. Baselines on the same encoder (see task_loss_weights):
    # "segmentation": response weight 0, no head refit (its response output is not reported);
    # "classification": segmentation weight 0, 1 x BCE, the response pathway pools the deepest encoder
    # features over the whole patch / volume instead of over the segmented liver and tumor
    "task": "multitask",
    # share of samples whose response pathway is fed the true tumor mask instead of the predicted one
    "teacher_forcing": 0.5,
    # patch centres: on the organ (jittered by up to half a patch), on a tumor voxel, else anywhere (so the
    # network also learns what is not liver: spleen, kidneys, bowel)
    "organ_centred_fraction": 0.5,
    "tumor_centred_fraction": 0.2,
    "validation_fraction": 0.2,
    "validation_cases_per_epoch": 16,
    "head_refit_epochs": 300,
    "tile_size": [128, 128, 128],
    "tile_margin": 16,
    "seed": 0,
    "num_threads": None,
    # neighbouring organs learnt as extra segmentation classes (from a cohort's context_label maps), so that
    # spleen, stomach, bowel, kidney and pancreas compete with liver and tumor; the output stays 3 classes
    "context_classes": [],
    # soft Dice over the context classes too (one term each, like liver and tumor), not cross-entropy alone:
    # each is a few per cent of the voxels, and with cross-entropy alone they were never the most likely class
    "context_dice": False,
    # bfloat16 autocast for training on the CPU
    "cpu_bf16": False,
    # refit the response pathway on whole-volume statistics of every training case at the end; off when the
    # recipe refits it anyway through the Predictor (``refit``), which saves a pass over the training cases
    "whole_case_refit": True,
}


def load_config(path=None, **overrides):
    config = dict(DEFAULT_CONFIG)
    if path:
        try:
            with open(path, encoding="utf-8") as stream:
                user = json.load(stream)
        except (OSError, ValueError) as exc:
            raise InputError(path, "cannot read training configuration ({})".format(exc)) from None
        unknown = sorted(set(user) - set(DEFAULT_CONFIG))
        if unknown:
            raise InputError(path, "unknown configuration keys: {}".format(", ".join(unknown)))
        config.update(user)
    config.update({key: value for key, value in overrides.items() if value is not None})
    if config["task"] not in TASKS:
        raise InputError(path, "task must be one of {}, not {!r}".format(", ".join(TASKS), config["task"]))
    return config


def task_loss_weights(config):
    """(segmentation weight, response weight) of the training loss for the configured task.

    A weight of 0 multiplies its term instead of dropping it, so every parameter stays in the graph (as
    DistributedDataParallel's static graph expects) and only receives zero gradient. Classification-only
    uses 1 x BCE: with a single term the weight would only rescale the loss (AdamW is scale-invariant)."""
    task = config.get("task", "multitask")
    if task == "segmentation":
        return 1.0, 0.0
    if task == "classification":
        return 0.0, 1.0
    return 1.0, float(config["response_weight"])

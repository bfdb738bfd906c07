"""The model card (model.json) written at export, from the training configuration and measured metrics."""

LABELS = [
    {"name": "Liver", "value": 1, "color": [0.86, 0.59, 0.39],
     "terminology": {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
                     "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}}},
    {"name": "Tumor", "value": 2, "color": [0.90, 0.20, 0.20],
     "terminology": {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
                     "type": {"scheme": "SCT", "code": "25370001", "meaning": "Hepatocellular carcinoma"},
                     "anatomic_region": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}}},
]


def network_card(config):
    """The parts of a card that define the network and its input: enough to build and run it."""
    return {
        "inputs": {"phases": list(config["phases"]), "modality": "CT", "units": "HU"},
        "preprocessing": {"spacing_mm": list(config["spacing_mm"]),
                          "intensity_window_hu": list(config["intensity_window_hu"]),
                          "orientation": "axis-aligned LPS grid covering the input's physical extent"},
        "network": {"architecture": "MultiDL", "channels": list(config["channels"]),
                    "head_hidden": int(config["head_hidden"]),
                    "intensity_bins": int(config.get("intensity_bins", 0)),
                    "context_classes": list(config.get("context_classes", []))},
        "inference": {"tile_size": list(config["tile_size"]), "tile_margin": int(config["tile_margin"])},
        "labels": LABELS,
    }


def _head_refit_text(config):
    if int(config.get("head_hidden", 32)):
        return "response pathway refitted on whole-case pooled statistics after joint training"
    return ("response pathway refitted on whole-case pooled statistics after joint training: logistic model on "
            "inputs standardised with the training cases' statistics, ridge penalty {} (= 1/C), {} times "
            "stronger on the deepest encoder features, fitted to convergence (L-BFGS)".format(
                config.get("head_l2", 1.0), config.get("head_deep_l2_factor", 100.0)))


def _response_pathway_text(config):
    parts = ["decoder features pooled over the predicted (or given) tumor and liver",
             "deepest encoder features pooled over the organ", "tumor and liver volume"]
    if int(config.get("intensity_bins", 0)):
        parts.append("lesion-to-liver intensity contrasts per phase from {}-bin histograms: washout, necrotic "
                     "fraction, rim enhancement".format(int(config["intensity_bins"])))
    model = "a hidden layer of {} units".format(config["head_hidden"]) if int(config.get("head_hidden", 32)) \
        else "a logistic model"
    return "{} over: {}".format(model, "; ".join(parts))


def full_card(config, run, name, version, intended_use, training_data, license_text, reproduce=None):
    card = {
        "format_version": 1,
        "name": name,
        "version": version,
        "intended_use": intended_use,
        "training_data": training_data,
        "license": license_text,
    }
    card.update(network_card(config))
    card["patch_size"] = list(config["patch_size"])
    card["loss"] = {
        "segmentation": "soft Dice (liver, tumor) + cross-entropy, equal weight",
        "response": "binary cross-entropy on objective response (mRECIST CR+PR = 1)",
        "response_weight": config["response_weight"],
        "teacher_forcing": config["teacher_forcing"],
        "head_refit": _head_refit_text(config),
    }
    card["response_pathway"] = _response_pathway_text(config)
    card["risk"] = {
        "cutoff": run["cutoff"],
        "method": run.get("cutoff_method", "Youden index on the training cases' predicted probabilities"),
        "categories": {"low": "probability >= cutoff: likely objective responder",
                       "high": "probability < cutoff: likely stable or progressive disease"},
    }
    card["metrics"] = run.get("metrics", {})
    if reproduce:
        card["reproduce"] = reproduce
    card["weights"] = []
    return card

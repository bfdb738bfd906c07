"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON."""

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(folder, model, optimizer, state):
    """Write model + optimizer tensors and a JSON state, replacing the previous checkpoint atomically."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(str(staging), ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(staging / "model.safetensors"))
    tensors, scalars = {}, {}
    opt_state = optimizer.state_dict()
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            name = "{}.{}".format(index, key)
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    save_file(tensors, str(staging / "optimizer.safetensors"))
    document = dict(state, optimizer_scalars=scalars, param_groups=opt_state["param_groups"])
    with open(str(staging / "state.json"), "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=1)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(str(folder), str(old))
    os.replace(str(staging), str(folder))
    shutil.rmtree(str(old), ignore_errors=True)


def load_checkpoint(folder, model, optimizer):
    folder = Path(folder)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    with open(str(folder / "state.json"), encoding="utf-8") as stream:
        document = json.load(stream)
    tensors = load_file(str(folder / "optimizer.safetensors"))
    state = {}
    for name, value in list(tensors.items()) + list(document.pop("optimizer_scalars").items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": document.pop("param_groups")})
    return document

"""Multi-task training: joint segmentation + response on patches, then a refit of the response pathway
on whole-case statistics computed exactly as inference computes them.

Deterministic: every step draws its samples from a generator seeded by (seed, step), so a resumed run
continues exactly as an uninterrupted one would. Under torchrun each rank draws its own samples (rank r > 0
from (seed, step, r)) and DistributedDataParallel averages the gradients; see docs/distributed_training.md.
"""

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from TACEResponseLib import inference
from TACEResponseLib.errors import InputError
from TACEResponseLib.model_package import build_network, sha256_of
from TACEResponseLib.network import HEAD_BUFFERS, region_weights
from TACEResponseLib.preprocessing import PreprocessingSpec

from . import checkpoint, distributed, losses, metrics
from .config import task_loss_weights
from .dataset import cache_path, extract_patch, load_case, read_dataset
from .model_card import network_card
from .response_head import fit_logistic_head


def _progress_bar(total, initial, desc):
    try:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
    except ImportError:
        return None


def split_cases(records, validation_fraction, seed):
    """Deterministic split stratified by response (unknown responses spread like a third class)."""
    rng = np.random.default_rng([seed, 7919])
    train, val = [], []
    for group in (1, 0, None):
        members = [r for r in records if r.response == group]
        order = rng.permutation(len(members))
        n_val = int(round(len(members) * validation_fraction))
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    if not val and validation_fraction > 0 and len(train) > 1:  # tiny cohorts: rounding left none
        val.append(train.pop(int(rng.integers(len(train)))))
    return sorted(train, key=lambda r: r.case_id), sorted(val, key=lambda r: r.case_id)


def sample_batch(cases, config, rng):
    """Patches centred on the organ (with jitter), on a tumor voxel, or anywhere; returns numpy arrays."""
    size = tuple(config["patch_size"])
    images, labels, responses, use_true_mask = [], [], [], []
    for _ in range(config["batch_size"]):
        case = cases[rng.integers(len(cases))]
        shape = case.label.shape
        draw = rng.random()
        if case.organ_box and draw < config["organ_centred_fraction"]:
            lo, hi = case.organ_box
            centre = [(a + b) // 2 + int(rng.integers(-s // 2, s // 2 + 1)) for a, b, s in zip(lo, hi, size)]
        elif draw < config["organ_centred_fraction"] + config["tumor_centred_fraction"] \
                and len(case.tumor_voxels):
            centre = case.tumor_voxels[rng.integers(len(case.tumor_voxels))]
        else:
            centre = [int(rng.integers(length)) for length in shape]
        image = extract_patch(case.image, centre, size, -1.0).astype(np.float32)
        # mild contrast/brightness jitter: scanners and contrast timing differ
        image = image * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.05, 0.05))
        images.append(image)
        labels.append(extract_patch(case.label, centre, size, 0))
        responses.append(np.nan if case.response is None else float(case.response))
        use_true_mask.append(rng.random() < config["teacher_forcing"])
    return np.stack(images), np.stack(labels), np.array(responses, np.float32), np.array(use_true_mask)


def autocast(device, cpu_bf16):
    """float16 autocast on CUDA; bfloat16 on the CPU when asked (about 3x faster on CPUs with AVX512-BF16)."""
    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bool(cpu_bf16))


def forward_batch(model, x, y, use_true, use_amp, cpu_bf16=False):
    """Segmentation logits and response logit of a training batch. ``use_true`` (batch,) bool picks the
    samples whose response pathway pools with the true masks instead of the predicted ones."""
    with autocast(str(x.device), cpu_bf16):
        seg_logits, features, deep = model.forward_maps(x)
    true_tumor = (y == 2).float()[:, None]
    liver_w, tumor_w = region_weights(seg_logits.float().detach())
    choose = use_true[:, None, None, None, None]
    tumor_w = torch.where(choose, true_tumor, tumor_w)
    liver_w = torch.where(choose, (y == 1).float()[:, None], liver_w)
    logit = model.response_logit(model.pooled_sums(features.float(), deep.float(), liver_w, tumor_w, image=x))
    return seg_logits, logit


class _StepModule(torch.nn.Module):
    """The whole training forward as one module call: DDP synchronises gradients only for work done inside
    its wrapper's forward, and the step uses several of the network's methods."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x, y, use_true, use_amp, cpu_bf16=False):
        return forward_batch(self.network, x, y, use_true, use_amp, cpu_bf16)


def evaluate_cases(model, cases, config, device):
    """Whole-case inference on the model grid: Dice per class, response probabilities, pooled sums."""
    model.eval()
    rows, sums = [], []
    for case in cases:
        liver, tumor, case_sums = inference.run_network(
            model, case.image.astype(np.float32), device, tuple(config["tile_size"]), int(config["tile_margin"]))
        background = 1.0 - liver - tumor
        predicted = np.where((tumor > liver) & (tumor > background), 2, np.where(liver > background, 1, 0))
        rows.append({"case_id": case.case_id, "response": case.response, "has_tumor": bool((case.label == 2).any()),
                     "liver_dice": metrics.dice(predicted >= 1, (case.label == 1) | (case.label == 2)),
                     "tumor_dice": metrics.dice(predicted == 2, case.label == 2),
                     "probability": inference.response_probability(model, case_sums)})
        sums.append(case_sums.cpu())
    return rows, torch.cat(sums) if sums else None


def summarise(rows):
    known = [r for r in rows if r["response"] is not None]
    with_tumor = [r for r in rows if r["has_tumor"]]
    return {
        "cases": len(rows),
        "liver_dice": float(np.mean([r["liver_dice"] for r in rows])) if rows else float("nan"),
        "tumor_dice": float(np.mean([r["tumor_dice"] for r in with_tumor])) if with_tumor else float("nan"),
        "auc": metrics.roc_auc([r["response"] for r in known], [r["probability"] for r in known]),
    }


def _response_pathway_state(model):
    state = {k: v.clone() for k, v in model.head.state_dict().items()}
    state.update({key: getattr(model, key).clone() for key in HEAD_BUFFERS})
    return state


def _restore_response_pathway(model, state):
    model.head.load_state_dict({k: v for k, v in state.items() if k not in HEAD_BUFFERS})
    for key in HEAD_BUFFERS:
        getattr(model, key).copy_(state[key])


def refit_head(model, train_sums, train_y, val_sums, val_y, config, seed, keep_better_current=True):
    """Refit the response pathway on whole-case pooled statistics; keep it only if validation AUC holds
    (unless ``keep_better_current`` is False: a freshly initialised pathway is no standard to hold).

    A logistic pathway (``head_hidden`` 0) is fitted to convergence by penalised maximum likelihood on
    standardised inputs (:mod:`response_head`). A hidden-layer pathway (older models) is trained for
    ``head_refit_epochs`` and the epoch with the best validation AUC is kept."""
    head_before = _response_pathway_state(model)
    has_validation = len(set(val_y)) == 2

    def auc_of(sums, y):
        with torch.no_grad():
            return metrics.roc_auc(y, torch.sigmoid(model.response_logit(sums)).numpy())

    before = auc_of(val_sums, val_y) if keep_better_current and has_validation else float("nan")
    if isinstance(model.head, torch.nn.Linear):
        fit_logistic_head(model, train_sums, train_y, float(config.get("head_l2", 1.0)),
                          float(config.get("head_deep_l2_factor", 100.0)))
        best_auc, best_state = (auc_of(val_sums, val_y), _response_pathway_state(model)) if has_validation \
            else (None, None)
    else:
        best_auc, best_state = _train_hidden_layer_head(model, train_sums, train_y, val_sums, val_y, config, seed,
                                                        auc_of)
    model.head.eval()
    if best_state is None:  # no validation cases of both classes to judge by
        if keep_better_current:
            _restore_response_pathway(model, head_before)
        return {"val_auc_before": before, "val_auc_after": None, "kept": not keep_better_current}
    if before == before and best_auc < before:
        _restore_response_pathway(model, head_before)
        return {"val_auc_before": before, "val_auc_after": before, "kept": False}
    _restore_response_pathway(model, best_state)
    return {"val_auc_before": before, "val_auc_after": best_auc, "kept": True}


def _train_hidden_layer_head(model, train_sums, train_y, val_sums, val_y, config, seed, auc_of):
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=3e-3, weight_decay=1e-2)
    target = torch.tensor(train_y, dtype=torch.float32)
    best_auc, best_state = -1.0, None
    model.head.train()
    for epoch in range(int(config["head_refit_epochs"])):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.response_logit(train_sums), target)
        loss.backward()
        optimizer.step()
        if len(set(val_y)) == 2 and (epoch + 1) % 10 == 0:
            model.head.eval()
            auc = auc_of(val_sums, val_y)
            model.head.train()
            if auc > best_auc:
                best_auc, best_state = auc, _response_pathway_state(model)
    return best_auc, best_state


def train(dataset_dir, run_dir, config, resume=False, device="auto", cache_dir=None, log=print, stop_after_steps=None,
          init_weights=None):
    """Train on DATASET into RUNDIR. ``stop_after_steps`` ends the session early, as an interruption would
    (a checkpoint is written there); ``resume=True`` then continues the same schedule. ``init_weights`` (a
    safetensors file: a run's final.safetensors or a model package's weights) starts a new run from those
    weights instead of the seeded initialisation: fine-tuning, with its own steps and learning rate.

    Launched by torchrun, every rank runs this; rank 0 alone writes to RUNDIR and returns the run, the
    others return None once it is written."""
    ctx, device = distributed.setup(device)
    try:
        return _train(ctx, dataset_dir, run_dir, config, resume, device, cache_dir,
                      log if ctx.is_main else (lambda *args: None), stop_after_steps, init_weights)
    finally:
        distributed.cleanup()


def _train(ctx, dataset_dir, run_dir, config, resume, device, cache_dir, log, stop_after_steps, init_weights=None):
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoint"
    initial_state = None
    if init_weights and not (resume and ckpt_dir.exists()):  # a resumed run's checkpoint holds the weights
        initial_state, config = _read_initial_weights(init_weights, config)
    # every rank checks and reads before the barrier, and only rank 0 writes after it
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume and ckpt_dir.exists()):
        raise InputError(run_dir, "run folder exists and is not empty; use --resume to continue it or pick a new folder")
    if resume and ckpt_dir.exists():
        with open(str(run_dir / "config.json"), encoding="utf-8") as stream:
            saved = json.load(stream)
        saved.update({k: config[k] for k in ("epochs", "max_steps") if config.get(k) is not None})
        config = saved
    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))
    seed = int(config["seed"])
    torch.manual_seed(seed)
    card = network_card(config)
    model = build_network(card)
    if config.get("task") == "classification":  # before .to(): the mode's marker buffer moves with the model
        model.use_global_pooling()
    if initial_state is not None:
        try:
            model.load_state_dict(initial_state, strict=True)
        except RuntimeError as error:  # missing, unexpected or differently shaped tensors
            detail = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise InputError(init_weights, "weights do not fit the training configuration ({})".format(
                detail[1] if len(detail) > 1 else detail[0]))
        log("starting from {}".format(init_weights))
    model = model.to(device)
    spec = PreprocessingSpec.from_card(card)
    # the run folder is written only once its configuration and starting weights are known to fit
    distributed.barrier()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(str(run_dir / "config.json"), "w", encoding="utf-8") as stream:
            json.dump(config, stream, indent=1)

    records = read_dataset(dataset_dir, config["phases"])
    with_context = bool(config.get("context_classes"))
    train_records, val_records = split_cases(records, config["validation_fraction"], seed)
    if not train_records:
        raise InputError(dataset_dir, "no training cases after the validation split")
    cache_dir = cache_dir or (run_dir / "cache")
    log("preprocessing {} cases (cache: {})".format(len(records), cache_dir))
    if ctx.distributed:
        # each rank fills the cache with its share of the cases (writes are atomic), then all read it
        for record in records[ctx.rank::ctx.world_size]:
            if not cache_path(record, spec, cache_dir, model.size_multiple, with_context).is_file():
                load_case(record, spec, model.size_multiple, cache_dir, with_context)
        distributed.barrier()
    train_cases = [load_case(r, spec, model.size_multiple, cache_dir, with_context) for r in train_records]
    val_cases = [load_case(r, spec, model.size_multiple, cache_dir, with_context) for r in val_records]

    # each rank draws batch_size samples a step: the global batch is batch_size x world_size
    global_batch = config["batch_size"] * ctx.world_size
    steps_per_epoch = int(config.get("steps_per_epoch") or max(1, math.ceil(len(train_cases) / global_batch)))
    total_steps = int(config["max_steps"] or steps_per_epoch * int(config["epochs"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    state = {"step": 0, "history": [], "world_size": ctx.world_size}
    if resume and ckpt_dir.exists():
        state = checkpoint.load_checkpoint(ckpt_dir, model, optimizer)
        log("resumed at step {}".format(state["step"]))
        if state.get("world_size", 1) != ctx.world_size:
            log("warning: checkpoint written with {} process(es), resumed with {}: the sample schedule changes".format(
                state.get("world_size", 1), ctx.world_size))
            state["world_size"] = ctx.world_size
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step_model = _StepModule(model)
    if ctx.distributed:
        # static_graph: the same parameters take part every step, whichever of them the loss uses
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[ctx.local_rank] if device.startswith("cuda") else None, static_graph=True)
    dice_classes = tuple(range(1, model.seg_out.out_channels)) if config.get("context_dice") else (1, 2)
    bar = _progress_bar(total_steps, state["step"], "train") if ctx.is_main else None
    window_loss = []
    while state["step"] < total_steps:
        step = state["step"]
        if stop_after_steps is not None and step >= stop_after_steps:
            if ctx.is_main:
                checkpoint.save_checkpoint(ckpt_dir, model, optimizer, state)
            distributed.barrier()
            log("stopped at step {} of {}; continue with --resume".format(step, total_steps))
            return None
        # rank 0 draws what a single process draws; other ranks draw their own, as deterministically
        rng = np.random.default_rng([seed, step] + ([ctx.rank] if ctx.rank else []))
        torch.manual_seed(seed * 1_000_003 + step + ctx.rank * 1_000_000_007)
        for group in optimizer.param_groups:  # cosine decay to 5% of the initial rate
            group["lr"] = config["learning_rate"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total_steps)))
        images, labels, responses, use_true = sample_batch(train_cases, config, rng)
        x = torch.from_numpy(images).to(device)
        y = torch.from_numpy(labels).to(device)
        r = torch.from_numpy(responses).to(device)
        step_model.train()
        seg_logits, logit = step_model(x, y, torch.from_numpy(use_true).to(device), use_amp,
                                       bool(config.get("cpu_bf16")))
        seg_loss = losses.segmentation_loss(seg_logits, y, dice_classes)
        resp_loss = losses.response_loss(logit, r)
        seg_weight, response_weight = task_loss_weights(config)
        loss = seg_weight * seg_loss + response_weight * resp_loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        state["step"] = step + 1
        window_loss.append([seg_loss.item(), resp_loss.item()])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(seg="{:.3f}".format(seg_loss.item()), resp="{:.3f}".format(resp_loss.item()))
        if state["step"] % steps_per_epoch == 0 or state["step"] == total_steps:
            epoch = state["step"] // steps_per_epoch
            # the losses of the global batch: every rank's window mean, averaged (a collective: all ranks)
            window_mean = distributed.mean_across_ranks(np.mean(np.asarray(window_loss, np.float64), axis=0))
            window_loss = []
            if not ctx.is_main:
                continue
            subset = val_cases[: int(config["validation_cases_per_epoch"])]
            summary = summarise(evaluate_cases(model, subset, config, device)[0]) if subset else {}
            entry = {"epoch": epoch, "step": state["step"], "seg_loss": window_mean[0],
                     "response_loss": window_mean[1], "val": summary, "time": time.time()}
            state["history"].append(entry)
            with open(str(run_dir / "history.jsonl"), "a", encoding="utf-8") as stream:
                stream.write(json.dumps(entry) + "\n")
            log("epoch {} step {}: seg loss {:.3f}, response loss {:.3f}, val liver Dice {:.3f}, tumor Dice {:.3f}, "
                "AUC {:.3f}".format(epoch, state["step"], entry["seg_loss"], entry["response_loss"],
                                    summary.get("liver_dice", float("nan")), summary.get("tumor_dice", float("nan")),
                                    summary.get("auc", float("nan"))))
            checkpoint.save_checkpoint(ckpt_dir, model, optimizer, state)
    if bar is not None:
        bar.close()
    if ctx.distributed:
        _record_distributed(ctx, model, run_dir, global_batch, log)
        if not ctx.is_main:
            distributed.barrier()  # rank 0 refits, validates and writes the run
            return None
        try:
            return finish(model, train_cases, val_cases, config, device, run_dir, seed, log)
        finally:
            distributed.barrier()
    return finish(model, train_cases, val_cases, config, device, run_dir, seed, log)


def _read_initial_weights(path, config):
    """(state dict, config recording where the weights came from) of a fine-tuning start."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "initial weights not found")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors reports a damaged header in its own words
        raise InputError(path, "not a readable safetensors file ({})".format(error))
    return state, dict(config, init_weights={"file": path.name, "sha256": sha256_of(path)})


def _record_distributed(ctx, model, run_dir, global_batch, log):
    """RUNDIR/distributed.json: how the run was spread, and every rank's weight digest (DDP keeps them equal)."""
    digests = distributed.gather_strings(distributed.weights_digest(model.state_dict()))
    if not ctx.is_main:
        return
    document = {"world_size": ctx.world_size, "backend": ctx.backend, "global_batch": global_batch,
                "weights_sha256_by_rank": digests, "in_sync": len(set(digests)) == 1}
    with open(str(run_dir / "distributed.json"), "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=1)
    if not document["in_sync"]:
        log("warning: ranks ended with different weights; final.safetensors holds rank 0's")


def finish(model, train_cases, val_cases, config, device, run_dir, seed, log):
    """Refit the response pathway on whole cases, choose the risk cutoff, save final weights and run.json."""
    from safetensors.torch import save_file

    train_ids = [c.case_id for c in train_cases]
    if not config.get("whole_case_refit", True):
        # the response pathway is refitted later (``refit``, on statistics computed as prediction computes
        # them): score the validation cases only and leave the cutoff to that step
        train_cases = []
    log("computing whole-case statistics for the response pathway")
    train_rows, train_sums = evaluate_cases(model, train_cases, config, device)
    val_rows, val_sums = evaluate_cases(model, val_cases, config, device)
    model.to("cpu")
    known_train = [i for i, r in enumerate(train_rows) if r["response"] is not None]
    known_val = [i for i, r in enumerate(val_rows) if r["response"] is not None]
    refit = {"kept": False}
    # a segmentation-only baseline's response output is untrained and not reported: leave its head alone
    if config.get("task", "multitask") != "segmentation" and len(known_train) >= 4 \
            and len({train_rows[i]["response"] for i in known_train}) == 2:
        refit = refit_head(model, train_sums[known_train], [train_rows[i]["response"] for i in known_train],
                           val_sums[known_val] if known_val else train_sums[:0],
                           [val_rows[i]["response"] for i in known_val], config, seed)
    if not train_rows:
        refit = {"kept": False, "note": "whole_case_refit is off: refit the response pathway before export"}
    with torch.no_grad():
        train_probs = torch.sigmoid(model.response_logit(train_sums)).numpy() if len(train_rows) else np.array([])
        val_probs = torch.sigmoid(model.response_logit(val_sums)).numpy() if len(val_rows) else np.array([])
    for row, p in zip(train_rows, train_probs):
        row["probability"] = float(p)
    for row, p in zip(val_rows, val_probs):
        row["probability"] = float(p)
    known = [train_rows[i] for i in known_train]
    cutoff, youden_j = (0.5, float("nan"))
    if len({r["response"] for r in known}) == 2:
        cutoff, youden_j = metrics.youden_cutoff([r["response"] for r in known], [r["probability"] for r in known])
    run = {
        "cutoff": cutoff,
        "cutoff_method": "Youden index on the {} training cases' predicted probabilities (J = {:.3f})".format(
            len(known), youden_j),
        "head_refit": refit,
        "metrics": {"train": summarise(train_rows), "validation": summarise(val_rows)},
        "train_cases": train_ids,
        "validation_cases": [c.case_id for c in val_cases],
        "config": config,
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(run_dir / "final.safetensors"))
    with open(str(run_dir / "run.json"), "w", encoding="utf-8") as stream:
        json.dump(run, stream, indent=1)
    log("validation: {}".format(json.dumps(run["metrics"]["validation"])))
    return run

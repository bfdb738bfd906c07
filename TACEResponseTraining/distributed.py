"""Several processes (torchrun) training one model: process group set-up, rank queries, collectives.

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK and MASTER_ADDR; without them everything here is a no-op for a
single process, so the same training code runs either way. A torchrun launch joins a process group even
with one process (same results, and the same code path as with many). Backend: NCCL between GPUs, gloo
between CPU processes.
"""

import datetime
import hashlib
import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from TACEResponseLib.errors import InputError

# rank 0 alone runs validation and the final refit while the others wait in a collective; that can take
# minutes on a large cohort, longer than NCCL's default watchdog (10 min) tolerates
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("TACE_DIST_TIMEOUT_MIN", "120")))


@dataclass(frozen=True)
class Context:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def distributed(self):
        """True once this process has joined a process group."""
        return bool(self.backend)

    @property
    def is_main(self):
        return self.rank == 0


def launched():
    """Started by torchrun (or a launcher that sets the same variables)?"""
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def env_context():
    """Rank and world size as torchrun gives them."""
    return Context(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("WORLD_SIZE", "1")))


def setup(device="auto"):
    """Join the process group when launched by torchrun; return (context, device string for this rank).

    Each GPU process takes the GPU of its LOCAL_RANK, so N processes per node use N GPUs.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not launched():
        return Context(), device
    ctx = env_context()
    if device.startswith("cuda"):
        if torch.cuda.device_count() <= ctx.local_rank:
            raise InputError(None, "LOCAL_RANK {} has no GPU ({} visible): start at most one process per GPU"
                             .format(ctx.local_rank, torch.cuda.device_count()))
        device = "cuda:{}".format(ctx.local_rank)
        torch.cuda.set_device(ctx.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        options = {}
        if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            # torch >= 2.3: binds the group to this rank's GPU (else NCCL guesses it from the rank, and warns)
            options["device_id"] = torch.device("cuda", ctx.local_rank)
        dist.init_process_group(backend, timeout=TIMEOUT, **options)
    return Context(ctx.rank, ctx.local_rank, ctx.world_size, backend), device


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    return rank() == 0


def barrier():
    if active():
        dist.barrier()


def mean_across_ranks(values):
    """Element-wise mean of a list of floats over all ranks (every rank must call it)."""
    if not active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).cpu().tolist()


def weights_digest(tensors):
    """SHA-256 of a state dict (name -> tensor), to check that every rank holds the same model."""
    digest = hashlib.sha256()
    for name, value in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value.detach().cpu().float().numpy()).tobytes())
    return digest.hexdigest()


def gather_strings(text):
    """Every rank's string, in rank order, on every rank."""
    if not active():
        return [text]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, text)
    return out

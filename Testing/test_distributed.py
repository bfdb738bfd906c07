"""Training under torchrun: 2 CPU processes on the gloo backend, a tiny synthetic cohort, 12 steps.

What "the same shape" means for the loss curves, and the curves measured, are in docs/distributed_training.md.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from TACEResponseLib import image_io
from TACEResponseTraining.config import load_config
from TACEResponseTraining.distributed import weights_digest
from TACEResponseTraining.phantoms import generate_cohort
from TACEResponseTraining.train import train

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed with gloo")

STEPS = 12
# tiny on purpose: a 4 mm grid, 32^3 patches and 4..32 channels keep one step well under a second per process
CONFIG = {"spacing_mm": [4.0, 4.0, 4.0], "channels": [4, 8, 16, 32], "head_hidden": 8, "patch_size": [32, 32, 32],
          "batch_size": 2, "steps_per_epoch": 1, "validation_cases_per_epoch": 0, "validation_fraction": 0.2,
          "head_refit_epochs": 20, "learning_rate": 0.003, "num_threads": 1, "tile_size": [64, 64, 64],
          "tile_margin": 8}
QUIET = {"log": lambda *args: None}


def torchrun(*args):
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 ARGS`` (a free port each time)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] + list(args)
    done = subprocess.run(command, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


class ReadCounter:
    """Records the image and label files that dataset preprocessing opens (outermost calls only: read_mask
    may read through read_image)."""

    def __init__(self, monkeypatch):
        self.paths = []
        self.depth = 0
        for name in ("read_image", "read_mask"):
            original = getattr(image_io, name)

            def counted(path, *args, _original=original, **kwargs):
                if not self.depth:
                    self.paths.append(str(path))
                self.depth += 1
                try:
                    return _original(path, *args, **kwargs)
                finally:
                    self.depth -= 1
            monkeypatch.setattr(image_io, name, counted)


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    generate_cohort(root / "synth", 6, seed=3, size_scale=2.0)
    (root / "tiny.json").write_text(json.dumps(CONFIG))
    return root


@pytest.fixture(scope="module")
def single(work):
    """One process, in this process, counting every image and label read."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as monkeypatch:
        reads = ReadCounter(monkeypatch)
        config = load_config(str(work / "tiny.json"), max_steps=STEPS)
        train(work / "synth", work / "single", config, device="cpu", **QUIET)
    torch.set_num_threads(threads)  # the config's num_threads must not leak into later tests
    return work / "single", reads.paths


@pytest.fixture(scope="module")
def pair(work):
    """Two processes through torchrun and the real command line."""
    output = torchrun("-m", "TACEResponseTraining", "train", str(work / "synth"), "-o", str(work / "pair"),
                      "--config", str(work / "tiny.json"), "--max-steps", str(STEPS), "--device", "cpu")
    return work / "pair", output


def test_two_processes_write_once_from_rank_0(pair):
    run_dir, output = pair
    assert {p.name for p in run_dir.iterdir()} == {"cache", "checkpoint", "config.json", "distributed.json",
                                                   "final.safetensors", "history.jsonl", "run.json"}
    # one history line per step (rank 1 writes none), one log line per message (rank 1 logs nothing)
    assert [h["step"] for h in history(run_dir)] == list(range(1, STEPS + 1))
    assert output.count("preprocessing 6 cases") == 1 and output.count("validation: ") == 1
    # the two ranks filled the cache between them: every case once, no temporary file left
    cached = sorted(p.name for p in (run_dir / "cache").rglob("*") if p.is_file())
    assert cached == ["synth_{:04d}.npz".format(i) for i in range(6)]
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["step"] == STEPS and state["world_size"] == 2
    run = json.loads((run_dir / "run.json").read_text())
    assert len(run["train_cases"]) + len(run["validation_cases"]) == 6


def test_ranks_end_with_identical_weights(pair):
    run_dir, _ = pair
    document = json.loads((run_dir / "distributed.json").read_text())
    assert document["world_size"] == 2 and document["backend"] == "gloo" and document["global_batch"] == 4
    digests = document["weights_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1] and document["in_sync"]
    # and the digest is that of the trained weights rank 0 checkpointed at the last step
    assert weights_digest(load_file(str(run_dir / "checkpoint" / "model.safetensors"))) == digests[0]


def test_loss_curves_of_one_and_two_processes_have_the_same_shape(single, pair):
    """Same shape: both fall by >= 0.05 from the first to the last third, by amounts within a factor 2 of each
    other, and their 3-step moving averages stay within 0.15 of each other (measured: drops 0.186 and 0.178,
    largest gap 0.023)."""
    one = np.array([h["seg_loss"] for h in history(single[0])])
    two = np.array([h["seg_loss"] for h in history(pair[0])])
    assert one.shape == two.shape == (STEPS,) and np.isfinite(one).all() and np.isfinite(two).all()
    third = STEPS // 3
    drop_one = one[:third].mean() - one[-third:].mean()
    drop_two = two[:third].mean() - two[-third:].mean()
    assert drop_one >= 0.05 and drop_two >= 0.05, (one, two)
    assert 0.5 <= drop_two / drop_one <= 2.0, (one, two)
    kernel = np.ones(3) / 3
    assert np.abs(np.convolve(one, kernel, "valid") - np.convolve(two, kernel, "valid")).max() <= 0.15, (one, two)
    responses = np.array([h["response_loss"] for h in history(pair[0])])
    assert np.isfinite(responses).all()


def test_torchrun_resume_continues_exactly(work, pair, tmp_path):
    """Two processes interrupted after 6 of 12 steps, resumed with --resume: the weights of 12 steps straight."""
    driver = tmp_path / "interrupted.py"
    driver.write_text(
        "import sys\n"
        "from TACEResponseTraining.config import load_config\n"
        "from TACEResponseTraining.train import train\n"
        "train(sys.argv[1], sys.argv[2], load_config(sys.argv[3], max_steps={}), device='cpu',\n"
        "      cache_dir=sys.argv[4], stop_after_steps=6)\n".format(STEPS))
    straight, _ = pair
    resumed = tmp_path / "resumed"
    common = ["--config", str(work / "tiny.json"), "--max-steps", str(STEPS), "--device", "cpu",
              "--cache", str(straight / "cache")]
    torchrun(str(driver), str(work / "synth"), str(resumed), str(work / "tiny.json"), str(straight / "cache"))
    assert json.loads((resumed / "checkpoint" / "state.json").read_text())["step"] == 6
    assert not (resumed / "final.safetensors").exists()
    torchrun("-m", "TACEResponseTraining", "train", str(work / "synth"), "-o", str(resumed), "--resume", *common)
    a = load_file(str(straight / "checkpoint" / "model.safetensors"))
    b = load_file(str(resumed / "checkpoint" / "model.safetensors"))
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    np.testing.assert_allclose([h["seg_loss"] for h in history(resumed)],
                               [h["seg_loss"] for h in history(straight)], rtol=0, atol=1e-9)


def test_cache_is_read_instead_of_the_images(work, single, pair, tmp_path, monkeypatch):
    """Images and labels are read once per case in a whole run, and never by a run given a filled cache."""
    _, first_reads = single
    assert len(first_reads) == 2 * 6 and len(set(first_reads)) == 2 * 6  # image + label, once per case, 12 epochs
    # a dataset folder holding only its table: images and labels are gone, the cache the two ranks made remains
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dataset.csv").write_text((work / "synth" / "dataset.csv").read_text())
    reads = ReadCounter(monkeypatch)
    threads = torch.get_num_threads()
    try:
        config = load_config(str(work / "tiny.json"), max_steps=2)
        run = train(bare, tmp_path / "again", config, device="cpu", cache_dir=pair[0] / "cache", **QUIET)
    finally:
        torch.set_num_threads(threads)
    assert reads.paths == []
    assert len(run["train_cases"]) + len(run["validation_cases"]) == 6

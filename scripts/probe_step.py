"""Seconds per training step of a config on a device (random data), to size a time-boxed training run.

    python scripts/probe_step.py CONFIG.json [--device cuda] [--steps 20] [--cpu-bf16]
"""

import argparse
import time

import torch

from TACEResponseLib.model_package import build_network
from TACEResponseTraining.config import load_config
from TACEResponseTraining.model_card import network_card


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu-bf16", action="store_true", help="bfloat16 autocast on the CPU")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    config = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_network(network_card(config)).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = args.device.startswith("cuda")
    x = torch.randn([config["batch_size"], len(config["phases"])] + list(config["patch_size"]), device=args.device)
    y = torch.randint(0, 3, [config["batch_size"]] + list(config["patch_size"]), device=args.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for step in range(args.steps + 3):
        if step == 3:  # after warm-up (cuDNN autotuning, allocator)
            if amp:
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device_type="cuda" if amp else "cpu", dtype=torch.float16 if amp else torch.bfloat16,
                            enabled=amp or args.cpu_bf16):
            logits, _, _ = model.forward_maps(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if amp:
        torch.cuda.synchronize()
    print("{:.4f}".format((time.perf_counter() - started) / args.steps))


if __name__ == "__main__":
    main()

"""Training throughput of the built-in U-Net at the shipped models' settings, by memory format and
precision, measured as ratios against plain NCHW float32 in the same run.

Run from the repository root: ``python benchmarks/training.py``. Prints one JSON line:
``steps_per_s`` per variant and ``speedup`` of each variant over NCHW fp32 (width 16, depth 3,
6 bands, batches of 8 chips of 128 px, one CPU thread as ``glacierscale train`` uses by default).
"""

from __future__ import annotations

import json
import time

import torch

from glacierscale.models import UNet
from glacierscale.train.loop import masked_loss

WARMUP, STEPS = 3, 12


def steps_per_s(channels_last: bool, bf16: bool) -> float:
    """Optimiser steps per second of one training variant on seeded random chips."""
    torch.manual_seed(0)
    net = UNet(6, 1, width=16, depth=3)
    x = torch.randn(8, 6, 128, 128)
    t = (torch.rand(8, 1, 128, 128) > 0.5).float()
    w = torch.ones_like(t)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    t0 = 0.0
    for i in range(WARMUP + STEPS):
        if i == WARMUP:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = net(x)
        loss = masked_loss(z, t, w, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return STEPS / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(1)
    variants = {"nchw_fp32": (False, False), "channels_last_fp32": (True, False),
                "channels_last_bf16": (True, True)}
    rates = {name: steps_per_s(*v) for name, v in variants.items()}
    base = rates["nchw_fp32"]
    print(json.dumps({"steps_per_s": {k: round(v, 3) for k, v in rates.items()},
                      "speedup": {k: round(v / base, 3) for k, v in rates.items()},
                      "threads": 1, "batch": 8, "chip_px": 128}))


if __name__ == "__main__":
    main()

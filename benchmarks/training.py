"""The shipped default under domain shift: the stress table, the spectral-points check and the
training throughput, in one run.

Run from the repository root with the sample data in ``../shared/data``:
``python benchmarks/training.py``. It needs no training: the stress test rebuilds every fold model
of the shipped ``default`` from its card, each under the physics floor fitted on its own training
folds (and alone), and predicts the held-out folds of the HLS S30 scene under every shift of
:data:`glacierscale.train.shifts.STRESS_SHIFTS`, and the held-out folds of the HLS L30 and
Sentinel-2 L2A scenes of the same tiles (other sensors). The spectral check applies the default to
the hand-labelled Sentinel-2 points of ../shared/data/spectral_points. The throughput part times
training steps of the U-Net at the shipped settings, as ratios against NCHW fp32 in the same run.

Prints the stress table and the spectral table as Markdown, then ONE JSON line with ``shifts``
(every row: IoU of default, network alone, band ratio, NDSI, margin), ``default_mean_iou``,
``network_mean_iou``, ``baseline_mean_iou`` (mean over rows of the better of band ratio and NDSI),
``worst_shift_margin`` (the default's IoU minus the better baseline, lowest over rows),
``worst_shift``, ``floor_holds``, ``spectral_points`` and ``training_steps_per_s``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch

from glacierscale.config import cache_dir, sample_data_dir
from glacierscale.models import UNet
from glacierscale.train.loop import masked_loss
from glacierscale.train.spectral_check import spectral_check
from glacierscale.train.stress import Scene, markdown, stress_test, summary

WARMUP, STEPS = 3, 12


def steps_per_s(channels_last: bool) -> float:
    """Optimiser steps per second of the shipped U-Net (11 input channels) on seeded chips."""
    torch.manual_seed(0)
    net = UNet(11, 1, width=16, depth=3)
    x = torch.randn(8, 11, 96, 96)
    t = (torch.rand(8, 1, 96, 96) > 0.5).float()
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
        loss = masked_loss(net(x), t, w, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return STEPS / (time.perf_counter() - t0)


def spectral_table(doc: dict) -> str:
    lines = ["| mode | method | snow | shadowed snow | ice | rock (called glacier) | water | "
             "accuracy |", "|---|---|---|---|---|---|---|---|"]
    for mode in ("uniform", "assembled"):
        for name, row in doc[mode].items():
            lines.append(f"| {mode} | {name} | " + " | ".join(
                f"{row[c]:.3f}" for c in ("snow", "shadowed snow", "ice", "rock", "water"))
                + f" | {row['accuracy']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    data = sample_data_dir()
    if data is None:
        sys.exit("the sample data is needed: set GLACIERSCALE_SAMPLE_DATA")
    from glacierscale.demo import athabasca_sample

    sample = athabasca_sample(data, cache_dir())
    t0 = time.perf_counter()

    def scene(name: str, collection: str) -> Scene:
        return Scene(name, sample.catalog, (collection,), sample.start, sample.end)

    rows = stress_test("default", scene("HLS S30 2020-09-09", "HLSS30_2.0"),
                       [scene("HLS L30 2020-08-16 (Landsat 8 OLI)", "HLSL30_2.0"),
                        scene("Sentinel-2 L2A 2020-09-11", "sentinel-2-l2a")])
    t_stress = time.perf_counter() - t0
    points = Path(data) / "spectral_points" / "Sentinel-2_SR_training_data.csv"
    spectral = spectral_check("default", points)
    t_spectral = time.perf_counter() - t0 - t_stress
    rates = {"nchw_fp32": steps_per_s(False), "channels_last_fp32": steps_per_s(True)}
    print(markdown(rows))
    print()
    print(spectral_table(spectral))
    doc = summary(rows)
    doc["spectral_points"] = {
        "points": spectral["points"], "floor_holds": spectral["floor_holds"],
        **{mode: {name: {k: round(v, 4) for k, v in row.items()}
                  for name, row in spectral[mode].items()} for mode in ("uniform", "assembled")}}
    doc["training_steps_per_s"] = {k: round(v, 3) for k, v in rates.items()}
    doc["seconds"] = {"stress": round(t_stress, 1), "spectral": round(t_spectral, 1)}
    print(json.dumps(doc))


if __name__ == "__main__":
    main()

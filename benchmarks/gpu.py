"""GPU inference benchmark: windows/s and GPU utilisation of the U-Net, ready for a GPU machine.

Run from the repository root: ``python benchmarks/gpu.py``. On a machine without a CUDA GPU it says
so plainly and prints a JSON line with ``"gpu": null``. With a GPU it measures, for bf16 (where
supported) and fp16 autocast, channels_last, with and without ``torch.compile``:

* ``raw_windows_per_s``: forward passes alone on device-resident random batches (the ceiling);
* ``engine_windows_per_s``: the whole engine (``predict_tiles``: host tiles, pinned upload on a side
  stream, device-side windows, normalisation, blending, download) on 13-band tiles;
* ``gpu_utilisation``: mean GPU busy percentage during the engine run (NVML, when available).

Model: segmentation-models-pytorch's ResNet34 U-Net when that extra is installed, and the built-in
U-Net with a ResNet34-depth encoder (basic blocks 3-4-6-3). The goal for a ResNet34 U-Net at
512 x 512 with 13 channels is at least 1,000 windows/s on one H100 in bf16.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from glacierscale.config import InferConfig
from glacierscale.infer import Runtime, predict_tiles, probe_capabilities
from glacierscale.models import GlacierModel, ModelCard, TorchModel, seeded_unet
from glacierscale.models.smp import build_smp, smp_available

BANDS13 = ("blue", "green", "red", "nir", "swir16", "swir22", "elevation", "slope", "aspect",
           "hillshade", "curvature", "ndsi", "ndwi")
GOAL = 1000.0


def models() -> dict[str, GlacierModel]:
    out: dict[str, GlacierModel] = {
        "unet-resnet34-depth": seeded_unet(bands=BANDS13, width=32, blocks=(3, 4, 6, 3)),
    }
    if smp_available():
        card = ModelCard(name="smp-unet-resnet34", architecture="smp:Unet", bands=BANDS13,
                         mean=(0.0,) * 13, std=(1.0,) * 13, params={"encoder_name": "resnet34"})
        out["smp-unet-resnet34"] = TorchModel(build_smp("Unet", 13, 1, dict(card.params)), card)
    return out


def gflop_per_window(model: GlacierModel) -> float:
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model.logits(torch.zeros(1, 13, 512, 512))
    return fc.get_total_flops() / 1e9


class Utilisation:
    """Mean GPU busy percentage sampled every 50 ms (NVML through torch, when installed)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(int(torch.cuda.utilization()))
            except Exception:  # no NVML bindings: report None
                return
            time.sleep(0.05)

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def raw_rate(model: GlacierModel, rt: Runtime, batch: int, iters: int) -> float:
    fn = model.logits
    if rt.compile:
        fn = torch.compile(fn)
    x = torch.randn(batch, 13, 512, 512, device=rt.device).contiguous(
        memory_format=torch.channels_last)
    dtype = rt.autocast_dtype
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def engine_rate(model: GlacierModel, rt: Runtime, batch: int, tiles: list[np.ndarray]
                ) -> tuple[float, float | None, int]:
    cfg = InferConfig(batch_size=batch, device=rt.device)
    list(predict_tiles(model, [(0, tiles[0])], cfg, runtime=rt))  # warm-up (and compile)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with Utilisation() as util:
        t0 = time.perf_counter()
        for _, pred in predict_tiles(model, enumerate(tiles), cfg, runtime=rt):
            assert pred.prob.shape == tiles[0].shape[1:]
        seconds = time.perf_counter() - t0
    side = tiles[0].shape[1]
    windows = len(tiles) * (-(-(side - 512) // 256) + 1) ** 2
    return windows / seconds, util.mean, torch.cuda.max_memory_allocated() // 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--tile-size", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()

    caps = probe_capabilities()
    if caps.cuda_devices == 0:
        msg = ("no CUDA GPU is visible here (torch.cuda.is_available() is False), so nothing was "
               "measured: run `python benchmarks/gpu.py` on a GPU machine")
        print(msg)
        print(json.dumps({"gpu": None, "reason": msg, "goal_windows_per_s": GOAL,
                          "results": []}))
        return

    torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    tiles = [rng.normal(size=(13, args.tile_size, args.tile_size)).astype(np.float32)
             for _ in range(args.tiles)]
    precisions = ["bf16", "fp16"] if caps.cuda_bf16 else ["fp16"]
    results: list[dict[str, Any]] = []
    for name, model in models().items():
        gflop = gflop_per_window(model)
        for precision in precisions:
            for compile_ in ([False] if args.no_compile else [False, True]):
                rt = Runtime(device="cuda:0", precision=precision,  # type: ignore[arg-type]
                             channels_last=True, compile=compile_, pin_memory=True, prefetch=2,
                             device_windows=True)
                raw = raw_rate(model, rt, args.batch, args.iters)
                eng, util, mem = engine_rate(model, rt, args.batch, tiles)
                row = {"model": name, "gflop_per_window": round(gflop, 1),
                       "precision": precision, "channels_last": True, "compile": compile_,
                       "batch": args.batch, "raw_windows_per_s": round(raw, 1),
                       "engine_windows_per_s": round(eng, 1),
                       "engine_vs_raw": round(eng / raw, 3),
                       "gpu_utilisation": util, "peak_gpu_mb": mem}
                print(json.dumps(row), flush=True)
                results.append(row)
    best = max(r["engine_windows_per_s"] for r in results)
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "gpus": caps.cuda_devices,
                      "best_engine_windows_per_s": best, "goal_windows_per_s": GOAL,
                      "goal_met": best >= GOAL, "results": results}))


if __name__ == "__main__":
    main()

"""GPU inference benchmark: windows/s and GPU utilisation of the production inference path.

Run from the repository root: ``python benchmarks/gpu.py`` on a GPU machine. It measures, for bf16
(where supported) and fp16 autocast, channels_last, with and without ``torch.compile``:

* ``raw_windows_per_s``: forward passes alone on device-resident random batches (the ceiling);
* ``engine_windows_per_s``: the function the workers call, ``predict_tiles``, on 13-band tiles
  given as deferred reads (each tile is read on the engine's background thread while the device
  works), with the runtime a worker materialises from the run's ``RuntimeChoice``: pinned upload
  on a side stream, device-side windows, normalisation, blending, download;
* ``gpu_utilisation``: mean GPU busy percentage during the engine run (NVML, when available).

Model: segmentation-models-pytorch's ResNet34 U-Net when that extra is installed, and the built-in
U-Net with a ResNet34-depth encoder (basic blocks 3-4-6-3). The goal for a ResNet34 U-Net at
512 x 512 with 13 channels is at least 1,000 windows/s on one H100 in bf16, the GPU busy > 85 %.

``--device cpu`` runs the same code on the CPU at toy sizes (a smoke run, in CI, so that the first
GPU run is not the script's first run); its figures say nothing about GPUs. Without a GPU and
without ``--device cpu`` it says so plainly and prints a JSON line with ``"gpu": null``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from glacierscale.config import InferConfig
from glacierscale.core.windows import WindowLayout
from glacierscale.infer import Runtime, RuntimeChoice, predict_tiles, probe_capabilities
from glacierscale.infer.probe import set_layout
from glacierscale.models import GlacierModel, ModelCard, TorchModel, seeded_unet
from glacierscale.models.smp import build_smp, smp_available

BANDS13 = ("blue", "green", "red", "nir", "swir16", "swir22", "elevation", "slope", "aspect",
           "hillshade", "curvature", "ndsi", "ndwi")
GOAL = 1000.0


def models(width: int, blocks: tuple[int, ...]) -> dict[str, GlacierModel]:
    out: dict[str, GlacierModel] = {
        f"unet-w{width}-blocks{'-'.join(map(str, blocks))}": seeded_unet(
            bands=BANDS13, width=width, depth=len(blocks), blocks=blocks),
    }
    if smp_available() and width >= 32:
        card = ModelCard(name="smp-unet-resnet34", architecture="smp:Unet", bands=BANDS13,
                         mean=(0.0,) * 13, std=(1.0,) * 13, params={"encoder_name": "resnet34"})
        out["smp-unet-resnet34"] = TorchModel(build_smp("Unet", 13, 1, dict(card.params)), card)
    return out


def gflop_per_window(model: GlacierModel, window: int) -> float:
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model.logits(torch.zeros(1, 13, window, window, device=_device_of(model)))
    return fc.get_total_flops() / 1e9


def _device_of(model: GlacierModel) -> torch.device:
    if isinstance(model, torch.nn.Module):
        return next(model.parameters()).device
    return torch.device("cpu")


def _sync(rt: Runtime) -> None:
    if rt.is_cuda:
        torch.cuda.synchronize(rt.torch_device)


class Utilisation:
    """Mean GPU busy percentage sampled every 50 ms (NVML through torch, when installed)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
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
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def raw_rate(model: GlacierModel, rt: Runtime, batch: int, window: int, iters: int) -> float:
    """Forward passes alone, model and input on the runtime's device and memory format."""
    if isinstance(model, torch.nn.Module):
        model.to(rt.torch_device)
    set_layout(model, rt.channels_last)
    fn: Callable[[torch.Tensor], torch.Tensor] = model.logits
    if rt.compile:
        fn = torch.compile(fn, dynamic=False)
    x = torch.randn(batch, 13, window, window, device=rt.torch_device)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = rt.autocast_dtype
    with torch.inference_mode(), torch.autocast(rt.torch_device.type,
                                                dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        for _ in range(2):
            fn(x)
        _sync(rt)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        _sync(rt)
    return batch * iters / (time.perf_counter() - t0)


def _reads(tiles: list[np.ndarray]) -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
    """Deferred reads, as a worker hands them over: the engine calls each when it needs it."""
    for i, tile in enumerate(tiles):
        yield i, partial(np.array, tile, copy=True)  # a copy stands in for the decode


def engine_rate(model: GlacierModel, rt: Runtime, cfg: InferConfig, tiles: list[np.ndarray]
                ) -> tuple[float, float | None, int | None]:
    """The production function over all tiles; (windows/s, GPU busy %, peak device MiB)."""
    list(predict_tiles(model, _reads(tiles[:1]), cfg, runtime=rt))  # warm-up (and compile)
    _sync(rt)
    if rt.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    with Utilisation(rt.is_cuda) as util:
        t0 = time.perf_counter()
        done = 0
        for _, pred in predict_tiles(model, _reads(tiles), cfg, runtime=rt):
            assert pred.prob.shape == tiles[0].shape[1:]
            done += 1
        seconds = time.perf_counter() - t0
    assert done == len(tiles)
    layout = WindowLayout.for_shape(tiles[0].shape[1:], cfg.window_px, cfg.overlap)
    mem = torch.cuda.max_memory_allocated() // 2**20 if rt.is_cuda else None
    return len(tiles) * layout.n_windows / seconds, util.mean, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: a smoke run of the same code at the sizes given (CI)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--tile-size", type=int, default=2048)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--width", type=int, default=32, help="U-Net width (64: ResNet34 widths)")
    ap.add_argument("--blocks", default="3,4,6,3", help="basic blocks per encoder stage")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()

    caps = probe_capabilities()
    if args.device == "cuda" and caps.cuda_devices == 0:
        msg = ("no CUDA GPU is visible here (torch.cuda.is_available() is False), so nothing was "
               "measured: run `python benchmarks/gpu.py` on a GPU machine (or `--device cpu` "
               "for a smoke run)")
        print(msg)
        print(json.dumps({"gpu": None, "reason": msg, "goal_windows_per_s": GOAL,
                          "results": []}))
        return

    cuda = args.device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    tiles = [rng.normal(size=(13, args.tile_size, args.tile_size)).astype(np.float32)
             for _ in range(args.tiles)]
    cfg = InferConfig(batch_size=args.batch, window_px=args.window, device=args.device)
    precisions = (["bf16", "fp16"] if caps.cuda_bf16 else ["fp16"]) if cuda else ["fp32"]
    compiles = [False] if args.no_compile or not cuda else [False, True]
    blocks = tuple(int(b) for b in args.blocks.split(","))
    results: list[dict[str, Any]] = []
    for name, model in models(args.width, blocks).items():
        for precision in precisions:
            choice = RuntimeChoice(args.device, precision, "channels_last")  # type: ignore[arg-type]
            for compile_ in compiles:
                # What a worker does with the run's choice: its own device, threads and pipeline.
                rt = choice.runtime(cfg, compile=compile_)
                raw = raw_rate(model, rt, args.batch, args.window, args.iters)
                eng, util, mem = engine_rate(model, rt, cfg, tiles)
                row = {"model": name, "gflop_per_window": round(gflop_per_window(model,
                                                                                 args.window), 2),
                       "runtime": choice.token(), "compile": compile_,
                       "engine": "device-tile" if rt.device_windows else "host-window",
                       "batch": args.batch, "window": args.window,
                       "raw_windows_per_s": round(raw, 1),
                       "engine_windows_per_s": round(eng, 1),
                       "engine_vs_raw": round(eng / raw, 3),
                       "gpu_utilisation": util, "peak_gpu_mb": mem}
                print(json.dumps(row), flush=True)
                results.append(row)
    best = max(r["engine_windows_per_s"] for r in results)
    print(json.dumps({"gpu": torch.cuda.get_device_name(0) if cuda else None,
                      "device": args.device, "gpus": caps.cuda_devices,
                      "best_engine_windows_per_s": best, "goal_windows_per_s": GOAL,
                      "goal_met": best >= GOAL if cuda else None,
                      "smoke_run": not cuda, "results": results}))


if __name__ == "__main__":
    main()

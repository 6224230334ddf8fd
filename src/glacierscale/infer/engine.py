"""The inference engine: tiles in, blended probabilities out, in bounded memory.

Windows of several tiles are packed into fixed-size batches; each window's probability is
multiplied by a taper weight and accumulated into its tile; a tile is normalised by the accumulated
weight and streamed back as soon as its last window is done.

Two engines share this contract. The host-window engine (:mod:`glacierscale.infer.host`, the CPU
default) reads and packs windows on the host, so lazy inputs are never materialised whole. The
device-tile engine (:mod:`glacierscale.infer.device`, the CUDA default) sends each tile to the
device once and cuts, normalises, blends and accumulates windows there: 2.25x fewer bytes over
PCIe at 50 % overlap and no per-window host work, which is what keeps a GPU busy.

:func:`predict_tiles` is the production path: a worker hands it the tiles it has in hand (arrays,
lazy readers, or deferred reads that the engine runs itself), with the run's runtime, and gets
each tile's prediction back as soon as it is complete. The model is prepared once per process
and runtime (see :func:`glacierscale.infer.prepared.prepare`), however many calls follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from glacierscale.config import InferConfig
from glacierscale.infer.base import Prediction
from glacierscale.infer.device import DeviceEngine
from glacierscale.infer.host import HostEngine
from glacierscale.infer.prepared import prepare
from glacierscale.infer.runtime import Runtime, resolve_runtime
from glacierscale.models import GlacierModel

K = TypeVar("K")

__all__ = ["Prediction", "predict_tile", "predict_tiles"]


def predict_tiles(model: GlacierModel, tiles: Iterable[tuple[K, Any]], cfg: InferConfig, *,
                  runtime: Runtime | None = None, weights: np.ndarray | None = None,
                  on_error: Callable[[K, Exception], None] | None = None,
                  ) -> Iterator[tuple[K, Prediction]]:
    """Predict many tiles, packing windows of consecutive tiles into shared, full batches.

    ``tiles`` yields ``(key, source)``. ``source`` is a (C, H, W) array in ``model.card.bands``
    order (any array-like sliceable by rows: numpy, memory map, dask, or a reader with
    ``read_into``), or a deferred read: a callable without arguments returning one, which the
    engine calls when it needs the tile (on GPU runtimes on a background thread, so reading and
    decoding the next tiles overlaps inference through a bounded queue). Tiles are consumed lazily
    and each ``(key, Prediction)`` is yielded, in input order, as soon as its last window is done,
    so memory does not grow with the number or size of tiles.

    A tile whose read or check fails drops out: ``on_error(key, exc)`` is called (in the caller's
    thread, as soon as the failure is found) and the other tiles go on; without ``on_error`` the
    exception propagates. Errors raised by the ``tiles`` iterator itself always propagate.

    ``runtime`` replaces the device/precision choice made from ``cfg``: a run passes the one its
    :class:`~glacierscale.infer.runtime.RuntimeChoice` gives on the worker (see
    :func:`glacierscale.infer.worker.worker_model`); ``weights``, a positive
    ``(window_px, window_px)`` map, replaces the ``cfg.blend`` taper (e.g.
    ``taper_weights(512, "gaussian", **MONAI)`` for MONAI's exact Gaussian).
    """
    rt = runtime or resolve_runtime(cfg)
    prep = prepare(model, rt, cfg.window_px, cfg.blend, weights)
    engine: DeviceEngine | HostEngine = (DeviceEngine(prep, cfg, on_error) if prep.rt.device_windows
                                        else HostEngine(prep, cfg, on_error))
    yield from engine.run(tiles)


def predict_tile(model: GlacierModel, image: Any, cfg: InferConfig, *,
                 runtime: Runtime | None = None, weights: np.ndarray | None = None) -> Prediction:
    """Predict one tile: ``image`` is float32 (C, H, W) in ``model.card.bands`` order, physical
    units, NaN = no data. Windows of ``cfg.window_px`` with ``cfg.overlap`` are blended with
    ``cfg.blend`` weights; a tile smaller than a window is padded by reflection."""
    for _, pred in predict_tiles(model, [(None, image)], cfg, runtime=runtime, weights=weights):
        return pred
    raise RuntimeError("the engine returned no prediction")  # unreachable: one tile in, one out

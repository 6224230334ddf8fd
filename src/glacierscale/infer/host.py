"""The host-window engine: windows are cut and packed on the host, one batch at a time.

Each tile is read once, in rows (:mod:`glacierscale.infer.strip`): a strip holding one window-row
of the tile, normalised and in the batch's memory layout, slides down the tile, and every window
is a plain copy out of it into its batch slot. Measured on a 4096 x 4096 x 13 GeoTIFF with a
width-8 U-Net (benchmarks/inference.py), the whole input side then costs 15-20 % of the forward
passes' CPU time, and it is shared out over the runtime's threads between forward passes.

Inputs are never materialised whole: memory is one strip (window x width x bands), a read
buffer of a few rows, the batch buffers and one float32 accumulator per tile in flight (plus one
for the uncertainty band), whatever the size or number of tiles. A source with
``read_into(out, row, col)``, which fills a ``(C, h, w)`` float32 array with the block of that
shape at ``(row, col)``, decodes into the engine's reused buffer instead of a new array.

On the CPU rows are normalised as they are read (numpy, which rounds like torch) into a
channels_last strip; on CUDA raw batches go to the device through pinned buffers and a side
stream, and batch k is accumulated while batch k+1 runs.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from glacierscale.config import InferConfig
from glacierscale.core.windows import WindowLayout, normalise_by_weight, reflect_pad, weight_sum
from glacierscale.infer.base import Failed, Prediction, ToleratedErrors, open_tile, prefetched
from glacierscale.infer.prepared import Prepared
from glacierscale.infer.runtime import activate
from glacierscale.infer.strip import RowSplitter, Strip

K = TypeVar("K")
#: Windows per batch at most, counting windows without valid input (which skip the device).
_MAX_ENTRIES = 256
#: Tiles up to this many padded pixels keep their layout's weight sum (16 MB) for the next tile of
#: the same shape; larger ones rebuild it strip by strip (no image-sized array).
_CACHE_WEIGHT_PX = 1 << 22


@dataclass(eq=False)  # identity semantics: tiles are hashed by object
class _Tile(Generic[K]):
    key: K
    source: Any  # (C, H, W) array-like, already padded when smaller than a window
    layout: WindowLayout
    acc: np.ndarray | None = None
    acc_u: np.ndarray | None = None
    done: int = 0
    failed: bool = False


@dataclass
class _Batch:
    """A host batch: ``entries`` are (tile, row, col, slot) in layout order; slot -1 marks a window
    with no valid input, which is not sent to the device."""

    host: torch.Tensor  # (B, C, k, k) float32, pinned on CUDA
    valid: torch.Tensor  # (B, k, k) bool: every band of the pixel is finite
    entries: list[tuple[_Tile[Any], int, int, int]] = field(default_factory=list)
    n: int = 0  # windows packed into ``host``
    all_valid: bool = True


@dataclass
class _Launched:
    batch: _Batch
    prob: torch.Tensor  # (n, k, k) weighted probability, host
    unc: torch.Tensor | None
    event: Any = None  # CUDA event marking the device-to-host copy


class HostEngine:
    """One engine run over host-packed windows: a prepared model and a batch geometry."""

    def __init__(self, prep: Prepared, cfg: InferConfig,
                 on_error: Callable[[Any, Exception], None] | None = None) -> None:
        rt = prep.rt
        self.cfg, self.rt = cfg, rt
        self.k = cfg.window_px
        self.prep = prep
        self.on_error = on_error
        self.channels = len(prep.model.card.bands)
        self.with_unc = self.prep.sampled
        self.normalise = prep.normalise_on_host
        # CPU batches are packed channels_last: oneDNN's first convolution would otherwise
        # reorder an NCHW batch itself (~0.4 CPU-s per batch of 8 x 13 x 512^2, 30 % of a
        # width-8 U-Net's forward). CUDA batches go raw and NCHW; the device converts them.
        self.nhwc = rt.channels_last and self.normalise
        # Bounded pool of host batch buffers: assembly blocks when all are in use. CUDA keeps one
        # batch in flight while the next is launched; the CPU finishes each batch at once.
        self.deferred = rt.is_cuda
        self.pool: queue.Queue[tuple[torch.Tensor, torch.Tensor]] = queue.Queue()
        b, c, k = cfg.batch_size, self.channels, self.k
        for _ in range(rt.prefetch + (2 if self.deferred else 1)):
            buf = torch.empty((b, c, k, k), dtype=torch.float32, pin_memory=rt.pin_memory)
            if self.nhwc:
                buf = buf.contiguous(memory_format=torch.channels_last)
            valid = torch.empty((b, k, k), dtype=torch.bool, pin_memory=rt.pin_memory)
            self.pool.put((buf, valid))
        # Input work runs between forward passes, on the threads the forward passes use.
        self.split = RowSplitter(1 if rt.is_cuda else rt.threads or 1)
        self.strip = Strip(k, c, self.nhwc, prep.mean_np if self.normalise else None,
                           prep.std_np if self.normalise else None, self.split)
        self._wsum: tuple[WindowLayout, np.ndarray] | None = None

    # -- tiles and windows ------------------------------------------------------------------------
    def _tile(self, key: Any, image: Any) -> _Tile[Any]:
        image = open_tile(self.prep.model, image)
        layout = WindowLayout.for_shape((int(image.shape[1]), int(image.shape[2])), self.k,
                                        self.cfg.overlap)
        source = image
        if any(layout.pad):
            source = reflect_pad(np.asarray(image, dtype=np.float32), layout.pad)
        return _Tile(key, source, layout)

    def _slot(self, batch: _Batch) -> np.ndarray:
        slot = batch.host[batch.n]
        return slot.permute(1, 2, 0).numpy() if self.nhwc else slot.numpy()

    def _assemble(self, tiles: Iterable[tuple[Any, Any]]) -> Iterator[_Batch | Failed]:
        batch: _Batch | None = None
        for key, image in tiles:
            tile: _Tile[Any] | None = None
            try:
                tile = self._tile(key, image)
                width = tile.layout.padded_shape[1]
                for r in tile.layout.rows:
                    self.strip.move_to(tile, tile.source, width, r)
                    for c in tile.layout.cols:
                        if batch is None:
                            batch = _Batch(*self.pool.get())
                        self._pack(batch, tile, r, c)
                        # Empty windows count too, so all-NaN tiles cannot pile up in memory.
                        if batch.n == self.cfg.batch_size or len(batch.entries) >= _MAX_ENTRIES:
                            yield batch
                            batch = None
            except ToleratedErrors as exc:
                # The tile drops out (its windows already packed are ignored); the others go on.
                if tile is not None:
                    tile.failed = True
                self.strip.forget()
                yield Failed(key, exc)
        if batch is not None:
            yield batch

    def _pack(self, batch: _Batch, tile: _Tile[Any], r: int, c: int) -> None:
        valid = self.strip.window(c)[1]
        if not self.strip.all_valid:
            if not valid.any():
                # No valid input: the network has nothing to say, the output stays NaN.
                batch.entries.append((tile, r, c, -1))
                return
            batch.all_valid = batch.all_valid and bool(valid.all())
        self.strip.copy_window(self._slot(batch), c)
        batch.valid[batch.n].numpy()[...] = valid
        batch.entries.append((tile, r, c, batch.n))
        batch.n += 1

    # -- device -----------------------------------------------------------------------------------
    def _launch(self, batch: _Batch) -> _Launched:
        if batch.n == 0:
            return _Launched(batch, torch.empty(0), None)
        valid = None if batch.all_valid else batch.valid[:batch.n]
        prob, unc, event = self.prep.run(batch.host[:batch.n], valid)
        return _Launched(batch, prob, unc, event)

    def _finish(self, job: _Launched) -> list[_Tile[Any]]:
        if job.event is not None:
            job.event.synchronize()
        k = self.k
        touched: list[_Tile[Any]] = []
        prob = job.prob.numpy() if job.prob.numel() else None
        unc = job.unc.numpy() if job.unc is not None else None
        for tile, r, c, slot in job.batch.entries:
            if tile.failed:
                continue
            self._alloc(tile)
            assert tile.acc is not None
            if slot >= 0:
                assert prob is not None
                tile.acc[r:r + k, c:c + k] += prob[slot]
                if unc is not None and tile.acc_u is not None:
                    tile.acc_u[r:r + k, c:c + k] += unc[slot]
            else:
                tile.acc[r:r + k, c:c + k] = np.nan
                if tile.acc_u is not None:
                    tile.acc_u[r:r + k, c:c + k] = np.nan
            tile.done += 1
            touched.append(tile)
        self.pool.put((job.batch.host, job.batch.valid))
        return [t for t in dict.fromkeys(touched) if t.done == t.layout.n_windows]

    def _alloc(self, tile: _Tile[Any]) -> None:
        if tile.acc is None:
            tile.acc = np.zeros(tile.layout.padded_shape, dtype=np.float32)
            if self.with_unc:
                tile.acc_u = np.zeros(tile.layout.padded_shape, dtype=np.float32)

    def _normalise(self, layout: WindowLayout, accs: list[np.ndarray]) -> None:
        """Divide by the accumulated weight: bit-identical whichever way it is computed."""
        ph, pw = layout.padded_shape
        if ph * pw > _CACHE_WEIGHT_PX:
            normalise_by_weight(layout, self.prep.weights_np, *accs)
            return
        if self._wsum is None or self._wsum[0] != layout:
            self._wsum = (layout, weight_sum(layout, self.prep.weights_np))
        for acc in accs:
            np.divide(acc, self._wsum[1], out=acc)

    def _result(self, tile: _Tile[Any]) -> Prediction:
        t, _, lft, _ = tile.layout.pad
        h, w = tile.layout.shape
        crop = (slice(t, t + h), slice(lft, lft + w))
        assert tile.acc is not None
        accs = [tile.acc] if tile.acc_u is None else [tile.acc, tile.acc_u]
        self._normalise(tile.layout, accs)

        def done(acc: np.ndarray) -> np.ndarray:
            out = acc[crop]
            np.clip(out, 0.0, 1.0, out=out)
            return np.ascontiguousarray(out)  # no copy unless the tile was padded

        prob = done(tile.acc)
        unc = done(tile.acc_u) if tile.acc_u is not None else None
        tile.acc = tile.acc_u = None
        return Prediction(prob, unc, self.cfg.threshold)

    def _failed(self, item: Failed) -> None:
        if self.on_error is None:
            raise item.error
        self.on_error(item.key, item.error)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, tiles: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Prediction]]:
        activate(self.rt)
        batches: Iterator[_Batch | Failed] = self._assemble(tiles)
        if self.rt.prefetch > 0:
            batches = prefetched(batches, self.rt.prefetch)
        pending: _Launched | None = None
        try:
            with torch.inference_mode():
                for batch in batches:
                    if isinstance(batch, Failed):
                        self._failed(batch)
                        continue
                    launched = self._launch(batch)
                    if not self.deferred:
                        for tile in self._finish(launched):
                            yield tile.key, self._result(tile)
                        continue
                    # Accumulate batch k while the device runs batch k + 1.
                    if pending is not None:
                        for tile in self._finish(pending):
                            yield tile.key, self._result(tile)
                    pending = launched
                if pending is not None:
                    for tile in self._finish(pending):
                        yield tile.key, self._result(tile)
        finally:
            close: Callable[[], None] | None = getattr(batches, "close", None)
            if close is not None:
                close()
            self.split.close()

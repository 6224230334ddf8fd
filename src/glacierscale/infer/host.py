"""The host-window engine: windows are read and packed on the host, one batch at a time.

Inputs are read window by window, so a lazy array (a memory map, a dask array, a windowed COG
reader) is never materialised whole: memory is one float32 accumulator per tile in flight (plus
one for the uncertainty band) and a few batch buffers, whatever the size or number of tiles. A
source with ``read_into(out, row, col)``, which fills a ``(C, k, k)`` float32 array with the window
at ``(row, col)``, decodes into a reused buffer instead of a new array per window.

On the CPU windows are normalised while they are packed, into a channels_last batch; on CUDA raw
batches go to the device through pinned buffers and a side stream, and batch k is accumulated
while batch k+1 runs.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from glacierscale.config import InferConfig
from glacierscale.core.windows import WindowLayout, normalise_by_weight, reflect_pad
from glacierscale.infer.base import Prediction, check_image, prefetched
from glacierscale.infer.prepared import Prepared
from glacierscale.infer.runtime import activate

K = TypeVar("K")
#: Windows per batch at most, counting windows without valid input (which skip the device).
_MAX_ENTRIES = 256


@dataclass(eq=False)  # identity semantics: tiles are hashed by object
class _Tile(Generic[K]):
    key: K
    source: Any  # (C, H, W) array-like, already padded when smaller than a window
    layout: WindowLayout
    acc: np.ndarray | None = None
    acc_u: np.ndarray | None = None
    done: int = 0


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

    def __init__(self, prep: Prepared, cfg: InferConfig) -> None:
        rt = prep.rt
        self.cfg, self.rt = cfg, rt
        self.k = cfg.window_px
        self.prep = prep
        self.channels = len(prep.model.card.bands)
        self.with_unc = self.prep.sampled
        # Bounded pool of host batch buffers: assembly blocks when all are in use. CUDA keeps one
        # batch in flight while the next is launched; the CPU finishes each batch at once.
        self.deferred = rt.is_cuda
        # CPU batches are packed channels_last: oneDNN's first convolution would otherwise
        # reorder an NCHW batch itself, which measured ~0.4 CPU-s per batch of 8 x 13 x 512^2,
        # 30 % of a width-8 U-Net's forward; the transposing copy while packing costs a fifth.
        self.nhwc = rt.channels_last and prep.normalise_on_host
        self.pool: queue.Queue[tuple[torch.Tensor, torch.Tensor]] = queue.Queue()
        b, c, k = cfg.batch_size, self.channels, self.k
        for _ in range(rt.prefetch + (2 if self.deferred else 1)):
            buf = torch.empty((b, c, k, k), dtype=torch.float32, pin_memory=rt.pin_memory)
            if self.nhwc:
                buf = buf.contiguous(memory_format=torch.channels_last)
            valid = torch.empty((b, k, k), dtype=torch.bool, pin_memory=rt.pin_memory)
            self.pool.put((buf, valid))
        # Window scratch (C, k, k): readers decode into it, normalisation happens in it.
        self.scratch = np.empty((c, k, k), dtype=np.float32)

    # -- tiles and windows ------------------------------------------------------------------------
    def _tile(self, key: Any, image: Any) -> _Tile[Any]:
        check_image(self.prep.model, image)
        layout = WindowLayout.for_shape((int(image.shape[1]), int(image.shape[2])), self.k,
                                        self.cfg.overlap)
        source = image
        if any(layout.pad):
            source = reflect_pad(np.asarray(image, dtype=np.float32), layout.pad)
        return _Tile(key, source, layout)

    def _assemble(self, tiles: Iterable[tuple[Any, Any]]) -> Iterator[_Batch]:
        batch: _Batch | None = None
        k = self.k
        for key, image in tiles:
            tile = self._tile(key, image)
            for r, c in tile.layout.windows():
                if batch is None:
                    batch = _Batch(*self.pool.get())
                slot = batch.host[batch.n]
                read_into = getattr(tile.source, "read_into", None)
                if read_into is not None:
                    # A window reader decodes in place: no allocation per window.
                    win = slot.numpy() if not self.nhwc else self.scratch
                    read_into(win, r, c)
                else:
                    win = np.asarray(tile.source[:, r:r + k, c:c + k], dtype=np.float32)
                # numpy, not torch: torch.isfinite is ~50x slower on these arrays.
                valid = np.isfinite(win).all(axis=0)
                if not valid.any():
                    # No valid input: the network has nothing to say, the output stays NaN.
                    batch.entries.append((tile, r, c, -1))
                else:
                    self._pack(slot, win, bool(valid.all()))
                    batch.valid[batch.n].numpy()[...] = valid
                    batch.all_valid = batch.all_valid and bool(valid.all())
                    batch.entries.append((tile, r, c, batch.n))
                    batch.n += 1
                # Empty windows count too, so all-NaN tiles cannot pile up in memory.
                if batch.n == self.cfg.batch_size or len(batch.entries) >= _MAX_ENTRIES:
                    yield batch
                    batch = None
        if batch is not None:
            yield batch

    def _pack(self, slot: torch.Tensor, win: np.ndarray, all_valid: bool) -> None:
        """Copy a window into its batch slot (``win`` may already be the slot); on the CPU
        normalise it on the way (numpy's float32 arithmetic rounds exactly like torch's
        ``(x - mean) / std``), then transpose it into the channels_last batch."""
        prep = self.prep
        if not prep.normalise_on_host:
            out = slot.numpy()
            if win is not out:
                np.copyto(out, win)
            return
        out = self.scratch if self.nhwc else slot.numpy()
        np.subtract(win, prep.mean_np, out=out)
        np.divide(out, prep.std_np, out=out)
        if not all_valid:
            np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if self.nhwc:
            slot.copy_(torch.from_numpy(out))

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

    def _result(self, tile: _Tile[Any]) -> Prediction:
        t, _, lft, _ = tile.layout.pad
        h, w = tile.layout.shape
        crop = (slice(t, t + h), slice(lft, lft + w))
        assert tile.acc is not None
        accs = [tile.acc] if tile.acc_u is None else [tile.acc, tile.acc_u]
        normalise_by_weight(tile.layout, self.prep.weights_np, *accs)

        def done(acc: np.ndarray) -> np.ndarray:
            out = acc[crop]
            np.clip(out, 0.0, 1.0, out=out)
            return np.ascontiguousarray(out)  # no copy unless the tile was padded

        prob = done(tile.acc)
        unc = done(tile.acc_u) if tile.acc_u is not None else None
        tile.acc = tile.acc_u = None
        return Prediction(prob, unc, self.cfg.threshold)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, tiles: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Prediction]]:
        activate(self.rt)
        batches = self._assemble(tiles)
        if self.rt.prefetch > 0:
            batches = prefetched(batches, self.rt.prefetch)
        pending: _Launched | None = None
        try:
            with torch.inference_mode():
                for batch in batches:
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

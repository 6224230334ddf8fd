"""The device-tile engine: each tile crosses to the device once; windows never touch the host.

A tile is copied into page-locked memory and sent to the device on a side stream (on a background
thread when prefetching), then normalised there once. Batches are cut from the resident tiles with
``torch.stack``, scored, weighted and accumulated into a device accumulator; a finished tile is
normalised by its (cached, device-resident) weight sum and copied back asynchronously while the
next batch runs. At 50 % overlap this moves 2.25x fewer bytes to the device than shipping windows,
and leaves the host nothing to do per window: what a GPU needs to stay busy.

Tiles may be deferred reads (callables): they are read on the prefetching thread, so reading and
decoding the next tiles overlaps the device's work through a bounded queue; a tile whose read
fails drops out (reported to ``on_error``) and the others go on.

The same code runs on the CPU (``Runtime(device_windows=True)``), where it gives bit-identical
results to the host-window engine; that is how its logic is tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from glacierscale.config import InferConfig
from glacierscale.core.windows import WindowLayout, reflect_pad
from glacierscale.infer.base import Failed, Prediction, ToleratedErrors, open_tile, prefetched
from glacierscale.infer.prepared import Prepared
from glacierscale.infer.runtime import activate


@dataclass(eq=False)  # identity semantics: tiles are hashed by object
class _DevTile:
    key: Any
    layout: WindowLayout
    x: torch.Tensor  # (C, Hp, Wp): raw until ready, then normalised in place
    has_invalid: bool
    runs: int  # windows sent to the network
    skipped: list[tuple[int, int]]  # windows without a valid pixel: output NaN, no compute
    valid: torch.Tensor | None  # (Hp, Wp) bool, only when some pixel is invalid
    seq: int
    event: Any = None  # CUDA event: upload finished
    acc: torch.Tensor | None = None
    acc_u: torch.Tensor | None = None
    ready: bool = False
    done: int = 0


@dataclass
class _Done:
    tile: _DevTile
    prob: torch.Tensor
    unc: torch.Tensor | None
    event: Any


class DeviceEngine:
    """One engine run over device-resident tiles."""

    def __init__(self, prep: Prepared, cfg: InferConfig,
                 on_error: Callable[[Any, Exception], None] | None = None) -> None:
        self.prep, self.cfg, self.rt = prep, cfg, prep.rt
        self.on_error = on_error
        self.k = cfg.window_px
        self.dev = self.rt.torch_device
        self.with_unc = prep.sampled
        self._wsum: tuple[tuple[int, int], torch.Tensor] | None = None
        self._seq = 0

    # -- producer: tiles to the device, windows into batches --------------------------------------
    def _load(self, key: Any, image: Any) -> tuple[_DevTile, list[tuple[int, int]]]:
        image = open_tile(self.prep.model, image)
        layout = WindowLayout.for_shape((int(image.shape[1]), int(image.shape[2])), self.k,
                                        self.cfg.overlap)
        arr = np.asarray(image, dtype=np.float32)
        if any(layout.pad):
            arr = reflect_pad(arr, layout.pad)
        finite = np.asarray(np.isfinite(arr).all(axis=0))
        k = self.k
        runs: list[tuple[int, int]] = []
        skipped: list[tuple[int, int]] = []
        for r, c in layout.windows():
            (runs if finite[r:r + k, c:c + k].any() else skipped).append((r, c))
        has_invalid = not bool(finite.all())
        host = torch.from_numpy(np.ascontiguousarray(arr))
        valid = torch.from_numpy(finite) if has_invalid else None
        event = None
        if self.rt.is_cuda:
            staged = host.pin_memory()
            staged_valid = valid.pin_memory() if valid is not None else None
            with torch.cuda.stream(self.prep.copy_stream):
                x = staged.to(self.dev, non_blocking=True)
                if staged_valid is not None:
                    valid = staged_valid.to(self.dev, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.prep.copy_stream)
        else:
            x = host.clone()  # normalised in place below: never touch the caller's array
        self._seq += 1
        tile = _DevTile(key, layout, x, has_invalid, len(runs), skipped, valid, self._seq, event)
        return tile, runs

    def _batches(self, tiles: Iterable[tuple[Any, Any]]
                 ) -> Iterator[tuple[list[_DevTile], list[tuple[_DevTile, int, int]]] | Failed]:
        entries: list[tuple[_DevTile, int, int]] = []
        new: list[_DevTile] = []
        for key, image in tiles:
            try:
                tile, runs = self._load(key, image)
            except ToleratedErrors as exc:  # the tile drops out before any window is batched
                yield Failed(key, exc)
                continue
            new.append(tile)
            for r, c in runs:
                entries.append((tile, r, c))
                if len(entries) == self.cfg.batch_size:
                    yield new, entries
                    entries, new = [], []
        if entries or new:
            yield new, entries

    # -- consumer: score, accumulate, finish ------------------------------------------------------
    def _ready(self, tile: _DevTile) -> None:
        if tile.ready:
            return
        if tile.event is not None:
            compute = torch.cuda.current_stream(self.dev)
            compute.wait_event(tile.event)
            tile.x.record_stream(compute)
            if tile.valid is not None:
                tile.valid.record_stream(compute)
        self.prep.normalise(tile.x, tile.has_invalid)
        shape = tile.layout.padded_shape
        tile.acc = torch.zeros(shape, dtype=torch.float32, device=self.dev)
        if self.with_unc:
            tile.acc_u = torch.zeros(shape, dtype=torch.float32, device=self.dev)
        k = self.k
        for r, c in tile.skipped:
            tile.acc[r:r + k, c:c + k] = float("nan")
            if tile.acc_u is not None:
                tile.acc_u[r:r + k, c:c + k] = float("nan")
        tile.ready = True

    def _weight_sum(self, layout: WindowLayout) -> torch.Tensor:
        """Accumulated window weight, summed in layout order like the scores (cached per shape)."""
        shape = layout.padded_shape
        if self._wsum is None or self._wsum[0] != shape:
            w = torch.zeros(shape, dtype=torch.float32, device=self.dev)
            k = self.k
            for r, c in layout.windows():
                w[r:r + k, c:c + k] += self.prep.weights
            self._wsum = (shape, w)
        return self._wsum[1]

    def _launch(self, new: list[_DevTile], entries: list[tuple[_DevTile, int, int]]
                ) -> list[_Done]:
        for tile in new:
            self._ready(tile)
        k = self.k
        # Completed tiles go back in input order, whichever batch entry finished them.
        touched = sorted(dict.fromkeys([t for t, _, _ in entries] + new), key=lambda t: t.seq)
        if entries:
            xb = torch.stack([t.x[:, r:r + k, c:c + k] for t, r, c in entries])
            vb = None
            if any(t.valid is not None for t, _, _ in entries):
                ones = torch.ones((k, k), dtype=torch.bool, device=self.dev)
                vb = torch.stack([t.valid[r:r + k, c:c + k] if t.valid is not None else ones
                                  for t, r, c in entries])
            prob, unc = self.prep.score(xb, vb)
            for i, (t, r, c) in enumerate(entries):
                assert t.acc is not None
                t.acc[r:r + k, c:c + k] += prob[i]
                if unc is not None and t.acc_u is not None:
                    t.acc_u[r:r + k, c:c + k] += unc[i]
                t.done += 1
        return [self._complete(t) for t in touched if t.done == t.runs]

    def _complete(self, tile: _DevTile) -> _Done:
        t, _, lft, _ = tile.layout.pad
        h, w = tile.layout.shape
        wsum = self._weight_sum(tile.layout)[t:t + h, lft:lft + w]

        def norm(acc: torch.Tensor) -> torch.Tensor:
            out = (acc[t:t + h, lft:lft + w] / wsum).clamp_(0.0, 1.0)
            return self.prep.download(out) if self.rt.is_cuda else out

        assert tile.acc is not None
        prob = norm(tile.acc)
        unc = norm(tile.acc_u) if tile.acc_u is not None else None
        event = self.prep.record() if self.rt.is_cuda else None
        tile.acc = tile.acc_u = tile.valid = None
        return _Done(tile, prob, unc, event)

    def _result(self, done: _Done) -> tuple[Any, Prediction]:
        if done.event is not None:
            done.event.synchronize()
        # Copy out of page-locked memory: results may be kept for long, pinned pages are scarce.
        prob = np.array(done.prob.numpy(), dtype=np.float32)
        unc = np.array(done.unc.numpy(), dtype=np.float32) if done.unc is not None else None
        return done.tile.key, Prediction(prob, unc, self.cfg.threshold)

    def run(self, tiles: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Prediction]]:
        activate(self.rt)
        batches: Iterator[Any] = self._batches(tiles)
        if self.rt.prefetch > 0:
            batches = prefetched(batches, self.rt.prefetch)
        pending: list[_Done] = []
        try:
            with torch.inference_mode():
                for item in batches:
                    if isinstance(item, Failed):
                        if self.on_error is None:
                            raise item.error
                        self.on_error(item.key, item.error)
                        continue
                    finished = self._launch(*item)
                    # Hand back tiles of the previous batch while the device runs this one.
                    for done in pending:
                        yield self._result(done)
                    pending = finished
                for done in pending:
                    yield self._result(done)
        finally:
            close: Callable[[], None] | None = getattr(batches, "close", None)
            if close is not None:
                close()

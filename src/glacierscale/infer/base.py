"""What the engines share: the prediction value, tile inputs, failures, the prefetching thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from glacierscale.models import GlacierModel

T = TypeVar("T")


@dataclass
class Prediction:
    """Blended output of one tile.

    ``prob``: float32 (H, W) glacier probability in [0, 1], NaN where any input band was NaN.
    ``uncertainty``: float32 (H, W) standard deviation of the probability across samples (ensemble
    members, TTA, MC dropout), taken per window and blended like the probability; NaN where
    invalid; None for single-sample models. ``threshold`` is the run's decision threshold.
    """

    prob: np.ndarray
    uncertainty: np.ndarray | None = None
    threshold: float = 0.5

    @property
    def valid(self) -> np.ndarray:
        """True where the output is defined (all input bands were valid)."""
        return np.isfinite(self.prob)

    def mask(self, threshold: float | None = None, nodata: int = 255) -> np.ndarray:
        """uint8 glacier mask: 1 where ``prob >= threshold``, 0 elsewhere, ``nodata`` if invalid."""
        t = self.threshold if threshold is None else threshold
        with np.errstate(invalid="ignore"):
            out = (self.prob >= t).astype(np.uint8)
        out[~np.isfinite(self.prob)] = nodata
        return out

    def bands(self) -> tuple[np.ndarray, tuple[str, ...]]:
        """(stack, names): probability and, if present, uncertainty as a (B, H, W) float32 stack."""
        if self.uncertainty is None:
            return self.prob[None], ("probability",)
        return np.stack([self.prob, self.uncertainty]), ("probability", "uncertainty")


#: What a tile's read may raise without stopping the other tiles (reported to ``on_error``).
ToleratedErrors: tuple[type[Exception], ...] = (Exception,)


@dataclass(frozen=True)
class Failed:
    """A tile that dropped out: its key and why (handed to the caller's ``on_error``)."""

    key: Any
    error: Exception


def open_tile(model: GlacierModel, source: Any) -> Any:
    """The (C, H, W) array-like of a tile: ``source`` itself, or what it returns when it is a
    deferred read (a callable without arguments, run by the engine where reading overlaps the
    device's work), checked against the model's bands."""
    image = source() if callable(source) and not hasattr(source, "shape") else source
    check_image(model, image)
    return image


def check_image(model: GlacierModel, image: Any) -> None:
    shape = getattr(image, "shape", None)
    bands = model.card.bands
    if shape is None or len(shape) != 3:
        raise ValueError(f"image must be a (bands, height, width) array, got shape {shape}")
    if shape[0] != len(bands):
        raise ValueError(f"image has {shape[0]} bands but model {model.card.name!r} expects "
                         f"{len(bands)} {list(bands)}; select them with "
                         "model.card.band_indices(your_band_names)")
    if shape[1] < 1 or shape[2] < 1:
        raise ValueError(f"image is empty: shape {tuple(shape)}")


def prefetched(gen: Iterator[T], depth: int) -> Iterator[T]:
    """Run a batch generator on a background thread, ``depth`` batches ahead (reading and packing
    overlap the device's work). Errors are re-raised in the consumer; closing stops the thread."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    th = threading.Thread(target=work, name="glacierscale-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()

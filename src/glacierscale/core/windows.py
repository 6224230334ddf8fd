"""Sliding-window layout and taper weights: the pure numerics of blended tiled inference.

A tile is covered by square windows laid out on a regular stride; each window's prediction is
multiplied by a weight map that tapers towards the window edges, accumulated as ``score x weight``
and ``weight``, and finally normalised. The accumulated weight depends only on the layout
(:func:`weight_sum`, or strip by strip in :func:`normalise_by_weight`).

The layout follows MONAI's ``sliding_window_inference`` exactly (stride ``int(window * (1 -
overlap))``, last window clamped to the edge). The default Gaussian is narrower than MONAI's
(sigma = window / 10 instead of / 8) and has no floor (MONAI clamps weights at 1e-3): measured on
real imagery with the project's U-Net (benchmarks/inference.py), blended 512 px windows at 50 %
overlap then differ from whole-image inference ~6x less. The floor is what hurts most: it lets a
window's edge pixels, whose context is cut, outweigh the well-placed window where that one's weight
is small. MONAI's exact weights remain available as ``taper_weights(k, "gaussian", **MONAI)``.
Without a floor every pixel is still normalisable: the smallest weight, at a window corner, is
``exp(-25)`` for any window size, far above float32's underflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

BlendKind = Literal["gaussian", "cosine", "uniform"]

#: Gaussian sigma as a fraction of the window size.
SIGMA_SCALE = 0.1
#: Floor under the taper weights (none by default; see the module notes).
MIN_WEIGHT = 0.0
#: MONAI's Gaussian importance map (``compute_importance_map``): sigma = window / 8, floor 1e-3.
MONAI = {"sigma_scale": 0.125, "min_weight": 1e-3}


def stride_for(window_px: int, overlap: float) -> int:
    """Step between window starts for a window size and an overlap fraction in [0, 1)."""
    if window_px <= 0:
        raise ValueError(f"window_px must be positive, got {window_px}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}; e.g. 0.5 for half a window")
    return max(int(window_px * (1.0 - overlap)), 1)


def window_starts(size: int, window_px: int, stride: int) -> np.ndarray:
    """Start offsets along one axis: multiples of ``stride``, the last clamped to end at ``size``.

    ``size`` must be at least ``window_px`` (pad smaller images first, see :func:`padded_size`).
    """
    if size < window_px:
        raise ValueError(f"axis of {size} px is smaller than the {window_px} px window; "
                         "pad it first")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if size == window_px:
        return np.zeros(1, dtype=np.int64)
    n = -(-(size - window_px) // stride) + 1  # ceil((size - window) / stride) + 1
    starts = np.arange(n, dtype=np.int64) * stride
    return np.minimum(starts, size - window_px)


@lru_cache(maxsize=32)
def _profile_cached(window_px: int, kind: str, sigma_scale: float) -> np.ndarray:
    if kind == "uniform":
        prof = np.ones(window_px, dtype=np.float64)
    elif kind == "gaussian":
        x = np.arange(window_px, dtype=np.float64) - (window_px - 1) / 2.0
        sigma = sigma_scale * window_px
        prof = np.exp(-(x**2) / (2.0 * sigma**2))
    elif kind == "cosine":
        # Hann window sampled at pixel centres: smooth, exactly 1 at the centre, ~0 at the edges.
        x = (np.arange(window_px, dtype=np.float64) + 0.5) / window_px
        prof = np.sin(np.pi * x) ** 2
    else:
        raise ValueError(f"unknown blend {kind!r}; use 'gaussian', 'cosine' or 'uniform'")
    prof = prof.astype(np.float32)
    prof.flags.writeable = False
    return prof


def taper_profile(window_px: int, kind: BlendKind = "gaussian",
                  sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """1-D weight profile of a window (float32, length ``window_px``, read-only); the 2-D weight
    map is its outer product (see :func:`taper_weights`)."""
    return _profile_cached(int(window_px), str(kind), float(sigma_scale))


def taper_weights(window_px: int, kind: BlendKind = "gaussian",
                  sigma_scale: float = SIGMA_SCALE, min_weight: float = MIN_WEIGHT) -> np.ndarray:
    """2-D weight map (float32, ``(window_px, window_px)``) that tapers to the window edges:
    ``outer(profile, profile)``, floored at ``min_weight``."""
    p = taper_profile(window_px, kind, sigma_scale)
    w = np.outer(p, p).astype(np.float32)
    if kind != "uniform" and min_weight > 0:
        np.maximum(w, np.float32(min_weight), out=w)
    return w


@dataclass(frozen=True)
class WindowLayout:
    """Windows covering an image of ``shape`` (after padding small axes up to one window).

    ``rows`` and ``cols`` are the start offsets along each axis; the windows are their product, in
    row-major order. ``pad`` is (top, bottom, left, right) reflection padding applied to images
    smaller than a window; outputs are cropped back by the same amounts.
    """

    shape: tuple[int, int]
    window_px: int
    stride: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    pad: tuple[int, int, int, int]

    @classmethod
    def for_shape(cls, shape: tuple[int, int], window_px: int, overlap: float) -> WindowLayout:
        """Layout for an image of ``shape`` (H, W), windows of ``window_px`` and an overlap."""
        h, w = (int(s) for s in shape)
        if h <= 0 or w <= 0:
            raise ValueError(f"image shape must be positive, got {shape}")
        stride = stride_for(window_px, overlap)
        dh, dw = max(window_px - h, 0), max(window_px - w, 0)
        pad = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
        ph, pw = h + dh, w + dw
        rows = tuple(int(v) for v in window_starts(ph, window_px, stride))
        cols = tuple(int(v) for v in window_starts(pw, window_px, stride))
        return cls((h, w), window_px, stride, rows, cols, pad)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Shape the windows tile: the image plus padding."""
        t, b, lft, r = self.pad
        return (self.shape[0] + t + b, self.shape[1] + lft + r)

    @property
    def n_windows(self) -> int:
        return len(self.rows) * len(self.cols)

    def windows(self) -> list[tuple[int, int]]:
        """(row, col) upper-left corners of every window in the padded image, row-major."""
        return [(r, c) for r in self.rows for c in self.cols]

    def processed_ratio(self) -> float:
        """Processed pixels (sum of window areas) per output pixel: the cost of the overlap."""
        return self.n_windows * self.window_px**2 / float(self.shape[0] * self.shape[1])


def weight_sum(layout: WindowLayout, weights: np.ndarray) -> np.ndarray:
    """Accumulated weight (float32, padded shape) of every window of a layout.

    Summed in the same order as the engine accumulates scores, in float32 like the scores.
    """
    ph, pw = layout.padded_shape
    out = np.zeros((ph, pw), dtype=np.float32)
    k = layout.window_px
    for r, c in layout.windows():
        out[r:r + k, c:c + k] += weights
    return out


def normalise_by_weight(layout: WindowLayout, weights: np.ndarray, *accs: np.ndarray,
                        strip: int = 256) -> None:
    """Divide accumulators (padded shape) in place by the layout's accumulated weight.

    The weight is rebuilt strip by strip, so no image-sized weight array is ever held; each pixel's
    weight is summed over windows in layout order, exactly as :func:`weight_sum` (and MONAI's count
    map) sum it, so results are bit-identical to dividing by the full array.
    """
    ph, pw = layout.padded_shape
    k = layout.window_px
    for y0 in range(0, ph, strip):
        y1 = min(y0 + strip, ph)
        w = np.zeros((y1 - y0, pw), dtype=np.float32)
        for r in layout.rows:
            lo, hi = max(r, y0), min(r + k, y1)
            if lo >= hi:
                continue
            part = weights[lo - r:hi - r]
            for c in layout.cols:
                w[lo - y0:hi - y0, c:c + k] += part
        for acc in accs:
            acc[y0:y1] /= w


def reflect_pad(image: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Pad the last two axes of ``image`` by reflection (repeating the reflection if needed).

    Single-pixel axes cannot be reflected and are repeated instead.
    """
    t, b, lft, r = pad
    if not any(pad):
        return image
    widths = [(0, 0)] * (image.ndim - 2) + [(t, b), (lft, r)]
    if min(image.shape[-2:]) > 1:
        return np.pad(image, widths, mode="reflect")
    return np.pad(image, widths, mode="edge")

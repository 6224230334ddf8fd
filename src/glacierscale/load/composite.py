"""Per-pixel composites over time of clear observations, with the count of those observations.

The kernels work on one spatial block of a ``(time, y, x)`` stack, so Dask runs them chunk by
chunk and memory stays at a few blocks whatever the tile size. ``valid`` is True where a time
slice is a clear, read observation; every band uses the same ``valid`` so that the composite's
bands come from the same acquisitions (a spectrally consistent pixel, not a mix of dates).
"""

from __future__ import annotations

from collections.abc import Mapping

import dask.array as da
import numpy as np

COMPOSITES = ("median", "best")


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    """``x`` sorted along axis 0 (NaN-free input).

    For the few observations of a composite, an odd-even transposition network of element-wise
    minimum/maximum is several times faster than ``np.sort`` along a strided axis (and ~10x
    faster than ``np.nanmedian``).
    """
    t = x.shape[0]
    if t > 16:
        return np.sort(x, axis=0)
    rows = list(x)
    for i in range(t):
        for j in range(i % 2, t - 1, 2):
            a, b = rows[j], rows[j + 1]
            rows[j], rows[j + 1] = np.minimum(a, b), np.maximum(a, b)
    return np.stack(rows)


def median_block(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the valid observations; NaN where there is none."""
    ok = valid & np.isfinite(values)
    if values.shape[0] == 1:  # one observation: nothing to sort
        return np.where(ok[0], values[0], np.float32(np.nan)).astype(np.float32, copy=False)
    n = ok.sum(axis=0)
    # Missing observations sort last as +inf; the median then sits at ranks (n-1)//2 and n//2.
    s = _sorted_rows(np.where(ok, values, np.inf).astype(np.float32, copy=False))
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(s, (n // 2)[None], axis=0)[0]  # n <= t, so n // 2 < t
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, 0.5 * (lo + hi), np.nan).astype(np.float32)


def best_block(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The first valid observation along axis 0 (slices come best-ranked first); NaN if none."""
    ok = valid & np.isfinite(values)
    first = np.argmax(ok, axis=0)
    picked = np.take_along_axis(values, first[None], axis=0)[0]
    return np.where(ok.any(axis=0), picked, np.nan).astype(np.float32)


def count_block(valid: np.ndarray) -> np.ndarray:
    """Clear observations per pixel, saturating at 255 to fit uint8."""
    return np.minimum(valid.sum(axis=0), 255).astype(np.uint8)


def composite(
    bands: Mapping[str, da.Array], valid: da.Array, method: str = "median"
) -> tuple[dict[str, da.Array], da.Array]:
    """Composite ``(time, y, x)`` Dask arrays to ``(y, x)`` float32, plus the clear count.

    The time axis is merged into one chunk first, so every block sees all observations of its
    pixels; spatial chunks are kept, which is what keeps memory flat on large tiles.
    """
    if method not in COMPOSITES:
        raise ValueError(f"unknown composite {method!r}; choose one of {COMPOSITES}")
    kernel = median_block if method == "median" else best_block
    valid = valid.rechunk({0: -1})
    out: dict[str, da.Array] = {}
    for name, arr in bands.items():
        arr = arr.rechunk(valid.chunks)
        out[name] = da.map_blocks(kernel, arr, valid, drop_axis=0, dtype=np.float32,
                                  token=f"composite-{method}-{name}")
    count = da.map_blocks(count_block, valid, drop_axis=0, dtype=np.uint8, token="clear-count")
    return out, count

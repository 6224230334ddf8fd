"""Cloud and cloud-shadow masks from each sensor's own quality band.

All functions take the raw quality array (any integer dtype, or float with NaN where nothing was
read) and return a boolean array that is True where the pixel is a *clear* observation.

Snow and ice are clear on purpose in every scheme: they are what a glacier looks like. Terrain
shadow ("dark area" in SCL) is clear too, because shadowed ice is still ice and a model with a
hillshade band can learn it; dropping it would punch holes in every north face.
"""

from __future__ import annotations

import numpy as np

#: Sentinel-2 Scene Classification classes that are NOT clear observations:
#: 0 no data, 1 saturated or defective, 3 cloud shadow, 8 cloud medium probability,
#: 9 cloud high probability, 10 thin cirrus.
SCL_NOT_CLEAR = (0, 1, 3, 8, 9, 10)

#: Landsat Collection 2 QA_PIXEL bits that make a pixel not clear: 0 fill, 1 dilated cloud,
#: 2 cirrus (OLI only, always 0 for TM/ETM+), 3 cloud, 4 cloud shadow.
QA_PIXEL_NOT_CLEAR_BITS = (0, 1, 2, 3, 4)

#: HLS v2.0 Fmask bits that make a pixel not clear: 1 cloud, 2 adjacent to cloud or shadow,
#: 3 cloud shadow. Value 255 is fill.
FMASK_NOT_CLEAR_BITS = (1, 2, 3)
FMASK_FILL = 255


def _as_int(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer view of a quality array and where it was actually read (not NaN)."""
    if np.issubdtype(q.dtype, np.floating):
        read = np.isfinite(q)
        return np.where(read, q, 0).astype(np.int64), read
    return q.astype(np.int64, copy=False), np.ones(q.shape, dtype=bool)


def _bits(values: tuple[int, ...]) -> int:
    return sum(1 << b for b in values)


def clear_from_scl(scl: np.ndarray) -> np.ndarray:
    """Clear pixels of a Sentinel-2 L2A Scene Classification (SCL) layer."""
    q, read = _as_int(scl)
    return read & ~np.isin(q, SCL_NOT_CLEAR)


def clear_from_qa_pixel(qa: np.ndarray) -> np.ndarray:
    """Clear pixels of a Landsat Collection 2 QA_PIXEL layer (no fill, cloud, dilation, shadow)."""
    q, read = _as_int(qa)
    return read & ((q & _bits(QA_PIXEL_NOT_CLEAR_BITS)) == 0)


def cloud_from_qa_pixel(qa: np.ndarray) -> np.ndarray:
    """High-confidence cloud bit only (bit 3): what a scene's CLOUD_COVER percentage counts."""
    q, read = _as_int(qa)
    return read & ((q & (1 << 3)) != 0) & ((q & 1) == 0)


def clear_from_fmask(fmask: np.ndarray) -> np.ndarray:
    """Clear pixels of an HLS v2.0 Fmask layer."""
    q, read = _as_int(fmask)
    return read & (q != FMASK_FILL) & ((q & _bits(FMASK_NOT_CLEAR_BITS)) == 0)


def clear_mask(kind: str, quality: np.ndarray) -> np.ndarray:
    """Dispatch on the mask kind of a collection profile (``scl``, ``qa_pixel`` or ``fmask``)."""
    funcs = {"scl": clear_from_scl, "qa_pixel": clear_from_qa_pixel, "fmask": clear_from_fmask}
    try:
        return funcs[kind](quality)
    except KeyError:
        raise ValueError(
            f"unknown cloud mask kind {kind!r}; expected one of {sorted(funcs)}") from None

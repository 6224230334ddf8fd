"""DEM derivatives (slope, aspect, hillshade) that carry no edge artefacts at tile borders.

The DEM is read on the tile grid grown by one pixel on every side (beyond the halo), the 3x3
derivative stencils run on that, and the extra ring is cut off, so every returned pixel - halo
included - was computed from its true neighbours. Two neighbouring tiles therefore agree exactly
where their halos overlap, and vectorised outlines do not step at tile borders.

Conventions (as ``gdaldem`` with Horn's method):
- slope in degrees, 0 flat .. 90 vertical;
- aspect in degrees clockwise from north of the downslope direction, 0 on flat ground
  (``-zero_for_flat``), so the band never holds NaN where the DEM has data;
- hillshade in 0..1 for a sun at azimuth 315 degrees and altitude 45 degrees.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

SUN_AZIMUTH = 315.0
SUN_ALTITUDE = 45.0
DERIVED = ("slope", "aspect", "hillshade")


def horn_gradients(z: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    """East and north gradients (dz/dx, dz/dy) of the interior of ``z`` (output 2 px smaller)."""
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * res)
    # Rows grow southwards, so the northward gradient is top row minus bottom row.
    dzdy = ((a + 2 * b + c) - (g + 2 * h + i)) / (8.0 * res)
    return dzdx, dzdy


def derivatives(z: np.ndarray, res: float,
                names: tuple[str, ...] = DERIVED) -> dict[str, np.ndarray]:
    """Slope, aspect and/or hillshade of the interior of a padded DEM block (2 px smaller)."""
    # Differences of elevations in the thousands lose digits in float32: take them in float64,
    # then do the (costly) trigonometry in float32.
    gx, gy = horn_gradients(z.astype(np.float64, copy=False), res)
    dzdx, dzdy = gx.astype(np.float32), gy.astype(np.float32)
    grad = np.hypot(dzdx, dzdy)
    nan = ~np.isfinite(grad)
    flat = grad == 0
    out: dict[str, np.ndarray] = {}
    slope = np.arctan(grad)
    if "slope" in names:
        out["slope"] = np.degrees(slope).astype(np.float32)
    if "aspect" in names or "hillshade" in names:
        # Downslope direction as a compass bearing: east component -dz/dx, north -dz/dy.
        aspect = np.where(flat, np.float32(0), np.arctan2(-dzdx, -dzdy))
        if "aspect" in names:
            out["aspect"] = np.where(nan, np.nan, np.degrees(aspect) % 360.0).astype(np.float32)
        if "hillshade" in names:
            zen = np.float32(np.radians(90.0 - SUN_ALTITUDE))
            az = np.float32(np.radians(SUN_AZIMUTH))
            shade = np.cos(zen) * np.cos(slope) + np.sin(zen) * np.sin(slope) * np.cos(az - aspect)
            out["hillshade"] = np.clip(shade, 0.0, 1.0).astype(np.float32)
    return {k: out[k] for k in names}


def _derive_block(z: np.ndarray, res: float, names: tuple[str, ...]) -> np.ndarray:
    d = derivatives(z, res, names)
    # The block arrives grown by one pixel on each side (overlap); pad the 2 px smaller result
    # back so the trim returns exactly the block.
    return np.pad(np.stack([d[n] for n in names]), ((0, 0), (1, 1), (1, 1)),
                  constant_values=np.nan)


def derive(padded: da.Array, res: float, names: tuple[str, ...] = DERIVED) -> dict[str, da.Array]:
    """Derivatives of a DEM read one pixel wider than the tile grid; outputs are the tile grid.

    ``padded`` is a 2-D Dask array of elevations (NaN where unknown) of shape ``(h + 2, w + 2)``.
    All derivatives of a block come from one pass over it (one gradient computation).
    """
    grown = da.overlap.overlap(padded, depth={0: 1, 1: 1}, boundary=np.nan)
    stacked = grown.map_blocks(_derive_block, res, tuple(names), new_axis=0,
                               chunks=((len(names),), *grown.chunks), dtype=np.float32)
    trimmed = da.overlap.trim_internal(stacked, {0: 0, 1: 1, 2: 1},
                                       boundary={1: np.nan, 2: np.nan})
    return {name: trimmed[i, 1:-1, 1:-1] for i, name in enumerate(names)}

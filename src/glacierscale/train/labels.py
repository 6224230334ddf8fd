"""Training labels: reference outlines rasterized on a tile's grid, with what is not known ignored.

A label raster is uint8 on the tile's halo'd grid:

- bit 0 (value 1): glacier according to the reference outlines;
- bit 1 (value 2): within the uncertain ring along an outline (left out of the training loss, kept
  in evaluation with its reference class);
- :data:`UNKNOWN` (255): no label at all - no data or clouds in any input band, outside the tile
  core (the halo belongs to neighbouring tiles, which may be in another fold), or farther than
  ``known_within_m`` from any outline when the reference is incomplete.

Keeping the ring's class lets the evaluation score every pixel the reference speaks for, while the
network never learns from the pixels where outlines are least certain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glacierscale.core.metrics import boundary, within_distance
from glacierscale.core.tiles import TileSpec

#: Label value of pixels that carry no label (never in a loss or a metric).
UNKNOWN = 255
GLACIER_BIT = 1
RING_BIT = 2


@dataclass(frozen=True)
class LabelRules:
    """How outlines become labels.

    ``ring_px``: width in pixels, on each side of an outline, of the uncertain ring left out of the
    loss (0: none; 1: the pixels touching the outline). ``known_within_m``: when the reference is
    incomplete (it omits some ice in the area), only pixels inside an outline or within this many
    metres of one are labelled; farther pixels are unknown instead of background, so the model is
    not taught that unoutlined ice is not glacier. ``None`` means the reference is complete.
    """

    ring_px: int = 1
    known_within_m: float | None = None
    #: lon/lat boxes (W, S, E, N) with no label at all: areas kept out of training, e.g. for a
    #: later independent test there
    exclude: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(
            (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in self.exclude))
        for w, s, e, n in self.exclude:
            if not (s < n and w < e):
                raise ValueError(f"an excluded box is (W, S, E, N) with W < E and S < N, got "
                                 f"{(w, s, e, n)}")
        if self.ring_px < 0:
            raise ValueError(f"ring_px must be >= 0, got {self.ring_px}")
        if self.known_within_m is not None and self.known_within_m <= 0:
            raise ValueError(f"known_within_m must be > 0 (or None for a complete reference), "
                             f"got {self.known_within_m}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ring_px": self.ring_px, "known_within_m": self.known_within_m}
        if self.exclude:  # only when set, so caches of chips made without it stay valid
            out["exclude"] = [list(b) for b in self.exclude]
        return out


def rasterize_outlines(geoms: Sequence[Any], tile: TileSpec) -> NDArray[np.bool_]:
    """Pixels of the tile's halo'd grid whose centre lies inside any of ``geoms`` (tile CRS)."""
    from rasterio.features import rasterize

    shapes = [(g, 1) for g in geoms if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(tile.shape, dtype=bool)
    arr = rasterize(shapes, out_shape=tile.shape, transform=tile.transform, fill=0,
                    dtype="uint8", all_touched=False)
    return np.asarray(arr, dtype=bool)


def make_labels(glacier: NDArray[np.bool_], valid: NDArray[np.bool_], rules: LabelRules,
                *, resolution: float, core: tuple[slice, slice] | None = None) -> NDArray[np.uint8]:
    """The label raster of a tile from its reference mask and its valid-data mask.

    ``glacier``: rasterized reference; ``valid``: pixels where every input band has data;
    ``core``: the slices of the tile core (pixels outside it are unknown); ``resolution``: metres
    per pixel (for ``known_within_m``).
    """
    if glacier.shape != valid.shape:
        raise ValueError(f"reference {glacier.shape} and valid mask {valid.shape} differ in shape")
    labels = glacier.astype(np.uint8) * GLACIER_BIT
    if rules.ring_px > 0:
        # Both sides of the outline: glacier pixels next to background and the reverse.
        edge = boundary(glacier) | boundary(~glacier)
        ring = within_distance(edge, rules.ring_px - 1) if rules.ring_px > 1 else edge
        labels[ring] |= RING_BIT
    unknown = ~valid
    if rules.known_within_m is not None:
        unknown |= ~within_distance(glacier, rules.known_within_m / resolution)
    if core is not None:
        inside = np.zeros(glacier.shape, dtype=bool)
        inside[core] = True
        unknown |= ~inside
    labels[unknown] = UNKNOWN
    return labels


def excluded_pixels(tile: TileSpec, boxes: Sequence[tuple[float, float, float, float]]
                    ) -> NDArray[np.bool_]:
    """Pixels of the tile's halo'd grid whose centre lies in any lon/lat box."""
    out = np.zeros(tile.shape, dtype=bool)
    if not boxes:
        return out
    from pyproj import Transformer

    h, w = tile.shape
    t = tile.transform
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xs = t.c + cols * t.a + rows * t.b
    ys = t.f + cols * t.d + rows * t.e
    lon, lat = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    for west, south, east, north in boxes:
        out |= (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
    return out


def train_target(labels: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """(target 0/1, weight mask) for the loss: ring and unknown pixels get no weight."""
    known = labels != UNKNOWN
    use = known & ((labels & RING_BIT) == 0)
    target = ((labels & GLACIER_BIT) > 0) & known
    return target.astype(np.float32), use


def eval_reference(labels: NDArray[np.uint8]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(reference glacier mask, evaluated pixels) for metrics: ring pixels count, unknown do not."""
    known = labels != UNKNOWN
    return ((labels & GLACIER_BIT) > 0) & known, known

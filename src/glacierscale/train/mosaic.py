"""Tile cores stitched into scene-wide arrays, so metrics see outlines across tile borders.

Boundary distances and rings around outlines are properties of the whole area: computed tile by
tile, every outline cut by a tile border would gain a false edge. The chips of one projection are
cells of one grid, so their cores tile a rectangle without overlap; a :class:`Mosaic` places each
core at its cell and keeps which fold every pixel belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from glacierscale.core.tiles import TileSpec
from glacierscale.train.chips import Chip
from glacierscale.train.labels import UNKNOWN


@dataclass
class Mosaic:
    """Scene arrays of the chips of one projection: labels, fold of each pixel, input bands."""

    epsg: int
    col0: int
    row0: int
    size_px: int
    resolution: float
    labels: NDArray[np.uint8]
    fold: NDArray[np.int16]
    image: NDArray[np.float32]

    def place(self, tile: TileSpec) -> tuple[slice, slice]:
        """Where a tile's core sits in the mosaic."""
        r = (tile.row - self.row0) * self.size_px
        c = (tile.col - self.col0) * self.size_px
        return slice(r, r + self.size_px), slice(c, c + self.size_px)

    def paste(self, target: NDArray, tile: TileSpec, core_values: NDArray) -> None:
        """Write a tile's core values into a mosaic-shaped array."""
        target[(..., *self.place(tile))] = core_values

    def empty(self, fill: float = np.nan) -> NDArray[np.float32]:
        return np.full(self.labels.shape, fill, dtype=np.float32)


def build_mosaics(chips: Sequence[Chip], folds: Mapping[str, int]) -> list[Mosaic]:
    """One mosaic per projection of the chips (usually one)."""
    if not chips:
        raise ValueError("no chips to evaluate")
    by_epsg: dict[int, list[Chip]] = {}
    for c in chips:
        by_epsg.setdefault(c.tile.epsg, []).append(c)
    out = []
    for epsg, group in sorted(by_epsg.items()):
        t0 = group[0].tile
        if any((c.tile.size_px, c.tile.resolution) != (t0.size_px, t0.resolution) for c in group):
            raise ValueError("chips of one projection must share tile size and resolution")
        cols = [c.tile.col for c in group]
        rows = [c.tile.row for c in group]
        n = t0.size_px
        h = (max(rows) - min(rows) + 1) * n
        w = (max(cols) - min(cols) + 1) * n
        bands = group[0].image.shape[0]
        m = Mosaic(epsg, min(cols), min(rows), n, t0.resolution,
                   np.full((h, w), UNKNOWN, np.uint8), np.full((h, w), -1, np.int16),
                   np.full((bands, h, w), np.nan, np.float32))
        for c in group:
            core = c.tile.core_slice
            m.paste(m.labels, c.tile, c.labels[core])
            m.fold[m.place(c.tile)] = folds.get(c.tile_id, -1)
            m.paste(m.image, c.tile, c.image[(slice(None), *core)])
        out.append(m)
    return out

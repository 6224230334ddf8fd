"""No input may carry the label: a band whose data stops at the outlines is refused.

A raster clipped to the glacier outlines (the Athabasca sample's DEM covers only the outlined
glacier) tells the network where the glacier is by whether it has data, whatever its values: every
derivative of it (slope, aspect, hillshade, an elevation band) leaks the reference into the input,
and the network learns the clip, not the ice. Before training, every band's share of valid pixels
inside the outlines is compared with its share outside them, on the chips' own grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from glacierscale.train.chips import Chip, outlines_per_tile
from glacierscale.train.labels import rasterize_outlines

#: A band is clipped to the outlines when it has data on at least this share of the glacier ...
INSIDE_MIN = 0.9
#: ... and, outside the outlines, on less than this fraction of what the best band covers there.
OUTSIDE_RATIO = 0.5


class LabelLeakError(ValueError):
    """An input band's data footprint follows the reference outlines."""


def footprint_shares(chips: Sequence[Chip], outlines: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the share of pixels with data inside and outside the outlines (all chips)."""
    from shapely import wkb

    geoms = outlines_per_tile(outlines, [c.tile for c in chips])
    c = chips[0].image.shape[0]
    n_in = n_out = 0
    v_in, v_out = np.zeros(c), np.zeros(c)
    for chip, g in zip(chips, geoms, strict=True):
        inside = rasterize_outlines([wkb.loads(b) for b in g], chip.tile)
        ok = np.isfinite(chip.image)
        n_in += int(inside.sum())
        n_out += int((~inside).sum())
        v_in += ok[:, inside].sum(axis=1)
        v_out += ok[:, ~inside].sum(axis=1)
    return v_in / max(n_in, 1), v_out / max(n_out, 1)


def check_no_label_leak(chips: Sequence[Chip], bands: Sequence[str], outlines: Any) -> None:
    """Raise :class:`LabelLeakError` naming every band whose data is clipped to the outlines."""
    if not chips:
        return
    inside, outside = footprint_shares(chips, outlines)
    best = float(outside.max())
    clipped = [(b, i, o) for b, i, o in zip(bands, inside, outside, strict=True)
               if i >= INSIDE_MIN and o < OUTSIDE_RATIO * best]
    if clipped:
        detail = "; ".join(f"{b!r} has data on {i:.0%} of the glacier pixels and {o:.0%} of the "
                           f"others" for b, i, o in clipped)
        raise LabelLeakError(
            f"{detail} (other bands: {best:.0%} outside the outlines). Such a raster is clipped "
            "to the reference outlines: its footprint would give the network the label. Drop "
            "the band or use a raster that covers the whole area (e.g. Copernicus GLO-30).")

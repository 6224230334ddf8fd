"""A band whose data stops at the outlines is refused before training."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point

from glacierscale.core.tiles import TileSpec
from glacierscale.train.chips import Chip
from glacierscale.train.labels import rasterize_outlines
from glacierscale.train.leakage import LabelLeakError, check_no_label_leak, footprint_shares


def _setup() -> tuple[Chip, gpd.GeoDataFrame]:
    tile = TileSpec(32611, 250, 2196, 64, 30.0, 8)
    x0, y0, x1, y1 = tile.core_bounds
    glacier = Point((x0 + x1) / 2, (y0 + y1) / 2).buffer(600.0)
    outlines = gpd.GeoDataFrame(geometry=[glacier], crs=tile.crs)
    image = np.random.default_rng(0).uniform(0.1, 0.6, (3, *tile.shape)).astype(np.float32)
    image[:, :3] = np.nan  # a scene edge: no data in every band alike
    return Chip(tile, image, np.zeros(tile.shape, np.uint8)), outlines


def test_a_band_clipped_to_the_outlines_is_named() -> None:
    chip, outlines = _setup()
    inside = rasterize_outlines(list(outlines.geometry), chip.tile)
    chip.image[2][~inside] = np.nan  # e.g. a DEM that covers only the outlined glacier
    shares_in, shares_out = footprint_shares([chip], outlines)
    assert shares_in[2] == 1.0 and shares_out[2] == 0.0 and shares_out[0] > 0.9
    with pytest.raises(LabelLeakError, match=r"'elevation' has data on 100% of the glacier"):
        check_no_label_leak([chip], ("red", "swir16", "elevation"), outlines)


def test_bands_with_ordinary_gaps_pass() -> None:
    chip, outlines = _setup()
    chip.image[:, 20:30] = np.nan  # a cloud mask across glacier and ground alike
    check_no_label_leak([chip], ("red", "swir16", "elevation"), outlines)

"""Reads over HTTP (a real range server on loopback): requests and bytes per tile and band."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from glacierscale.core.tiles import TileSpec, grid_origin
from glacierscale.load import load_tile
from glacierscale.testing.rangeserver import range_server
from glacierscale.testing.rasters import make_item, write_cog


@pytest.mark.integration
def test_block_aligned_tiles_cost_few_gets_and_no_repeated_header(tmp_path: Path) -> None:
    size, block = 256, 128  # tiles of 2 x 2 blocks
    col, row = 200, 2000
    ox, oy = grid_origin(32611)
    tr = Affine(10, 0, ox + col * size * 10, 0, -10, oy - row * size * 10)
    rng = np.random.default_rng(3)
    data = rng.integers(1, 10_000, (2 * size, 2 * size), dtype=np.uint16)
    path = write_cog(tmp_path / "red.tif", data, "EPSG:32611", tr, nodata=0, blocksize=block)
    with range_server(tmp_path, latency=0.002) as (url, log):
        item = make_item("x", "landsat-c2-l2", datetime(2020, 9, 1), {"red": path})
        item.assets["red"].href = f"{url}/files/red.tif"
        fetched = needed = 0
        header_gets = 0
        for c, r in ((col, row), (col + 1, row), (col, row + 1)):
            tile = TileSpec(32611, c, r, size, 10.0, 0)
            log.clear()
            ds = load_tile(tile, ["red"], [item]).compute()
            gets = log.by_path()["/files/red.tif"]
            assert len(gets) <= 5, [g.ranges for g in gets]
            header_gets += sum(1 for g in gets if g.ranges and g.ranges[0][0] == 0)
            fetched += sum(g.nbytes for g in gets)
            with rasterio.open(path) as src:
                r0, c0 = (r - row) * 2, (c - col) * 2
                needed += sum(int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))
                              for y in (r0, r0 + 1) for x in (c0, c0 + 1))
            expected = data[(r - row) * size:(r - row + 1) * size,
                            (c - col) * size:(c - col + 1) * size] * 2.75e-5 - 0.2
            np.testing.assert_allclose(ds.red.values, expected, atol=1e-6)
        assert header_gets == 1  # the header is read once, then served from GDAL's cache
        assert fetched <= 1.1 * needed

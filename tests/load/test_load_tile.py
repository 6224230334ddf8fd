"""load_tile on tiny seeded COGs: grid, scaling, cloud masks, composites, split granules."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from glacierscale.core.tiles import TileSpec
from glacierscale.load import MissingBandError, load_tile
from glacierscale.testing.rasters import make_item, tile_at, write_cog

EPSG = 32611
X0, Y0 = 500_000.0, 5_800_000.0  # a grid-aligned corner, 10 m pixels


@pytest.fixture(scope="module")
def s2_items(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, TileSpec]:
    """Three Sentinel-2-like scenes: DN 1000 / 3000 (baseline 05.00) / 4000, with SCL."""
    root = tmp_path_factory.mktemp("s2")
    tile = tile_at(EPSG, X0 + 200, Y0 - 200)
    minx, _, _, maxy = tile.bounds
    tr = Affine(10, 0, minx - 100, 0, -10, maxy + 100)  # 10 px margin around the halo'd tile
    shape = (tile.shape[0] + 20, tile.shape[1] + 20)
    items = []
    for name, dn, baseline, cloud_box, nodata_right in (
        ("a", 1000, "02.12", True, False),
        ("b", 3000, "05.00", False, False),
        ("c", 4000, "02.12", False, True),
    ):
        red = np.full(shape, dn, dtype=np.uint16)
        if nodata_right:
            red[:, shape[1] // 2:] = 0
        scl = np.full(shape, 4, dtype=np.uint8)
        if cloud_box:
            scl[:20, :20] = 9
        files = {"red": write_cog(root / name / "red.tif", red, f"EPSG:{EPSG}", tr, nodata=0),
                 "green": write_cog(root / name / "green.tif", red // 2, f"EPSG:{EPSG}", tr,
                                    nodata=0),
                 "scl": write_cog(root / name / "scl.tif", scl, f"EPSG:{EPSG}", tr, nodata=0)}
        day = {"a": 1, "b": 5, "c": 10}[name]
        items.append(make_item(name, "sentinel-2-l2a", datetime(2020, 9, day, 18), files,
                               properties={"s2:processing_baseline": baseline}))
    return items, tile


def test_grid_scaling_masks_and_median(s2_items: tuple[list, TileSpec]) -> None:
    items, tile = s2_items
    ds = load_tile(tile, ["red", "green"], items)
    assert dict(ds.sizes) == {"y": tile.shape[0], "x": tile.shape[1]}
    assert ds.red.dtype == np.float32 and ds.clear_count.dtype == np.uint8
    assert ds.odc.geobox.transform == tile.transform and ds.odc.geobox.crs == tile.crs
    assert ds.attrs["cloud_masked"] is True and ds.attrs["item_ids"] == ["a", "b", "c"]
    r = ds.compute()
    red, count = r.red.values, r.clear_count.values
    # The raster starts 10 px before the halo'd tile: SCL cloud covers the first 10 rows/cols.
    cloudy = np.zeros(tile.shape, bool)
    cloudy[:10, :10] = True
    right = np.zeros(tile.shape, bool)
    right[:, tile.shape[1] // 2:] = True
    # a=0.1, b=0.3-0.1 (baseline 05.00 offset) = 0.2, c=0.4 (no data in its right half).
    np.testing.assert_allclose(red[~cloudy & ~right], 0.2, atol=1e-6)
    np.testing.assert_allclose(red[cloudy & ~right], 0.3, atol=1e-6)
    np.testing.assert_allclose(red[~cloudy & right], 0.15, atol=1e-6)
    np.testing.assert_array_equal(count, np.where(cloudy ^ right, 2, 3) - (cloudy & right))
    # Green holds half of red's DN: 0.05, 0.15 - 0.1 = 0.05, 0.2 -> median 0.05.
    np.testing.assert_allclose(r.green.values[~cloudy & ~right], 0.05, atol=1e-6)


def test_best_pixel_follows_the_rank_order(s2_items: tuple[list, TileSpec]) -> None:
    items, tile = s2_items
    a, b, c = items
    r = load_tile(tile, ["red"], [c, a, b], composite="best").compute()
    left = r.red.values[:, : tile.shape[1] // 2]
    right = r.red.values[:, tile.shape[1] // 2:]
    np.testing.assert_allclose(left, 0.4, atol=1e-6)  # c wins where it has data
    # Right half: a (rank 2) unless clouded, then b.
    np.testing.assert_allclose(right, 0.1, atol=1e-6)
    assert r.attrs["item_ids"] == ["c", "a", "b"]


def test_stackstac_backend_gives_the_same_composite(s2_items: tuple[list, TileSpec]) -> None:
    items, tile = s2_items
    odc = load_tile(tile, ["red", "green"], items).compute()
    sst = load_tile(tile, ["red", "green"], items, loader="stackstac").compute()
    assert sst.attrs["loader"] == "stackstac"
    for v in ("red", "green", "clear_count"):
        np.testing.assert_allclose(sst[v].values, odc[v].values, atol=1e-6)


def test_missing_bands_fail_with_the_fix(s2_items: tuple[list, TileSpec]) -> None:
    items, tile = s2_items
    with pytest.raises(MissingBandError, match=r"'elevation'.*dem_collections"):
        load_tile(tile, ["red", "elevation"], items)
    with pytest.raises(MissingBandError, match=r"'swir22'.*sentinel-2-l2a"):
        load_tile(tile, ["swir22"], items)
    with pytest.raises(ValueError, match="unknown bands"):
        load_tile(tile, ["thermal"], items)


def test_chunks_align_with_the_tile() -> None:
    small = TileSpec(EPSG, 48, 412, 1024, 10.0, 64)
    big = TileSpec(EPSG, 12, 103, 4096, 10.0, 0)
    from glacierscale.load.stack import _chunks

    assert _chunks(small.shape, None) == (1152, 1152)
    assert _chunks(big.shape, None) == (1024, 1024)


def _band_raster(root: Path, name: str, epsg: int, bounds: tuple[float, float, float, float],
                 value: int) -> Path:
    w, s, e, n = bounds
    tr = Affine(10, 0, np.floor(w / 10) * 10, 0, -10, np.ceil(n / 10) * 10)
    shape = (int(np.ceil((n - s) / 10)) + 2, int(np.ceil((e - w) / 10)) + 2)
    return write_cog(root / f"{name}.tif", np.full(shape, value, np.uint16), f"EPSG:{epsg}", tr,
                     nodata=0)


def _granules_on_either_side(root: Path, tile: TileSpec, other_epsg: int) -> list:
    """Two granules of one overpass: the tile's west half in another zone, east half in its own."""
    minx, miny, maxx, maxy = tile.bounds
    midx = (minx + maxx) / 2
    xs = np.array([minx - 20, midx + 20, midx + 20, minx - 20])
    ys = np.array([maxy + 20, maxy + 20, miny - 20, miny - 20])
    ox, oy = Transformer.from_crs(tile.crs, f"EPSG:{other_epsg}", always_xy=True).transform(xs, ys)
    west = _band_raster(root, "west", other_epsg, (ox.min(), oy.min(), ox.max(), oy.max()), 1000)
    east = _band_raster(root, "east", tile.epsg, (midx - 20, miny - 20, maxx + 20, maxy + 20), 3000)
    when = datetime(2020, 9, 1, 12)
    return [make_item("west", "landsat-c2-l2", when, {"red": west}),
            make_item("east", "landsat-c2-l2", when, {"red": east})]


@pytest.mark.parametrize("case", ["utm-zones", "antimeridian"])
def test_granules_split_across_zones_fill_the_tile(tmp_path: Path, case: str) -> None:
    if case == "utm-zones":  # lon -120 at lat 50: zone 10 | zone 11
        x, y = Transformer.from_crs("EPSG:4326", "EPSG:32611", always_xy=True).transform(-120, 50)
        tile, other = tile_at(32611, x, y, size_px=32, resolution=10, halo_px=4), 32610
    else:  # lon 180 at lat 65: zone 60 | zone 1
        x, y = Transformer.from_crs("EPSG:4326", "EPSG:32601", always_xy=True).transform(180, 65)
        tile, other = tile_at(32601, x, y, size_px=32, resolution=10, halo_px=4), 32660
    items = _granules_on_either_side(tmp_path, tile, other)
    r = load_tile(tile, ["red"], items).compute()
    assert not np.isnan(r.red.values).any(), "a split acquisition left part of the tile empty"
    # One overpass is one observation, not two.
    assert (r.clear_count.values == 1).all()
    west = 1000 * 2.75e-5 - 0.2
    assert r.red.values[:, 0] == pytest.approx(west, abs=1e-5)
    assert r.red.values[:, -1] == pytest.approx(3000 * 2.75e-5 - 0.2, abs=1e-5)

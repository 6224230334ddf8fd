"""DEM derivatives: exact on planes, and free of edge artefacts at tile borders."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from glacierscale.load import load_tile
from glacierscale.load.dem import SUN_ALTITUDE, SUN_AZIMUTH, derivatives
from glacierscale.testing.rasters import make_item, tile_at, write_cog


@given(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0), st.floats(5.0, 50.0))
@settings(max_examples=60, deadline=None)
def test_plane_slope_aspect_hillshade(a: float, b: float, res: float) -> None:
    """z = a*east + b*north: slope atan(|grad|), aspect the downslope bearing."""
    rows, cols = np.mgrid[0:6, 0:7].astype(float)
    z = a * cols * res + b * (-rows * res) + 1000.0
    d = derivatives(z, res)
    grad = math.hypot(a, b)
    np.testing.assert_allclose(d["slope"], math.degrees(math.atan(grad)), atol=1e-3)
    if grad > 1e-6:
        aspect = math.degrees(math.atan2(-a, -b)) % 360.0
        diff = (d["aspect"] - aspect + 180.0) % 360.0 - 180.0
        np.testing.assert_allclose(diff, 0.0, atol=1e-3)
        zen, az = math.radians(90 - SUN_ALTITUDE), math.radians(SUN_AZIMUTH)
        s = math.atan(grad)
        shade = math.cos(zen) * math.cos(s) + math.sin(zen) * math.sin(s) * math.cos(
            az - math.radians(aspect))
        np.testing.assert_allclose(d["hillshade"], max(shade, 0.0), atol=1e-4)
    assert d["slope"].shape == (4, 5)


def test_north_facing_slope_has_aspect_zero() -> None:
    rows, _cols = np.mgrid[0:5, 0:5].astype(float)
    z = 1000.0 + rows * 10.0  # higher to the south: faces north
    d = derivatives(z, 10.0)
    assert np.allclose(d["aspect"] % 360.0, 0.0) and np.allclose(d["slope"], 45.0)


@pytest.fixture(scope="module")
def rough_dem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Affine]:
    """A seeded rough DEM on a 10 m grid, larger than two neighbouring tiles with halos."""
    rng = np.random.default_rng(42)
    z = np.cumsum(np.cumsum(rng.normal(0, 3, (140, 140)), 0), 1).astype(np.float32) + 2000
    tr = Affine(10, 0, 500_000 - 300, 0, -10, 5_800_000 + 300)
    path = write_cog(tmp_path_factory.mktemp("dem") / "dem.tif", z, "EPSG:32611", tr,
                     nodata=-9999.0)
    return path, z, tr


def test_tile_derivatives_equal_whole_raster_derivatives(rough_dem) -> None:
    path, z, tr = rough_dem
    item = make_item("dem", "cop-dem-glo-30", datetime(2021, 4, 22), {"data": path})
    ref = derivatives(z, 10.0)  # interior of the whole raster: rows/cols shifted by one
    tiles = [tile_at(32611, 500_000 + 100, 5_800_000 - 100), tile_at(32611, 500_000 + 420,
                                                                      5_800_000 - 100)]
    assert tiles[0].col + 1 == tiles[1].col  # neighbours
    out = {}
    for tile in tiles:
        ds = load_tile(tile, ["elevation", "slope", "aspect", "hillshade"], [], [item]).compute()
        assert not any(np.isnan(ds[v].values).any() for v in ("slope", "aspect", "hillshade"))
        r0 = round((tr.f - tile.transform.f) / 10.0)
        c0 = round((tile.transform.c - tr.c) / 10.0)
        h, w = tile.shape
        np.testing.assert_allclose(ds.elevation.values, z[r0:r0 + h, c0:c0 + w], atol=1e-3)
        for v in ("slope", "aspect", "hillshade"):
            # Every pixel, halo edge included, equals the derivative computed with its true
            # neighbours from the whole raster.
            np.testing.assert_allclose(ds[v].values, ref[v][r0 - 1:r0 - 1 + h, c0 - 1:c0 - 1 + w],
                                       atol=1e-3, err_msg=v)
        out[tile.col] = ds
    # Where the halos overlap, neighbouring tiles agree exactly.
    a, b = out[tiles[0].col], out[tiles[1].col]
    overlap = np.intersect1d(a.x.values, b.x.values)
    assert overlap.size == 2 * tiles[0].halo_px
    np.testing.assert_allclose(a.slope.sel(x=overlap).values, b.slope.sel(x=overlap).values)


def test_geographic_dem_is_reprojected_onto_the_tile(tmp_path: Path) -> None:
    """A Copernicus-like DEM in EPSG:4326 (1 arc-second) covers a UTM tile without holes."""
    lon0, lat0 = -117.30, 52.22
    res = 1.0 / 3600
    z = (3000 - np.arange(360)[:, None] * 2.0 + np.zeros((360, 360))).astype(np.float32)
    path = write_cog(tmp_path / "cop.tif", z, "EPSG:4326", Affine(res, 0, lon0, 0, -res, lat0),
                     nodata=-32767.0)
    item = make_item("cop", "cop-dem-glo-30", datetime(2021, 4, 22), {"data": path})
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32611", always_xy=True).transform(-117.25, 52.17)
    tile = tile_at(32611, x, y, size_px=32, resolution=30.0, halo_px=4)
    ds = load_tile(tile, ["elevation", "slope"], [], [item]).compute()
    assert not np.isnan(ds.elevation.values).any()
    assert 2280 < float(ds.elevation.min()) < float(ds.elevation.max()) < 3000
    # Rows lose 2 m per arc-second (~30.9 m): about 3.7 degrees of slope everywhere.
    assert np.allclose(ds.slope.values, math.degrees(math.atan(2 / 30.9)), atol=0.5)

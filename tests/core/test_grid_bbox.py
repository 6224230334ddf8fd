"""The lon/lat search box of a tile: antimeridian crossings (W > E) and poles (all longitudes)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from glacierscale.core.footprint import bbox_polygon
from glacierscale.core.grid import cell_rings, footprints, tile_at, tile_bbox_lonlat
from glacierscale.core.tiles import TileSpec
from glacierscale.core.zones import NORTH_POLAR, SOUTH_POLAR, to_lonlat

Box = tuple[float, float, float, float]

# Lat tolerance of the containment check: the box is found from 21 points per edge, so it can
# miss the bulge of an edge between two of them by a hair (largest beside a pole, ~1e-3°).
LAT_TOL = 2e-3
LON_TOL = 1e-6  # longitude misses are far smaller: extremes sit at or near the corners

# Places that stress the box: the antimeridian at every latitude, the polar grids, anywhere.
near_dateline = st.tuples(st.one_of(st.floats(179.0, 180.0), st.floats(-180.0, -179.0)),
                          st.floats(-89.99, 89.99))
polar = st.tuples(st.floats(-180.0, 180.0),
                  st.one_of(st.floats(84.0, 90.0), st.floats(-90.0, -80.01)))
anywhere = st.tuples(st.floats(-180.0, 180.0), st.floats(-90.0, 90.0))
places = st.one_of(near_dateline, polar, anywhere)
tiles = st.builds(
    lambda p, size, halo: tile_at(p[0], p[1], size_px=size, resolution=10.0, halo_px=halo),
    places, st.sampled_from([256, 1024, 4096]), st.sampled_from([0, 64]))


def _old_ring(tile: TileSpec) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lon/lat of the 21-points-per-edge ring the box has always been computed from."""
    minx, miny, maxx, maxy = tile.bounds
    t = np.linspace(0.0, 1.0, 21)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full_like(t, maxx),
                         maxx - (maxx - minx) * t, np.full_like(t, minx)])
    ys = np.concatenate([np.full_like(t, miny), miny + (maxy - miny) * t,
                         np.full_like(t, maxy), maxy - (maxy - miny) * t])
    lon, lat = to_lonlat(tile.epsg).transform(xs, ys)
    return np.asarray(lon), np.asarray(lat)


def _old_tile_bbox_lonlat(tile: TileSpec) -> Box:
    """The box before antimeridian handling (plain min/max), the reference for ordinary tiles."""
    lon, lat = _old_ring(tile)
    return (float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat)))


def _dense_ring(tile: TileSpec, per_edge: int = 128) -> tuple[NDArray[np.float64], ...]:
    """Lon/lat of the tile's halo'd square, far denser than the box's own sampling."""
    x, y = cell_rings(tile.epsg, [tile.col], [tile.row], tile.size_m,
                      tile.halo_px * tile.resolution, per_edge=per_edge)
    lon, lat = to_lonlat(tile.epsg).transform(x.ravel(), y.ravel())
    return np.asarray(lon), np.asarray(lat)


def _width(box: Box) -> float:
    """Longitudes spanned by a W,S,E,N box (W > E wraps through 180)."""
    w, _, e, _ = box
    return e - w if w <= e else e - w + 360.0


def _lon_offset(lon: NDArray[np.float64], west: float) -> NDArray[np.float64]:
    """Degrees east of ``west`` in [0, 360): where each longitude sits inside a wrapped box."""
    return np.mod(lon - west, 360.0)


def _assert_contains(box: Box, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> None:
    w, s, e, n = box
    assert -180.0 <= w <= 180.0 and -180.0 <= e <= 180.0 and s < n
    assert np.all(lat >= s - LAT_TOL) and np.all(lat <= n + LAT_TOL)
    off = _lon_offset(lon, w)
    inside = (off <= _width(box) + LON_TOL) | (off >= 360.0 - LON_TOL)
    assert inside.all(), lon[~inside]


def _crosses(lon: NDArray[np.float64]) -> bool:
    """Whether a ring of longitudes jumps across ±180 between two neighbouring vertices."""
    return bool(np.any(np.abs(np.diff(lon)) > 180.0))


def _has_pole(tile: TileSpec) -> bool:
    if tile.epsg not in (NORTH_POLAR, SOUTH_POLAR):
        return False
    minx, miny, maxx, maxy = tile.bounds
    return minx <= 0.0 <= maxx and miny <= 0.0 <= maxy  # the pole is the polar grids' origin


@settings(max_examples=300, deadline=None)
@given(tiles)
def test_box_contains_the_densified_footprint_and_is_tight(tile: TileSpec) -> None:
    box = tile_bbox_lonlat(tile)
    lon, lat = _dense_ring(tile)
    _assert_contains(box, lon, lat)
    w, s, e, n = box
    if _has_pole(tile):
        pole = 90.0 if tile.epsg == NORTH_POLAR else -90.0
        assert (w, e) == (-180.0, 180.0) and pole in (s, n)
        return
    # Tight: the west and east edges are longitudes of the footprint, not a world-wide band.
    off = _lon_offset(lon, w)
    assert np.min(np.minimum(off, 360.0 - off)) < 1e-6
    assert np.min(np.abs(off - _width(box))) < 1e-6
    assert _width(box) < 360.0


@settings(max_examples=300, deadline=None)
@given(tiles)
def test_ordinary_tiles_keep_exactly_the_box_they_had(tile: TileSpec) -> None:
    old = _old_tile_bbox_lonlat(tile)
    new = tile_bbox_lonlat(tile)
    lon, _ = _old_ring(tile)
    if _has_pole(tile) or _crosses(lon):
        assert new != old
    else:
        assert new == old


@pytest.mark.parametrize(("lon", "lat"), [(-179.99, 65.0), (179.99, 65.0), (-179.99, -70.0),
                                          (179.99, 10.0), (179.9, 87.0), (180.0, -85.0)])
def test_a_tile_across_the_antimeridian_gets_west_greater_than_east(lon: float,
                                                                    lat: float) -> None:
    tile = tile_at(lon, lat)
    w, s, e, n = tile_bbox_lonlat(tile)
    assert w > e and 170.0 < w <= 180.0 and -180.0 <= e < -170.0
    assert _width((w, s, e, n)) < 5.0
    assert s < lat < n
    # The tile's own (antimeridian-split) footprint lies in the box, both halves of it.
    fp = footprints(tile.epsg, [tile.col], [tile.row], tile.size_m,
                    halo_m=tile.halo_px * tile.resolution, clip=False)[0]
    assert len(shapely.get_parts(fp)) == 2
    assert shapely.covers(shapely.buffer(bbox_polygon((w, s, e, n)), LAT_TOL), fp)


@pytest.mark.parametrize(("epsg", "lat"), [(NORTH_POLAR, 90.0), (SOUTH_POLAR, -90.0)])
def test_a_tile_on_a_pole_gets_all_longitudes_up_to_the_pole(epsg: int, lat: float) -> None:
    tile = tile_at(0.0, lat)
    assert tile.epsg == epsg
    w, s, e, n = tile_bbox_lonlat(tile)
    assert (w, e) == (-180.0, 180.0)
    assert (n if lat > 0 else s) == lat
    assert abs(s if lat > 0 else n) == pytest.approx(89.9, abs=0.01)  # ~10 km from the pole


def test_a_pole_on_the_tile_edge_still_gives_all_longitudes() -> None:
    # 5,000 km = 200 cells of 25 km: the pole is the shared corner of four cells.
    for col, row in [(199, 199), (200, 199), (199, 200), (200, 200)]:
        tile = TileSpec(NORTH_POLAR, col, row, size_px=2500, resolution=10.0, halo_px=0)
        w, s, e, n = tile_bbox_lonlat(tile)
        assert (w, e, n) == (-180.0, 180.0, 90.0) and s < 90.0

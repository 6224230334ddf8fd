"""Zones, cells, clipped cores, footprints and GeoBoxes of the global tile grid."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon

from glacierscale.core.footprint import bbox_polygon, ring_to_lonlat, unwrap_lon
from glacierscale.core.grid import (
    Cells,
    cell_key,
    core_mask,
    core_polygons,
    footprints,
    grid_spec,
    owner_cells,
    split_key,
    tile_at,
    tile_from_geobox,
    tile_geobox,
)
from glacierscale.core.tiles import TileSpec, local_utm_epsg
from glacierscale.core.zones import (
    NORTH_POLAR,
    SOUTH_POLAR,
    zone_bounds,
    zone_epsg,
    zones_touching,
)

SIZE = 10240.0
lons = st.floats(-180.0, 180.0, allow_nan=False)
lats = st.floats(-90.0, 90.0, allow_nan=False)


@given(lons, st.floats(-79.999, 83.999))
def test_zone_agrees_with_utm_epsg_between_80s_and_84n(lon: float, lat: float) -> None:
    # local_utm_epsg adds 180 before dividing, which rounds points within ~1e-13° of a border
    assume(abs(lon / 6.0 - round(lon / 6.0)) > 1e-12)
    assert int(zone_epsg(lon, lat)) == local_utm_epsg(lon, lat)


@given(lons, lats)
def test_every_point_is_in_the_box_of_its_zone(lon: float, lat: float) -> None:
    epsg = int(zone_epsg(lon, lat))
    w, s, e, n = zone_bounds(epsg)
    lon_n = -180.0 if lon == 180.0 else lon
    assert w <= lon_n <= e and s <= lat <= n
    assert epsg in zones_touching((lon_n, lat, lon_n, lat))


def test_zone_limits_are_half_open() -> None:
    assert zone_epsg(10.0, 84.0) == NORTH_POLAR
    assert zone_epsg(10.0, np.nextafter(84.0, 0.0)) == 32632
    assert zone_epsg(10.0, -80.0) == 32732
    assert zone_epsg(10.0, np.nextafter(-80.0, -90.0)) == SOUTH_POLAR
    assert zone_epsg(12.0, 45.0) == 32633  # a border meridian belongs to the eastern zone
    assert zone_epsg(180.0, 10.0) == zone_epsg(-180.0, 10.0) == 32601
    assert zones_touching((170.0, 50.0, -170.0, 51.0)) == [32601, 32602, 32659, 32660]
    assert zones_touching((0.0, 83.0, 1.0, 85.0)) == [NORTH_POLAR, 32631]


def test_cell_keys_round_trip_and_sort_zone_then_row_then_col() -> None:
    e, c, r = (np.array(v) for v in ([32611, 32611, 3413, 32611], [5, 4, 488, 4], [1, 2, 0, 1]))
    cells = Cells.from_arrays(e, c, r)
    assert cells.ids() == ["3413_0488_0000", "32611_0004_0001", "32611_0005_0001",
                           "32611_0004_0002"]
    assert [tuple(map(int, x)) for x in zip(*split_key(cell_key(e, c, r)), strict=True)] == list(
        zip(e.tolist(), c.tolist(), r.tolist(), strict=True))
    assert cells.index_of(cell_key([32611], [4], [2])).tolist() == [3]
    with pytest.raises(KeyError):
        cells.index_of(cell_key([32611], [9], [9]))


def test_athabasca_point_is_in_a_32611_tile_aligned_to_the_10m_grid() -> None:
    tile = tile_at(-117.25, 52.19)
    assert tile.epsg == 32611
    minx, _, maxx, _ = tile.core_bounds
    assert minx <= 483_000 <= maxx and all(v % 10 == 0 for v in tile.bounds)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([32601, 32633, 32660, 32718, 32745, NORTH_POLAR, SOUTH_POLAR]),
       st.integers(0, 900), st.integers(0, 900), st.sampled_from([256, 512, 1024, 2048]),
       st.sampled_from([10.0, 20.0, 30.0, 60.0]), st.integers(0, 128))
def test_ids_round_trip_to_geoboxes(epsg: int, col: int, row: int, size_px: int,
                                    resolution: float, halo_px: int) -> None:
    tile = TileSpec(epsg, col, row, size_px, resolution, halo_px)
    again = TileSpec.from_id(tile.tile_id, size_px, resolution, halo_px)
    gbox = tile_geobox(again)
    assert gbox.shape == tile.shape and gbox.affine == tile.transform
    assert gbox.crs is not None and gbox.crs.epsg == epsg
    assert tile_from_geobox(gbox, halo_px) == tile
    core = tile_geobox(tile, halo=False)
    assert grid_spec(epsg, size_px, resolution).tile_geobox((col, row)) == core
    # the halo'd grid contains the core grid pixel for pixel
    assert core.affine.c - gbox.affine.c == halo_px * resolution


def test_geobox_off_the_grid_is_refused() -> None:
    gbox = tile_geobox(TileSpec(32611, 47, 411))
    shifted = type(gbox)(gbox.shape, gbox.affine @ gbox.affine.translation(0.5, 0), gbox.crs)
    with pytest.raises(ValueError, match="not aligned"):
        tile_from_geobox(shifted)


def test_unwrap_keeps_closed_rings_closed() -> None:
    ring = np.array([179.9, -179.95, -179.9, 179.8, 179.9])
    u = unwrap_lon(ring)
    assert u[0] == u[-1] and np.all(np.abs(np.diff(u)) < 1.0)


def test_ring_across_the_antimeridian_is_split_not_wrapped() -> None:
    lon = np.array([179.0, -179.0, -179.0, 179.0, 179.0])
    lat = np.array([10.0, 10.0, 11.0, 11.0, 10.0])
    geom = ring_to_lonlat(lon, lat)
    assert isinstance(geom, MultiPolygon) and len(geom.geoms) == 2
    assert geom.area == pytest.approx(2.0)
    assert sorted(round(p.bounds[0]) for p in geom.geoms) == [-180, 179]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ring_around_a_pole_is_a_cap(sign: float) -> None:
    lon = np.linspace(-180.0, 180.0, 73) + 33.0
    lat = np.full(73, 88.0 * sign)
    cap = ring_to_lonlat(lon, lat)
    assert isinstance(cap, Polygon) and cap.is_valid
    assert cap.bounds == pytest.approx((-180.0, min(88 * sign, 90 * sign), 180.0,
                                        max(88 * sign, 90 * sign)))
    assert cap.area == pytest.approx(360.0 * 2.0)


def test_bbox_polygon_across_the_antimeridian() -> None:
    assert bbox_polygon((170.0, 0.0, -170.0, 1.0)).area == pytest.approx(20.0)
    assert bbox_polygon((-180.0, -90.0, 180.0, 90.0)).area == pytest.approx(360 * 180)
    with pytest.raises(ValueError, match="south <= north"):
        bbox_polygon((0.0, 5.0, 1.0, 4.0))


@pytest.mark.parametrize("epsg", [NORTH_POLAR, SOUTH_POLAR])
def test_the_polar_cell_on_the_pole_is_a_cap_and_its_neighbours_are_split(epsg: int) -> None:
    sign = 1.0 if epsg == NORTH_POLAR else -1.0
    e, c, r = owner_cells([0.0], [90.0 * sign], SIZE)
    assert int(e[0]) == epsg
    cols = c[0] + np.arange(-2, 3)
    rows = r[0] + np.arange(-2, 3)
    gc, gr = (a.ravel() for a in np.meshgrid(cols, rows))
    fps = footprints(epsg, gc, gr, SIZE)
    assert all(shapely.is_valid(fps)) and not any(shapely.is_empty(fps))
    centre = fps[12]
    assert centre.bounds[0] == -180.0 and centre.bounds[2] == 180.0
    assert shapely.covers(centre, shapely.Point(0.0, 90.0 * sign))
    # no footprint other than the pole cap spans more than 180° of longitude unless split
    for g in np.delete(fps, 12):
        parts = shapely.get_parts(g)
        assert all(p.bounds[2] - p.bounds[0] < 180.0 for p in parts)
    _assert_disjoint(fps)


def _assert_disjoint(fps: np.ndarray) -> None:
    tree = shapely.STRtree(fps)
    a, b = tree.query(fps, predicate="intersects")
    m = a < b
    overlap = shapely.area(shapely.intersection(fps[a[m]], fps[b[m]]))
    assert overlap.size == 0 or overlap.max() < 1e-12


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 59), st.floats(-79.0, 83.0), st.sampled_from([2560.0, 10240.0, 51200.0]))
def test_cores_meet_exactly_at_a_utm_zone_border(zone: int, lat: float, size: float) -> None:
    border = -180.0 + 6.0 * zone
    west, east = int(zone_epsg(border - 0.01, lat)), int(zone_epsg(border + 0.01, lat))
    fps, cores = [], []
    for epsg, lon in ((west, border - 0.001), (east, border + 0.001)):
        _, c, r = owner_cells([lon], [lat], size)
        cols = np.arange(c[0] - 1, c[0] + 2)
        rows = np.arange(r[0] - 2, r[0] + 3)
        gc, gr = (a.ravel() for a in np.meshgrid(cols, rows))
        fp = footprints(epsg, gc, gr, size)
        keep = ~shapely.is_empty(fp)
        fps.append(fp[keep])
        cores.append(core_polygons(epsg, gc, gr, size)[keep])
    both = np.concatenate(fps)
    _assert_disjoint(both)
    # the western cores stop at the border meridian, the eastern ones start there
    assert max(shapely.bounds(fps[0])[:, 2]) == pytest.approx(border, abs=1e-9)
    assert min(shapely.bounds(fps[1])[:, 0]) == pytest.approx(border, abs=1e-9)
    assert all(np.all(shapely.area(c) > 0) for c in cores)


@pytest.mark.parametrize(("limit", "polar", "utm"),
                         [(84.0, NORTH_POLAR, 32633), (-80.0, SOUTH_POLAR, 32733)])
def test_cores_meet_at_84n_and_80s(limit: float, polar: int, utm: int) -> None:
    poleward = np.sign(limit) * 0.02
    fps = {}
    for epsg, lat in ((polar, limit + poleward), (utm, limit - poleward)):
        _, c, r = owner_cells([13.0, 14.0], [lat, lat], SIZE)
        gc, gr = (a.ravel() for a in np.meshgrid(np.arange(c.min() - 2, c.max() + 3),
                                                 np.arange(r.min() - 2, r.max() + 3)))
        fp = footprints(epsg, gc, gr, SIZE)
        fps[epsg] = fp[~shapely.is_empty(fp)]
    _assert_disjoint(np.concatenate([fps[polar], fps[utm]]))
    pb, ub = shapely.bounds(fps[polar]), shapely.bounds(fps[utm])
    assert np.all(np.abs(pb[:, [1, 3]]) >= abs(limit) - 1e-9)
    assert np.all(np.abs(ub[:, [1, 3]]) <= abs(limit) + 1e-9)
    # both sides reach the limit: no gap between the UTM and the polar grid
    assert np.isclose(np.abs(pb[:, [1, 3]]).min(), abs(limit))
    assert np.isclose(np.abs(ub[:, [1, 3]]).max(), abs(limit))


def test_core_mask_splits_a_border_tile_between_zones() -> None:
    _, c, r = owner_cells([11.999], [47.0], SIZE)
    west = TileSpec(32632, int(c[0]), int(r[0]), size_px=256, resolution=40.0)
    mask = core_mask(west)
    assert 0 < mask.mean() < 1
    # the western zone keeps the western pixels of each row
    assert np.all(np.diff(mask.astype(int), axis=1) <= 0)
    area = core_polygons(32632, [west.col], [west.row], west.size_m)[0].area
    assert mask.mean() == pytest.approx(area / west.size_m**2, abs=0.01)
    inner = tile_at(9.0, 47.0)
    assert core_mask(inner).all()

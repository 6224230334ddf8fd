"""Ownership and coverage: every glacier point in exactly one core, seamless across zones."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from glacierscale.core.cover import cells_in_bbox, cover_glaciers
from glacierscale.core.grid import Cells, cell_key, footprints, owner_cells
from glacierscale.core.zones import NORTH_POLAR, SOUTH_POLAR

SIZE = 10240.0
#: Places where the grid is hardest: a UTM border, the antimeridian (both sides), 84N, 80S, the
#: poles, the equator on a zone border, a plain mid-zone spot.
ANCHORS = [(12.0, 46.5), (180.0, 65.0), (-180.0, -54.0), (10.0, 84.0), (-60.0, -80.0),
           (0.0, 90.0), (45.0, -90.0), (-168.0, 0.0), (86.9, 27.9)]


@st.composite
def clusters(draw: st.DrawFn, max_points: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Points scattered up to ~30 km around one of the anchors."""
    lon0, lat0 = draw(st.sampled_from(ANCHORS))
    n = draw(st.integers(1, max_points))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dy = rng.uniform(-30, 30, n) / 111.0
    lat = np.clip(lat0 + dy, -90.0, 90.0)
    dx = rng.uniform(-30, 30, n) / (111.0 * np.maximum(np.cos(np.radians(lat)), 0.01))
    lon = ((lon0 + dx + 180.0) % 360.0) - 180.0
    return lon, lat


def _footprints(cells: Cells) -> np.ndarray:
    out = np.empty(len(cells), dtype=object)
    for epsg, idx in cells.by_zone():
        out[idx] = footprints(epsg, cells.col[idx], cells.row[idx], SIZE)
    return out


@settings(max_examples=40, deadline=None)
@given(clusters())
def test_every_point_is_in_exactly_one_core(pts: tuple[np.ndarray, np.ndarray]) -> None:
    lon, lat = pts
    cov = cover_glaciers(lon, lat, 3000.0, SIZE)  # every core within 3 km of a point
    fps = _footprints(cov.cells)
    assert not shapely.is_empty(fps).any() and shapely.is_valid(fps).all()
    points = shapely.points(lon, lat)
    tree = shapely.STRtree(fps)
    inside = tree.query(points, predicate="contains_properly")
    touching = tree.query(points, predicate="intersects")
    # no point is strictly inside two cores; every point touches its owner's core
    assert np.bincount(inside[0], minlength=lon.size).max(initial=0) <= 1
    assert np.all(np.bincount(touching[0], minlength=lon.size) >= 1)
    own_fp = fps[cov.owner]
    assert shapely.distance(own_fp, points).max() < 1e-9
    # a strictly-inside core, when there is one, is the owner's
    assert np.all(inside[1] == cov.owner[inside[0]])
    _assert_disjoint(fps)


def _assert_disjoint(fps: np.ndarray) -> None:
    tree = shapely.STRtree(fps)
    a, b = tree.query(fps, predicate="intersects")
    m = a < b
    overlap = shapely.area(shapely.intersection(fps[a[m]], fps[b[m]]))
    assert overlap.size == 0 or overlap.max() < 1e-12


@settings(max_examples=30, deadline=None)
@given(clusters(max_points=12), st.floats(50.0, 8000.0), st.integers(0, 2**32 - 1))
def test_outlines_are_covered_by_the_cores_of_their_tiles(
    pts: tuple[np.ndarray, np.ndarray], radius_m: float, seed: int
) -> None:
    """Every point of a glacier lies in a core of one of the glacier's tiles, across any border."""
    lon, lat = pts
    # Lumpy glacier-like outlines on continuous longitudes (they may run past 180).
    rng = np.random.default_rng(seed)
    k = 12
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    rad = radius_m * rng.uniform(0.4, 1.0, (lon.size, k))
    dlat = rad * np.sin(ang) / 111_000.0
    lat_r = np.clip(lat[:, None] + dlat, -89.99, 89.99)
    cos = np.maximum(np.cos(np.radians(lat_r)), 0.02)
    dlon = rad * np.cos(ang) / (111_000.0 * cos)
    outlines = np.array([shapely.make_valid(Polygon(np.column_stack([lo + dl, la])))
                         for lo, dl, la in zip(lon, dlon, lat_r, strict=True)], dtype=object)
    rep = shapely.get_coordinates(shapely.point_on_surface(outlines))
    cov = cover_glaciers(rep[:, 0], rep[:, 1], 0.0, SIZE, outlines)
    reached = set(zip(cov.pair_glacier.tolist(), cov.pair_cell.tolist(), strict=True))
    # sample points inside each outline: their owning cell must be one of the glacier's tiles
    for g, poly in enumerate(outlines):
        x0, y0, x1, y1 = poly.bounds
        cand = np.column_stack([rng.uniform(x0, x1, 60), rng.uniform(y0, y1, 60)])
        inside = cand[shapely.contains_xy(poly, cand[:, 0], cand[:, 1])]
        if inside.size == 0:
            continue
        e, c, r = owner_cells(inside[:, 0], inside[:, 1], SIZE)
        pos = cov.cells.index_of(cell_key(e, c, r))
        assert {(g, int(p)) for p in pos} <= reached
    assert all((g, int(o)) in reached for g, o in enumerate(cov.owner))


@settings(max_examples=20, deadline=None)
@given(clusters(), st.data())
def test_cover_is_deterministic_under_shuffling(pts: tuple[np.ndarray, np.ndarray],
                                                data: st.DataObject) -> None:
    lon, lat = pts
    perm = np.asarray(data.draw(st.permutations(range(lon.size))), dtype=np.int64)
    a = cover_glaciers(lon, lat, 700.0, SIZE)
    b = cover_glaciers(lon[perm], lat[perm], 700.0, SIZE)
    assert a.cells.ids() == b.cells.ids()
    assert np.array_equal(a.owner[perm], b.owner)


def test_adding_glaciers_elsewhere_never_renames_a_tile() -> None:
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(10, 13, 200), rng.uniform(46, 47, 200)
    alone = cover_glaciers(lon, lat, 500.0, SIZE)
    more = cover_glaciers(np.r_[lon, rng.uniform(-150, -140, 300)],
                          np.r_[lat, rng.uniform(60, 62, 300)], 500.0, SIZE)
    ids_more = np.asarray(more.cells.ids())
    assert set(alone.cells.ids()) <= set(ids_more.tolist())
    assert np.array_equal(np.asarray(alone.cells.ids())[alone.owner], ids_more[more.owner[:200]])


def test_glacier_across_the_antimeridian_reaches_both_zones_once_owned() -> None:
    ring = Polygon([(179.95, 65.0), (180.05, 65.0), (180.05, 65.02), (179.95, 65.02)])
    rep = shapely.get_coordinates(shapely.point_on_surface(ring))
    cov = cover_glaciers(rep[:, 0], rep[:, 1], 500.0, SIZE, np.array([ring], dtype=object))
    assert set(np.unique(cov.cells.epsg).tolist()) == {32601, 32660}
    assert cov.owner.size == 1
    fps = _footprints(cov.cells)
    assert max(b[2] - b[0] for b in shapely.bounds(fps)) < 1.0  # nothing wraps around the globe


def test_glacier_across_84n_reaches_utm_and_polar_tiles() -> None:
    lon, lat = np.array([-40.0]), np.array([83.999])
    cov = cover_glaciers(lon, lat, 2000.0, SIZE)
    assert {NORTH_POLAR, 32624} <= set(cov.cells.epsg.tolist())
    assert int(cov.cells.epsg[cov.owner[0]]) == 32624
    lon, lat = np.array([100.0]), np.array([-80.001])
    cov = cover_glaciers(lon, lat, 2000.0, SIZE)
    assert {SOUTH_POLAR, 32747} <= set(cov.cells.epsg.tolist())
    assert int(cov.cells.epsg[cov.owner[0]]) == SOUTH_POLAR


def test_ice_cap_spans_many_tiles_and_is_owned_by_one() -> None:
    # a disk of ~8,000 km² (Vatnajökull-sized) given as a centroid and an area
    reach = np.sqrt(8000e6 / np.pi) + 500.0
    cov = cover_glaciers([-16.8], [64.4], [reach], SIZE)
    assert len(cov.cells) > 70 and cov.owner.size == 1
    assert cov.pair_glacier.size == len(cov.cells)


def test_bbox_cells_at_athabasca_antimeridian_and_pole() -> None:
    assert cells_in_bbox((-117.30, 52.16, -117.20, 52.22), SIZE).ids() == [
        "32611_0046_0411", "32611_0047_0411", "32611_0046_0412", "32611_0047_0412"]
    across = cells_in_bbox((179.9, 60.0, -179.9, 60.1), SIZE)
    assert set(across.epsg.tolist()) == {32601, 32660}
    pole = cells_in_bbox((-180.0, 89.9, 180.0, 90.0), SIZE)
    assert set(pole.epsg.tolist()) == {NORTH_POLAR} and len(pole) >= 1
    with pytest.raises(ValueError, match="--outlines"):
        cells_in_bbox((-180.0, -60.0, 180.0, 60.0), SIZE)

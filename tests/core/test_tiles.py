"""TileSpec: ids, bounds and transforms are consistent and aligned to the 10 m grid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glacierscale.core.tiles import TileSpec, cells_covering, grid_origin, local_utm_epsg


@given(st.integers(1, 60), st.booleans(), st.integers(0, 900), st.integers(0, 900))
def test_id_round_trips(zone: int, north: bool, col: int, row: int) -> None:
    t = TileSpec((32600 if north else 32700) + zone, col, row)
    assert TileSpec.from_id(t.tile_id) == t


def test_bounds_halo_shape_and_alignment() -> None:
    t = TileSpec(32611, 46, 411, size_px=1024, resolution=10.0, halo_px=64)
    minx, miny, maxx, maxy = t.core_bounds
    assert (maxx - minx, maxy - miny) == (10240.0, 10240.0)
    assert t.shape == (1152, 1152)
    assert t.bounds == (minx - 640, miny - 640, maxx + 640, maxy + 640)
    # origin on the Sentinel-2 10 m grid: every pixel edge is a multiple of 10 m
    assert minx % 10 == 0 and maxy % 10 == 0
    assert t.transform * (0, 0) == (t.bounds[0], t.bounds[3])
    assert t.core_transform * (1024, 1024) == (maxx, miny)
    rows, cols = t.core_slice
    assert (rows.stop - rows.start, cols.start) == (1024, 64)


def test_cells_covering_contains_the_box() -> None:
    bounds = (477870.0, 5778330.0, 484320.0, 5784480.0)
    cells = cells_covering(32611, bounds, 10240.0)
    assert cells == [(46, 411), (47, 411), (46, 412), (47, 412)]
    union = [TileSpec(32611, c, r).core_bounds for c, r in cells]
    assert min(b[0] for b in union) <= bounds[0] and max(b[2] for b in union) >= bounds[2]
    assert min(b[1] for b in union) <= bounds[1] and max(b[3] for b in union) >= bounds[3]


def test_utm_zone_and_bad_inputs() -> None:
    assert local_utm_epsg(-117.25, 52.2) == 32611
    assert local_utm_epsg(86.9, 27.98) == 32645
    assert local_utm_epsg(-70.0, -47.0) == 32719
    assert local_utm_epsg(180.0, 60.0) == 32601  # +180 wraps onto -180
    with pytest.raises(ValueError, match="UTM zone"):
        grid_origin(4326)
    with pytest.raises(ValueError, match="EPSG_COL_ROW"):
        TileSpec.from_id("not-a-tile")

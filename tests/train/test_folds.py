"""Spatial folds: whole tiles in contiguous stripes (or whole regions), every fold non-empty."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glacierscale.core.tiles import TileSpec
from glacierscale.train.folds import fold_members, spatial_folds


def _tiles(ncols: int, nrows: int) -> list[TileSpec]:
    return [TileSpec(32645, 100 + c, 200 + r, 64, 30.0, 16)
            for r in range(nrows) for c in range(ncols)]


@given(st.integers(2, 9), st.integers(1, 9), st.integers(2, 5),
       st.lists(st.floats(0, 1e4), min_size=81, max_size=81))
@settings(max_examples=80, deadline=None)
def test_stripes_are_contiguous_complete_and_balanced(ncols: int, nrows: int, k: int,
                                                      w: list[float]) -> None:
    tiles = _tiles(ncols, nrows)
    if max(ncols, nrows) < k:
        with pytest.raises(ValueError, match="distinct tile columns or rows"):
            spatial_folds(tiles, k)
        return
    weights = {t.tile_id: w[i] for i, t in enumerate(tiles)}
    folds = spatial_folds(tiles, k, weights)
    assert set(folds) == {t.tile_id for t in tiles}
    assert set(folds.values()) == set(range(k))  # every fold holds tiles
    along = "col" if ncols >= nrows else "row"
    by_key: dict[int, set[int]] = {}
    for t in tiles:
        by_key.setdefault(getattr(t, along), set()).add(folds[t.tile_id])
    # a whole column (or row) is in one fold, and folds follow the columns in order
    assert all(len(v) == 1 for v in by_key.values())
    order = [next(iter(by_key[c])) for c in sorted(by_key)]
    assert order == sorted(order)
    assert spatial_folds(list(reversed(tiles)), k, weights) == folds  # order-independent


def test_regional_folds_keep_regions_whole() -> None:
    tiles = _tiles(4, 2)
    regions = {t.tile_id: f"R{t.col % 3}" for t in tiles}
    folds = spatial_folds(tiles, 3, {t.tile_id: 1.0 for t in tiles}, regions=regions)
    for r in set(regions.values()):
        assert len({folds[t] for t in folds if regions[t] == r}) == 1
    assert sorted(len(m) for m in fold_members(folds, 3)) == [2, 2, 4]  # regions of 2, 2, 4
    with pytest.raises(ValueError, match="at least 4 regions"):
        spatial_folds(tiles, 4, regions=regions)


def test_bad_requests() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        spatial_folds(_tiles(3, 3), 1)
    with pytest.raises(ValueError, match="no tiles"):
        spatial_folds([], 2)


def test_tile_regions_from_an_outline_attribute() -> None:
    import geopandas as gpd
    import numpy as np
    from shapely.geometry import box

    from glacierscale.train.chips import Chip
    from glacierscale.train.cv import tile_regions

    tiles = _tiles(4, 1)
    chips = [Chip(t, np.zeros((1, 1, 1), np.float32), np.zeros((1, 1), np.uint8)) for t in tiles]
    b = [t.core_bounds for t in tiles]
    # zone A covers most of tile 0 and a sliver of tile 1; zone B covers tile 2; tile 3 has none
    outlines = gpd.GeoDataFrame({"zone": ["A", "B"]}, geometry=[
        box(b[0][0], b[0][1], b[1][0] + 100, b[0][3]), box(*b[2])], crs="EPSG:32645")
    regions = tile_regions(chips, outlines.to_crs("EPSG:4326"), "zone")
    assert regions == {tiles[0].tile_id: "A", tiles[1].tile_id: "A", tiles[2].tile_id: "B",
                       tiles[3].tile_id: "B"}  # tile 3: the nearest outline
    with pytest.raises(ValueError, match="no column 'O2Region'"):
        tile_regions(chips, outlines, "O2Region")

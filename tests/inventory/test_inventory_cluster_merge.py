"""The cluster merge equals ``merge_tiles``: same polygons, ids, order and values, bit for bit.

Tiles are generated (masks cut into tiles and vectorized, as runs do), written as a run writes
them, and merged both ways on a real ``LocalCluster`` of two worker processes: within one zone,
across a UTM zone border, across the antimeridian (UTM 60 / UTM 1) and at the polar limit
(UTM / EPSG:3413 at 84°N).
"""

from __future__ import annotations

from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyproj import CRS
from rasterio.features import rasterize
from test_inventory_merge import _blobs, _split, _tiles  # the same generated tiles

from glacierscale.core.tiles import TileSpec, cells_covering
from glacierscale.core.zones import zone_clip_polygon
from glacierscale.inventory import merge_tiles, read_outlines, vectorize_tile
from glacierscale.inventory.cluster_merge import (
    _cross_zone_pairs,
    components,
    merge_inventory_on_cluster,
    merge_on_cluster,
    write_bands,
)
from glacierscale.io import Store, read_geoparquet, write_geoparquet


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _write(store: Store, frames: list[gpd.GeoDataFrame], ids: list[str]) -> None:
    for f, t in zip(frames, ids, strict=True):
        write_geoparquet(store, f"tiles/{t}/outlines.parquet", f)


def _both(client: Client, tmp_path, frames: list[gpd.GeoDataFrame],  # type: ignore[no-untyped-def]
          ids: list[str], min_area_m2: float = 5000.0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    store = Store(str(tmp_path))
    _write(store, frames, ids)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    single = merge_tiles([frames[i] for i in order], min_area_m2=min_area_m2)
    bands = merge_on_cluster(client, store, [ids[i] for i in order], min_area_m2=min_area_m2)
    if not bands:
        return single, single.iloc[:0]
    write_bands(store, bands, "inventory/glaciers.parquet")
    return single, read_geoparquet(store, "inventory/glaciers.parquet")


def _assert_same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert list(a["glacier_id"]) == list(b["glacier_id"])
    for c in a.columns:
        if c == "geometry":
            assert a.geometry.geom_equals_exact(b.geometry, 0.0, align=False).all()
        else:
            pd.testing.assert_series_equal(a[c].reset_index(drop=True),
                                           b[c].reset_index(drop=True), check_dtype=False)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
@example(seed=14497, n=4)
def test_one_zone_equals_the_single_process_merge(client: Client, tmp_path_factory,  # type: ignore[no-untyped-def]
                                                   seed: int, n: int) -> None:
    tiles = _tiles()
    frames = _split(_blobs(seed, n, 0.02), tiles, min_area_m2=0.0)
    ids = [t.tile_id for row in tiles for t in row]
    single, cluster = _both(client, tmp_path_factory.mktemp("one-zone"), frames, ids,
                            min_area_m2=0.0)
    assert len(single)
    _assert_same(single, cluster)


def _cap_tiles(lon0: float, lat0: float, epsgs: list[int], radius: float = 2500.0,
               size: int = 48, res: float = 30.0) -> tuple[list[gpd.GeoDataFrame], list[str]]:
    """An ice cap (with a nunatak) around lon0/lat0, mapped by each zone's tiles on its own
    ground only (pixels of the other zone are no data), as runs map zone borders."""
    laea = CRS.from_proj4(f"+proj=laea +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
    cap = shapely.Point(0, 0).buffer(radius, quad_segs=32)
    cap = cap.difference(shapely.Point(radius / 3, 0).buffer(radius / 6))
    small = shapely.Point(radius * 1.6, radius * 0.4).buffer(radius / 5)  # a second glacier
    geo = gpd.GeoSeries([cap, small], crs=laea)
    frames, ids = [], []
    for epsg in epsgs:
        g = geo.to_crs(epsg)
        minx, miny, maxx, maxy = g.total_bounds
        ground = zone_clip_polygon(epsg, (minx - 5000, miny - 5000, maxx + 5000, maxy + 5000))
        for col, row in cells_covering(epsg, tuple(g.total_bounds), size * res):
            t = TileSpec(epsg, col, row, size, res, 0)
            ice = rasterize(((p, 1) for p in g), out_shape=(size, size),
                            transform=t.core_transform, dtype="uint8")
            mine = rasterize([(ground, 1)], out_shape=(size, size), transform=t.core_transform,
                             dtype="uint8")
            mask = np.where(mine == 1, ice, 255).astype("uint8")
            f = vectorize_tile(mask, None, transform=t.core_transform, crs=t.crs,
                               tile_id=t.tile_id)
            frames.append(f)
            ids.append(t.tile_id)
    return frames, ids


@pytest.mark.parametrize(("lon0", "lat0", "epsgs"), [
    (90.0, 28.0, [32645, 32646]),  # a UTM zone border
    (180.0, 65.0, [32660, 32601]),  # the antimeridian
    (30.0, 84.0, [32636, 3413]),  # UTM north limit: polar stereographic beyond 84°N
])
def test_cap_across_zones_equals_the_single_process_merge(client: Client, tmp_path,  # type: ignore[no-untyped-def]
                                                          lon0: float, lat0: float,
                                                          epsgs: list[int]) -> None:
    frames, ids = _cap_tiles(lon0, lat0, epsgs)
    assert {i.split("_")[0] for i, f in zip(ids, frames, strict=True) if len(f)} == {
        str(e) for e in epsgs}
    single, cluster = _both(client, tmp_path, frames, ids)
    # The cap is one glacier again, from both zones' tiles; the small one stays apart.
    assert len(single) == 2
    cap = single.loc[single["area_km2"].idxmax()]
    assert {t.split("_")[0] for t in cap["tile_ids"].split(",")} == {str(e) for e in epsgs}
    _assert_same(single, cluster)


def test_empty_run_gives_no_bands(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from glacierscale.inventory import empty_outlines

    t = TileSpec(32611, 1, 1, 24, 10.0, 0)
    assert _both(client, tmp_path, [empty_outlines(t.crs)], [t.tile_id])[1].empty


def test_components_join_chains_and_leave_singletons() -> None:
    labels = components(6, np.array([4, 2, 1]), np.array([5, 1, 0]))
    assert labels.tolist() == [0, 0, 0, 3, 4, 4]
    assert components(3, np.zeros(0, int), np.zeros(0, int)).tolist() == [0, 1, 2]


def test_cross_zone_boxes_meet_across_the_antimeridian() -> None:
    # Two tiny boxes a metre apart across 180°, in zones 60 and 1; a third far away.
    b = np.array([[179.99990, 60.0, 179.99999, 60.0001],
                  [-180.0, 60.0, -179.99990, 60.0001],
                  [-170.0, 60.0, -169.9, 60.1]])
    a, c = _cross_zone_pairs(b, np.array([0, 1, 1]), "+proj=laea +lat_0=60 +lon_0=180", 10.0)
    assert list(zip(a.tolist(), c.tolist(), strict=True)) == [(0, 1)]


def test_gathered_inventory_equals_and_scratch_is_cleaned(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, ids = _cap_tiles(90.0, 28.0, [32645, 32646])
    store = Store(str(tmp_path))
    _write(store, frames, ids)
    order = sorted(range(len(ids)), key=ids.__getitem__)
    single = merge_tiles([frames[i] for i in order])
    got = merge_inventory_on_cluster(client, store, [ids[i] for i in order])
    _assert_same(single, got)
    assert not [k for k in store.list("inventory/") if ".merge-" in k]


@pytest.mark.integration
def test_everest_tiles_equal_the_single_process_merge(client: Client, tmp_path,  # type: ignore[no-untyped-def]
                                                      shared_data) -> None:
    """86 real RGI glaciers rasterised onto 30 m tiles of UTM 45, vectorized, merged."""
    ref = read_outlines(str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"))
    utm = ref.to_crs(32645)
    size, res = 256, 30.0
    frames, ids = [], []
    for col, row in cells_covering(32645, tuple(utm.total_bounds), size * res):
        t = TileSpec(32645, col, row, size, res, 0)
        mask = rasterize(((g, 1) for g in utm.geometry), out_shape=(size, size),
                         transform=t.core_transform, dtype="uint8")
        prob = np.where(mask == 1, 0.9, 0.1).astype("float32")
        frames.append(vectorize_tile(mask, prob, transform=t.core_transform, crs=t.crs,
                                     tile_id=t.tile_id))
        ids.append(t.tile_id)
    single, cluster = _both(client, tmp_path, frames, ids)
    assert len(single) > 20 and single["n_tiles"].max() >= 4  # touching glaciers join
    _assert_same(single, cluster)

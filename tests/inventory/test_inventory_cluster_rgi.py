"""RGI identity and area change on a cluster equal ``attach_rgi``: same ids, rows and areas.

Generated outlines (overlapping reference outlines, advances across divides, new ice, tasks
forced small so components spread over many tasks) and real RGI outlines (Everest, and Oetztal
with its divide lines), on a real ``LocalCluster`` of two worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster
from shapely.geometry import box
from test_inventory_real import _tile_and_merge  # real outlines through tiles and the merge
from test_inventory_rgi import X0, Y0, _inventory

from glacierscale.inventory import attach_rgi, cluster_rgi, equal_area_crs, read_outlines
from glacierscale.inventory.cluster_rgi import attach_rgi_on_cluster

UTM = "EPSG:32645"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def _assert_same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame, *, exact: bool = True) -> None:
    assert list(a["rgi_id"]) == list(b["rgi_id"])
    assert list(a["glacier_id"]) == list(b["glacier_id"])
    for c in ("area_km2", "area_km2_lo", "area_km2_hi", "ref_area_km2", "area_change_km2"):
        np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), rtol=1e-6,
                                   atol=1e-12)
    for c in ("is_new", "name", "region", "date_pred", "date_ref", "mean_prob",
              "mean_uncertainty", "n_tiles"):
        pd.testing.assert_series_equal(a[c], b[c], check_dtype=False)
    if exact:
        assert a.geometry.geom_equals_exact(b.geometry, 0.0, align=False).all()
        pd.testing.assert_series_equal(a["area_km2"], b["area_km2"])
    else:
        ea = equal_area_crs([tuple(a.total_bounds)])
        diff = a.to_crs(ea).geometry.symmetric_difference(b.to_crs(ea).geometry, align=False)
        assert (diff.area.to_numpy() <= 1e-6 * a.to_crs(ea).area.to_numpy()).all()


def _generated() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A row of reference glaciers (two overlapping, two regions), ice grown over the divides,
    a glacier gone, and new ice."""
    boxes = {f"RGI60-15.{i:05d}": (i * 1000.0, 0.0, i * 1000.0 + 1000.0, 1000.0)
             for i in range(1, 7)}
    boxes["RGI60-15.00007"] = (2900.0, 900.0, 3600.0, 1600.0)  # overlaps two of the row
    boxes["RGI60-14.00001"] = (9000.0, 0.0, 10000.0, 1000.0)
    boxes["RGI60-14.00002"] = (12000.0, 0.0, 13000.0, 1000.0)  # nothing mapped there
    ids = list(boxes)
    ref = gpd.GeoDataFrame(
        {"RGIId": ids, "BgnDate": ["20000101"] * len(ids),
         "O1Region": [i[6:8] for i in ids], "Name": [f"glacier {i[-2:]}" for i in ids]},
        geometry=[box(X0 + a, Y0 + b, X0 + c, Y0 + d) for a, b, c, d in boxes.values()],
        crs=UTM)
    inv = _inventory((900, -100, 3200, 1100), (3800, -50, 6100, 1200), (8900, -100, 9500, 700),
                     (15000, 0, 15500, 500), (20000, 3000, 20400, 3400), (9600, 100, 9900, 900))
    return inv, ref


def test_generated_equal_over_many_tasks(client: Client,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    inv, ref = _generated()
    monkeypatch.setattr(cluster_rgi, "POLYGONS_PER_TASK", 2)  # a task per component or so
    single = attach_rgi(inv, ref, date_pred=date(2020, 1, 1), date_ref=None)
    spread = attach_rgi_on_cluster(client, inv, ref, date_pred=date(2020, 1, 1), date_ref=None)
    assert single["is_new"].sum() >= 2 and (~single["is_new"]).sum() >= 6
    assert set(single["region"]) == {"14", "15"}
    _assert_same(single, spread)


def test_nothing_predicted_and_no_reference_nearby(client: Client) -> None:
    inv, ref = _generated()
    empty = attach_rgi_on_cluster(client, inv.iloc[:0], ref, date_pred=None, date_ref=None)
    assert len(empty) == 0
    far = ref.translate(5e5, 0)
    _assert_same(attach_rgi(inv, far, date_pred=None, date_ref=None),
                 attach_rgi_on_cluster(client, inv, far, date_pred=None, date_ref=None))


@pytest.mark.integration
def test_everest_equal(client: Client, shared_data: Path) -> None:
    ref = read_outlines(str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"))
    grown = ref.to_crs(32645).buffer(60.0, quad_segs=2)  # advanced: ice crosses divides
    inv, _ = _tile_and_merge(gpd.GeoDataFrame(geometry=grown), size=256, res=30.0, epsg=32645)
    single = attach_rgi(inv, ref, date_pred=date(2020, 9, 1), date_ref=None)
    spread = attach_rgi_on_cluster(client, inv, ref, date_pred=date(2020, 9, 1), date_ref=None)
    assert len(single) >= 80
    _assert_same(single, spread)


@pytest.mark.integration
def test_oetztal_with_divides_equal(client: Client, shared_data: Path) -> None:
    base = shared_data / "outlines_dem" / "oetztal"
    ref = read_outlines(str(base / "rgi_oetztal.shp"))
    divides = read_outlines(str(base / "rgi_intersect_oetztal.shp"))
    grown = ref.to_crs(32632).buffer(40.0, quad_segs=2)
    inv, _ = _tile_and_merge(gpd.GeoDataFrame(geometry=grown), size=256, res=30.0, epsg=32632)
    kw = {"date_pred": date(2020, 9, 1), "date_ref": None, "intersects": divides}
    single = attach_rgi(inv, ref, **kw)  # type: ignore[arg-type]
    spread = attach_rgi_on_cluster(client, inv, ref, **kw)  # type: ignore[arg-type]
    assert len(single) > 10
    _assert_same(single, spread, exact=False)

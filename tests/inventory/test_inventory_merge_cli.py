"""``glacierscale merge``: rebuild the inventory from a run's tiles, also a partial run."""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import typer
from rasterio.features import rasterize
from typer.testing import CliRunner

from glacierscale.cli.merge import register
from glacierscale.core.tiles import TileSpec, cells_covering
from glacierscale.inventory import equal_area_crs, read_outlines, vectorize_tile
from glacierscale.io import (
    Provenance,
    Store,
    read_geoparquet,
    tile_complete,
    validate_core,
    write_tile_outputs,
)

pytestmark = pytest.mark.integration

CONTRACT = ["rgi_id", "area_km2", "ref_area_km2", "area_change_km2", "area_change_pct_per_yr"]


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """glacierscale (test harness)."""

    register(app)
    return app


def _write_run(store: Store, ref: gpd.GeoDataFrame) -> list[str]:
    """Tiles of Everest at 60 m as a run writes them, skipping tiles already complete."""
    utm = ref.to_crs(32645)
    size, res = 256, 60.0
    prov = Provenance(("LE07_140041_20001030",), "test-model")
    ids = []
    for col, row in cells_covering(32645, tuple(utm.total_bounds), size * res):
        t = TileSpec(32645, col, row, size, res, 0)
        ids.append(t.tile_id)
        if tile_complete(store, t.tile_id, prov.token(t.tile_id)):
            continue
        mask = rasterize(((g, 1) for g in utm.geometry), out_shape=(size, size),
                         transform=t.core_transform, dtype="uint8")
        prob = np.where(mask == 1, 0.85, 0.05).astype("float32")
        outlines = vectorize_tile(mask, prob, transform=t.core_transform, crs=t.crs,
                                  tile_id=t.tile_id)
        write_tile_outputs(store, t, prob, outlines=outlines, when=datetime(2020, 10, 30),
                           provenance=prov)
    return ids


def test_merge_cli_partial_then_complete(tmp_path: Path, shared_data: Path) -> None:
    ref_path = str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg")
    ref = read_outlines(ref_path)
    out = str(tmp_path / "run")
    store = Store(out)
    runner = CliRunner()
    # Nothing there yet: a clear error.
    res = runner.invoke(_app(), ["merge", "--out", out])
    assert res.exit_code != 0 and "no finished tiles" in str(res.exception)

    tiles = _write_run(store, ref)
    unfinished = next(t for t in tiles if
                      len(read_geoparquet(store, f"tiles/{t}/outlines.parquet")) > 3)
    store.delete(f"tiles/{unfinished}/item.json")
    res = runner.invoke(_app(), ["merge", "--out", out])
    assert res.exit_code == 0, res.output
    assert "1 tile(s) without item.json" in res.output
    partial = read_geoparquet(store, "inventory/glaciers.parquet")

    before = {k: store.read_bytes(k) for k in store.list("tiles/") if unfinished not in k}
    _write_run(store, ref)  # the rerun finishes the unfinished tile and skips the others
    assert all(store.read_bytes(k) == v for k, v in before.items())
    res = runner.invoke(_app(), ["merge", "--out", out, "--reference", ref_path,
                                 "--export", "gpkg,fgb"])
    assert res.exit_code == 0, res.output
    inv = read_geoparquet(store, "inventory/glaciers.parquet")
    assert inv.crs.to_epsg() == 4326 and set(CONTRACT) <= set(inv.columns)
    assert sorted(inv.rgi_id) == sorted(ref.RGIId)
    ea = equal_area_crs([tuple(ref.total_bounds)])
    assert inv.area_km2.sum() == pytest.approx(ref.to_crs(ea).area.sum() / 1e6, rel=0.01)
    assert partial.area_km2.sum() < inv.area_km2.sum()
    # The date of the mapping comes from the tile items; the reference's from RGI.
    assert set(pd.to_datetime(inv.date_pred).dt.date.astype(str)) == {"2020-10-30"}
    for ext, driver in (("gpkg", "GPKG"), ("fgb", "FlatGeobuf")):
        got = gpd.read_file(store.url(f"inventory/glaciers.{ext}"))
        assert len(got) == len(inv) and set(CONTRACT) <= set(got.columns), driver
    summary = pd.read_csv(io.BytesIO(store.read_bytes("inventory/summary.csv")))
    total = summary.set_index("region").loc["total"]
    assert total.n_glaciers == 86 and total.area_km2 == pytest.approx(inv.area_km2.sum())
    validate_core(json.loads(store.read_bytes("collection.json")))
    assert f"./tiles/{unfinished}/item.json" in store.read_bytes("collection.json").decode()


def test_merge_without_reference_keeps_contract_columns(tmp_path: Path,
                                                        shared_data: Path) -> None:
    ref = read_outlines(str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"))
    store = Store(str(tmp_path / "run"))
    _write_run(store, ref.iloc[:10])
    res = CliRunner().invoke(_app(), ["merge", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    inv = read_geoparquet(store, "inventory/glaciers.parquet")
    assert set(CONTRACT) <= set(inv.columns) and len(inv) > 0
    assert inv.rgi_id.isna().all() and inv.ref_area_km2.isna().all()
    res = CliRunner().invoke(_app(), ["merge", "--out", str(tmp_path / "run"), "--export", "shp"])
    assert res.exit_code != 0 and "unknown export format" in str(res.exception)
    res = CliRunner().invoke(_app(), ["merge", "--out", str(tmp_path / "run"),
                                      "--date-pred", "30/10/2020"])
    assert res.exit_code != 0 and "YYYY-MM-DD" in res.output


def test_merge_cli_on_a_scheduler_equals_the_one_process_merge(tmp_path: Path,
                                                               shared_data: Path) -> None:
    """``--scheduler``: merge and RGI identity on a cluster of two worker processes."""
    from distributed import LocalCluster

    ref_path = str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg")
    out = str(tmp_path / "run")
    store = Store(out)
    _write_run(store, read_outlines(ref_path))
    res = CliRunner().invoke(_app(), ["merge", "--out", out, "--reference", ref_path])
    assert res.exit_code == 0, res.output
    assert "(single process)" in res.output
    single = read_geoparquet(store, "inventory/glaciers.parquet")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        res = CliRunner().invoke(_app(), ["merge", "--out", out, "--reference", ref_path,
                                          "--scheduler", cluster.scheduler_address])
        assert res.exit_code == 0, res.output
        assert "(cluster of 2 workers)" in res.output
    spread = read_geoparquet(store, "inventory/glaciers.parquet")
    assert list(single.rgi_id) == list(spread.rgi_id) and len(single) == 86
    assert single.geometry.geom_equals_exact(spread.geometry, 0.0, align=False).all()
    pd.testing.assert_frame_equal(pd.DataFrame(single.drop(columns="geometry")),
                                  pd.DataFrame(spread.drop(columns="geometry")))

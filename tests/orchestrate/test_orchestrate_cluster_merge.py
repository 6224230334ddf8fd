"""A run's merge on its cluster: the flow keeps its Dask cluster up and merges there.

A real run (the global-inventory flow, a temporary Prefect API, a ``LocalCluster`` of two worker
processes) whose tile function maps generated glaciers across tile and UTM zone borders and
writes every tile's outputs as the pipeline does (COGs, outlines, item last). The inventory the
run wrote on its cluster is then compared with the one-process merge of the same tiles.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from rasterio.features import rasterize

from glacierscale.cluster import ClusterSpec
from glacierscale.config import GridConfig, RunConfig
from glacierscale.core.grid import core_mask
from glacierscale.core.tiles import TileSpec
from glacierscale.inventory import rebuild_inventory, vectorize_tile
from glacierscale.inventory.build import INVENTORY_KEY
from glacierscale.io import Provenance, Store, read_geoparquet, write_tile_outputs
from glacierscale.pipeline import TileResult

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Glaciers around the UTM 45 / 46 border at 90°E: across it, across tile borders, inside one
#: tile, and two that overlap (one glacier once merged).
_CENTRES = [(90.0, 28.0, 1500.0), (89.975, 27.985, 900.0), (90.03, 28.02, 1200.0),
            (89.958, 28.021, 300.0), (90.012, 27.975, 700.0), (90.019, 27.981, 600.0)]
BBOX = "89.94,27.95,90.06,28.05"


def _glaciers() -> gpd.GeoSeries:
    polys = []
    for i, (lon, lat, r) in enumerate(_CENTRES):
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rr = r * (1 + 0.15 * np.sin(3 * t + i))
        polys.append(shapely.Polygon(np.column_stack([
            lon + rr * np.cos(t) / (111_320.0 * np.cos(np.radians(lat))),
            lat + rr * np.sin(t) / 110_570.0])))
    return gpd.GeoSeries(polys, crs=4326)


def blob_tile(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """Map the generated glaciers on ``tile`` and write its outputs as the pipeline does."""
    geoms = _glaciers().to_crs(tile.crs)
    n = tile.size_px
    ice = rasterize(((g, 1) for g in geoms), out_shape=(n, n), transform=tile.core_transform,
                    dtype="uint8")
    prob = np.where(core_mask(tile), np.where(ice == 1, 0.9, 0.1), np.nan).astype("float32")
    mask = np.where(np.isfinite(prob), (prob >= 0.5).astype("uint8"), 255).astype("uint8")
    polys = vectorize_tile(mask, prob, transform=tile.core_transform, crs=tile.crs,
                           tile_id=tile.tile_id)
    prov = Provenance(input_ids=("generated",), model="generated", config_token=cfg.token())
    write_tile_outputs(Store(cfg.out), tile, prob, provenance=prov, mask=mask, outlines=polys,
                       when=datetime(2023, 8, 15, tzinfo=UTC))
    return TileResult(tile.tile_id, "done")


def test_a_run_merges_on_its_cluster_as_one_process_would(tmp_path: Path) -> None:
    from glacierscale.orchestrate.flows import run

    out = tmp_path / "out"
    cfg = RunConfig(aoi=BBOX, catalog="unused", out=str(out),
                    grid=GridConfig(tile_size_px=64, resolution=30, halo_px=0))
    summary = run(cfg, tile_fn=blob_tile, cluster=ClusterSpec(kind="local", n_workers=2,
                                                              threads_per_worker=1,
                                                              processes=True))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inventory_merged_by"] == "cluster of 2 workers"
    store = Store(str(out))
    on_cluster = read_geoparquet(store, INVENTORY_KEY)
    finished = [t["tile_id"] for t in manifest["tiles"] if t["status"] == "done"]
    zones = {t.split("_")[0] for t in finished}
    assert zones == {"32645", "32646"}
    assert summary.glaciers == len(on_cluster)
    assert on_cluster["n_tiles"].max() >= 4  # glaciers joined across tile and zone borders

    result = rebuild_inventory(str(out), tile_ids=finished)
    assert result["merged_by"] == "single process"
    single = read_geoparquet(store, INVENTORY_KEY)
    assert list(single["glacier_id"]) == list(on_cluster["glacier_id"])
    assert single.geometry.geom_equals_exact(on_cluster.geometry, 0.0, align=False).all()
    for c in single.columns.drop("geometry"):
        pd.testing.assert_series_equal(single[c], on_cluster[c], check_dtype=False)
    # The glacier across the zone border is one polygon, mapped by tiles of both zones.
    across = single[single["tile_ids"].str.contains("32645_")
                    & single["tile_ids"].str.contains("32646_")]
    assert len(across) == 1

"""The world rehearsal in small: the deployed flow over a generated world, with faults and kills.

A world of a few tiles in several zones (two Alpine reference glaciers, and shapes across a UTM
zone border, a tile corner, the antimeridian and 84N into the north polar grid), served over HTTP
with ranges, a real STAC API and a real S3 API behind fault-injecting servers. A fault-free run of
the ``global`` deployment, then a faulty one (10 % of reads, searches and writes failing) in which
a Dask worker and then the flow-run process are SIGKILLed, started again. Prefect's server runs on
SQLite here; ``benchmarks/world_rehearsal.py`` runs the whole world on PostgreSQL.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest

from glacierscale.plan import plan_tiles
from glacierscale.testing.rehearsal import (
    border_merges,
    compare_runs,
    faulty_run,
    plan_stats,
    region_progress,
    temporary_objects,
    writes_per_tile,
    written_once,
)
from glacierscale.testing.stack import dask_tcp, deployed_worker, prefect_server, run_measured
from glacierscale.testing.world import World, WorldSpec, build_world
from glacierscale.testing.world_services import WorldServices, serve_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "global-inventory/global"
SMALL = WorldSpec(regions=("11",), max_reference=2, n_utm_border=1, n_antimeridian=1,
                  n_polar_edge=1, n_tile_border=1)
FAULTS = {"search": {"attempts": 6, "base_delay_s": 0.1, "max_delay_s": 1.0},
          "read": {"attempts": 5, "base_delay_s": 0.1, "max_delay_s": 1.0},
          "write": {"attempts": 6, "base_delay_s": 0.1, "max_delay_s": 1.0},
          # A tile again after a fault outlived those: seconds here, not a production minute.
          "tile": {"attempts": 3, "base_delay_s": 0.5, "max_delay_s": 2.0},
          "gdal_http_retry_delay_s": 0.1, "search_rate_per_s": 50.0, "search_burst": 50}


@pytest.fixture(scope="module")
def world(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), SMALL, shared_data)


@pytest.fixture(scope="module")
def rehearsal(world: World, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, Any]]:
    """Both runs, done once for the module's checks."""
    import json

    from prefect.settings import PREFECT_API_URL, temporary_settings

    work = tmp_path_factory.mktemp("rehearsal")
    with serve_world(world) as services, prefect_server(work / "prefect") as server, \
            temporary_settings({PREFECT_API_URL: server.api_url}), \
            deployed_worker(server, REPO, names=("global",)) as worker:
        env = {"OMP_NUM_THREADS": "1", "GLACIERSCALE_FAULTS": json.dumps(FAULTS),
               **services.run_env}
        dask_env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
                    **env}
        with dask_tcp(2, dask_env, work / "dask") as dask:
            def params(prefix: str) -> dict[str, Any]:
                return {"outlines": str(world.outlines), "out": f"s3://{services.bucket}/{prefix}",
                        "catalog": services.catalog, "sensors": ["sentinel-2-l2a"],
                        # the world is drawn for the band ratio (red and SWIR only)
                        "model": "band-ratio",
                        "start": "2024-01-01", "end": "2024-12-31", "tiles_per_task": 2,
                        "cluster": {"kind": "address", "address": dask.address},
                        "settings": world.spec.settings()}

            services.set_faults(0.0)
            clean = run_measured(worker, DEPLOYMENT, params("fault-free"), env, 600)
            services.set_faults(0.10, seed=3)
            n_tiles = len(plan_tiles(str(world.outlines), world.spec.grid()).tiles)
            faulty = faulty_run(worker, DEPLOYMENT, params("faulty"), env, dask,
                                lambda: _landed(services), n_tiles, kill_worker_at=0.1,
                                kill_flow_at=0.4, timeout=600)
            yield {"services": services, "clean": clean, "faulty": faulty,
                   "faults": services.faults_injected(),
                   "writes": writes_per_tile(services.writes, services.bucket, "faulty"),
                   "progress": region_progress(faulty["second"].id)}


def _landed(services: WorldServices) -> int:
    per = writes_per_tile(services.writes, services.bucket, "faulty")
    return sum(1 for c in per.values() if "item.json" in c)


def test_the_small_world_spans_zones_the_pole_grid_and_the_antimeridian(world: World) -> None:
    stats = plan_stats(plan_tiles(str(world.outlines), world.spec.grid()).frame)
    assert stats["zones"] >= 3 and stats["polar_tiles"] >= 1, stats
    assert stats["antimeridian_tiles"] >= 1, stats
    kinds = set(world.border_shapes()["kind"])
    assert kinds == {"utm-border", "antimeridian", "polar-edge", "tile-border"}, kinds
    assert world.n_scenes >= stats["zones"], "every zone is seen by scenes of its own"


def test_both_runs_complete_and_faults_were_injected(rehearsal: dict[str, Any]) -> None:
    assert rehearsal["clean"].state == "COMPLETED", rehearsal["clean"].state
    faulty = rehearsal["faulty"]
    assert faulty["second"].state == "COMPLETED", faulty["events"]
    # Both kills landed mid-run: the first run did not complete on its own.
    events = faulty["events"]
    assert {"dask_worker_killed_at_tiles", "flow_process_killed_at_tiles"} <= set(events), events
    assert faulty["first"].state != "COMPLETED", events
    faults = rehearsal["faults"]
    assert faults["reads"] > 0 and faults["writes"] > 0 and faults["searches"] > 0, faults


def test_every_tile_is_written_exactly_once(rehearsal: dict[str, Any], world: World) -> None:
    ids = [t.tile_id for t in plan_tiles(str(world.outlines), world.spec.grid()).tiles]
    once = written_once(rehearsal["writes"], ids)
    assert once["tiles_done_once"] == len(ids), once


def test_outputs_are_identical_to_the_fault_free_run(rehearsal: dict[str, Any]) -> None:
    services = rehearsal["services"]
    compared = compare_runs(services.direct_fs(), services.bucket, "fault-free", "faulty")
    assert compared["identical"], compared
    assert temporary_objects(services.direct_fs(), services.bucket, "faulty") == []


def test_border_shapes_are_one_polygon_with_one_id(rehearsal: dict[str, Any],
                                                    world: World) -> None:
    services = rehearsal["services"]
    fs = services.direct_fs()
    inventory = gpd.read_parquet(io.BytesIO(fs.cat_file(
        f"{services.bucket}/faulty/inventory/glaciers.parquet")))
    merges = border_merges(world.border_shapes(), inventory)
    assert merges["border_shapes_merged"] == merges["border_shapes"] == 4, merges


def test_progress_per_region_reads_back_from_the_api(rehearsal: dict[str, Any]) -> None:
    progress = dict(rehearsal["progress"])
    subflows = progress.pop("_subflows")
    assert subflows["count"] == len(progress) and set(subflows["states"]) == {"COMPLETED"}
    for region, row in progress.items():
        assert row["state"] == "finished", (region, row)
        assert row["done"] + row["skipped"] == row["tiles"] and row["failed"] == 0, row

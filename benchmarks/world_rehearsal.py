"""World rehearsal: the deployed global flow over every glacier zone, with faults, and at full size.

Everything runs here on 127.0.0.1, as it would in production: PostgreSQL (Debian's, as a normal
user), ``prefect server`` on it, the ``global`` deployment of ``prefect.yaml`` run by a process
worker, a TCP Dask scheduler with 3 worker processes (nannies restart a killed one), COGs served
with range requests, a STAC API (rustac) and an S3 API (moto), the last three behind
fault-injecting servers.

1. Full tile count: the real glacier count per RGI region, planned (inside the flow, from its
   ``outlines`` parameter) to the grid's global estimate (~35,500 tiles), with a no-op tile
   function. Reported: Prefect task runs (from the API), the flow-run process's peak memory, the
   database size, wall time, and orchestration overhead per tile against plain ``client.map`` of
   the same no-op over the same tiles on the same cluster.
2. The world (:mod:`glacierscale.testing.world`): every real reference glacier plus generated
   border shapes, scenes in their own zones. A fault-free run, then a faulty run (5 % of reads,
   searches and writes failing) in which one Dask worker is SIGKILLed at ~20 % and the flow-run
   process at ~50 %, then the run is started again. Compared: final PUTs per tile at the proxy,
   outputs (pixels, georeferencing, inventory geometry), border shapes merged, temporary objects,
   the run's state and per-region progress from the API, and a screenshot of the flow run page.

    python benchmarks/world_rehearsal.py [--part all|global|world] [--tile-size 128]
        [--resolution 120] [--fault-share 0.05] [--screenshot-dir DIR]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

#: Retries as in production, with shorter waits: 5 % faults on thousands of requests would
#: otherwise spend the rehearsal's time budget sleeping.
FAULT_SETTINGS = {"search": {"attempts": 6, "base_delay_s": 0.2, "max_delay_s": 2.0},
                  "read": {"attempts": 5, "base_delay_s": 0.2, "max_delay_s": 2.0},
                  "write": {"attempts": 6, "base_delay_s": 0.2, "max_delay_s": 2.0},
                  "gdal_http_retry_delay_s": 0.2, "search_rate_per_s": 50.0,
                  "search_burst": 50}
DEPLOYMENT = "global-inventory/global"


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of flow runs and Dask workers: single-threaded math, rehearsal retries."""
    return {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "GLACIERSCALE_FAULTS": json.dumps(FAULT_SETTINGS), **(extra or {})}


# --------------------------------------------------------------------------- full tile count


def global_plan(pg: Any, server: Any, worker: Any, dask: Any, work: Path) -> dict[str, Any]:
    """The estimated global tile count through the deployed flow with a no-op tile function."""
    from distributed import Client

    from glacierscale.config import GridConfig, RunConfig
    from glacierscale.orchestrate import run_tile
    from glacierscale.plan import plan_tiles
    from glacierscale.testing.global_count import global_glacier_points, noop_tile
    from glacierscale.testing.rehearsal import gib
    from glacierscale.testing.stack import run_measured, task_run_count

    grid = GridConfig()
    points = work / "global-glaciers.csv"
    if not points.exists():
        table, _ = global_glacier_points(grid)
        table.to_csv(points, index=False)
    plan = plan_tiles(str(points), grid)
    ids = [t.tile_id for t in plan.tiles]
    log(f"global plan: {len(ids)} tiles; plain Dask baseline")
    cfg = RunConfig(aoi=str(points), catalog="unused", out=str(work / "global-out"))
    with Client(dask.address) as client:
        client.gather(client.map(run_tile, ids[:300], cfg=cfg, tile_fn=noop_tile, pure=False))
        t0 = time.perf_counter()
        client.gather(client.map(run_tile, ids, cfg=cfg, tile_fn=noop_tile, pure=False))
        dask_s = time.perf_counter() - t0
    size0 = pg.size_bytes()
    params = {"outlines": str(points), "out": str(work / "global-out"), "catalog": "unused",
              "tile_fn": "glacierscale.testing.global_count:noop_tile", "tiles_per_task": 100,
              "cluster": {"kind": "address", "address": dask.address}}
    log("global plan: deployed flow run")
    res = run_measured(worker, DEPLOYMENT, params, run_env(), 3600)
    manifest = json.loads((work / "global-out" / "manifest.json").read_text())
    flow_s = res.run_s or res.wall_s
    return {"tiles": len(manifest["tiles"]), "planned_tiles": len(ids),
            "estimated_tiles": plan.summary.get("tiles"), "glaciers": int(
                plan.summary.get("glaciers", 0)), "zones": plan.summary["zones"],
            "state": res.state, "prefect_task_runs": task_run_count(
                server.api_url, [res.id]),
            "flow_peak_rss_gib": gib(res.peak_rss),
            "overhead_ms_per_tile": round(1000 * (flow_s - dask_s) / max(len(ids), 1), 3),
            "seconds": round(flow_s, 1), "wall_seconds": round(res.wall_s, 1),
            "plain_dask_seconds": round(dask_s, 1),
            "database_mib": round((pg.size_bytes()) / 2**20, 1),
            "database_growth_mib": round((pg.size_bytes() - size0) / 2**20, 1),
            "task_run_rows": pg.row_count("task_run"),
            "flow_timings_s": manifest.get("timings_s")}


# --------------------------------------------------------------------------- the world


def landed(services: Any, prefix: str) -> int:
    """Tiles of a run whose item (written last) has reached the store, per the S3 proxy."""
    from glacierscale.testing.rehearsal import writes_per_tile

    per = writes_per_tile(services.writes, services.bucket, prefix)
    return sum(1 for c in per.values() if "item.json" in c)


def world_params(world: Any, services: Any, dask: Any, prefix: str,
                 tiles_per_task: int) -> dict[str, Any]:
    return {"outlines": str(world.outlines), "out": f"s3://{services.bucket}/{prefix}",
            "catalog": services.catalog, "sensors": ["sentinel-2-l2a"], "model": "band-ratio",
            "start": "2024-01-01", "end": "2024-12-31", "tiles_per_task": tiles_per_task,
            "cluster": {"kind": "address", "address": dask.address},
            "settings": world.spec.settings()}


def world_part(server: Any, worker: Any, dask: Any, services: Any, world: Any,
               args: argparse.Namespace, out: dict[str, Any]) -> None:
    """The fault-free and faulty runs and their checks; figures go to ``out`` as they come."""
    import geopandas as gpd

    from glacierscale.plan import plan_tiles
    from glacierscale.testing.rehearsal import (
        border_merges,
        compare_runs,
        faulty_run,
        gib,
        plan_stats,
        region_progress,
        temporary_objects,
        writes_per_tile,
        written_once,
    )
    from glacierscale.testing.stack import run_measured, screenshot

    plan = plan_tiles(str(world.outlines), world.spec.grid())
    stats = plan_stats(plan.frame)
    ids = [t.tile_id for t in plan.tiles]
    log(f"world: {stats}, {world.n_scenes} scenes")
    out.update(stats, scenes=world.n_scenes, grid=world.spec.settings())
    env = run_env(services.run_env)
    t0 = time.perf_counter()
    services.set_faults(0.0)
    # A loaded machine is slow: allow ~10 s per tile before calling a run stuck.
    timeout = max(1800.0, 10.0 * len(ids))
    clean = run_measured(worker, DEPLOYMENT, world_params(
        world, services, dask, "fault-free", args.tiles_per_task), env, timeout)
    log(f"fault-free run {clean.state} in {clean.wall_s:.0f} s")
    out.update(fault_free_state=clean.state, fault_free_seconds=round(clean.wall_s, 1))
    services.set_faults(args.fault_share, seed=args.seed)
    faulty = faulty_run(
        worker, DEPLOYMENT, world_params(world, services, dask, "faulty", args.tiles_per_task),
        env, dask, lambda: landed(services, "faulty"), len(ids), timeout=timeout)
    log(f"faulty run: {faulty['events']}, final state {faulty['second'].state}")
    faults = services.faults_injected()
    requests = {"reads": services.reads.summary(), "searches": services.searches.summary(),
                "writes": services.writes.summary()}
    once = written_once(writes_per_tile(services.writes, services.bucket, "faulty"), ids)
    seconds = time.perf_counter() - t0
    out.update(tiles_done_once=once["tiles_done_once"],
               tiles_written_more_than_once=once["tiles_written_more_than_once"],
               tiles_never_written=once["tiles_never_written"][:20],
               faults_injected=sum(faults.values()), faults_by_service=faults,
               requests=requests, seconds=round(seconds, 1),
               faulty_seconds=round(faulty["seconds"], 1), events=faulty["events"],
               final_state=faulty["second"].state,
               first_faulty_state=faulty["first"].state)
    fs = services.direct_fs()
    compared = compare_runs(fs, services.bucket, "fault-free", "faulty")
    inventory = gpd.read_parquet(io.BytesIO(fs.cat_file(
        f"{services.bucket}/faulty/inventory/glaciers.parquet")))
    merges = border_merges(world.border_shapes(), inventory)
    tmp = temporary_objects(fs, services.bucket, "faulty")
    second = faulty["second"]
    progress = region_progress(second.id)
    shot: str | None = None
    if args.screenshot_dir:
        try:
            shot = str(screenshot(f"{server.url}/runs/flow-run/{second.id}",
                                  Path(args.screenshot_dir) / "world-rehearsal-flow-run.png",
                                  wait_text=["global-inventory", "Completed"]))
        except Exception as exc:  # the figures above stand without the picture
            shot = f"failed: {type(exc).__name__}: {exc}"
    peak = max(clean.peak_rss, faulty["first"].peak_rss, second.peak_rss)
    out.update(border_shapes=merges["border_shapes"],
               border_shapes_merged=merges["border_shapes_merged"],
               border_shapes_not_merged=merges["not_merged"],
               identical_to_fault_free=compared["identical"], comparison=compared,
               temporary_objects_left=len(tmp), flow_peak_rss_gib=gib(peak),
               region_progress=progress, screenshot=shot)



def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "global", "world"), default="all")
    p.add_argument("--tile-size", type=int, default=128, help="tile core in pixels")
    p.add_argument("--resolution", type=float, default=120.0, help="pixel size (m)")
    p.add_argument("--fault-share", type=float, default=0.05)
    p.add_argument("--tiles-per-task", type=int, default=20)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-reference", type=int, default=None,
                   help="at most this many reference glaciers (default: all) for a quick look")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "glacierscale-rehearsal"))
    p.add_argument("--screenshot-dir", default=None)
    args = p.parse_args()

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from glacierscale.testing.postgres import postgres_server
    from glacierscale.testing.stack import dask_tcp, deployed_worker, prefect_server
    from glacierscale.testing.world import WorldSpec, build_world
    from glacierscale.testing.world_services import serve_world

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    spec = WorldSpec(tile_size_px=args.tile_size, resolution=args.resolution,
                     window_px=args.tile_size // 2, seed=args.seed,
                     max_reference=args.max_reference)
    # Ctrl-C and SIGTERM unwind the stack, so every service started below is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    t_all = time.perf_counter()
    result: dict[str, Any] = {}
    world = None
    if args.part in ("all", "world"):
        t0 = time.perf_counter()
        world = build_world(work / f"world-{spec.token()}", spec)
        result["world_build_seconds"] = round(time.perf_counter() - t0, 1)
    home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=work))
    with postgres_server() as pg, prefect_server(home, pg.url) as server, \
            temporary_settings({PREFECT_API_URL: server.api_url}), \
            deployed_worker(server, REPO) as worker:
        log(f"Prefect on PostgreSQL at {server.url}")
        services_cm = serve_world(world) if world is not None else None
        services = services_cm.__enter__() if services_cm is not None else None
        try:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
                   **run_env(services.run_env if services else None)}
            with dask_tcp(args.workers, env, work / "dask-logs") as dask:
                if args.part in ("all", "global"):
                    result["global_plan"] = global_plan(pg, server, worker, dask, work)
                    log(f"global plan: {result['global_plan']}")
                if world is not None and services is not None:
                    world_part(server, worker, dask, services, world, args, result)
            result["database_mib"] = round(pg.size_bytes() / 2**20, 1)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if services_cm is not None:
                services_cm.__exit__(None, None, None)
            result["total_seconds"] = round(time.perf_counter() - t_all, 1)
            print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()

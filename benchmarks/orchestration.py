"""Orchestration overhead: 10,000 tiles through the full Prefect flow with a no-op tile function.

Baseline, in the same run and on the same Dask cluster (2 local worker processes): plain
``client.map`` of the same no-op over the same tiles. The flow then runs the same tiles through
plan -> region subflow -> batch tasks (``tiles_per_task`` tiles each) -> merge -> report, with
Prefect tasks on threads submitting to the cluster (the default) and with prefect-dask's
DaskTaskRunner (Prefect tasks executing on the Dask workers).
Overhead per tile = (flow seconds - plain Dask seconds) / tiles. Prefect runs in ephemeral mode
(one temporary local API, as ``glacierscale demo`` does), with a fresh database.

    python benchmarks/orchestration.py [--tiles 10000] [--tiles-per-task 100]

Ends by printing one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

# A fresh Prefect database, so counts are this run's alone (set before Prefect is imported).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="glacierscale-bench-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def noop_tile(tile: Any, cfg: Any) -> Any:
    """The tile function of the benchmark: does nothing, writes nothing."""
    from glacierscale.pipeline import TileResult

    return TileResult(tile.tile_id, "no-data", "no-op benchmark tile")


def count_task_runs(api_url: str, since: datetime) -> int:
    import httpx

    body = {"task_runs": {"start_time": {"after_": since.isoformat()}}}
    r = httpx.post(f"{api_url}/task_runs/count", json=body, timeout=30)
    r.raise_for_status()
    return int(r.json())


def plain_dask(address: str, tiles: list[Any], cfg: Any) -> float:
    from distributed import Client

    from glacierscale.orchestrate import run_tile

    with Client(address) as client:
        t0 = time.perf_counter()
        futs = client.map(run_tile, [t.tile_id for t in tiles], cfg=cfg, tile_fn=noop_tile,
                          pure=False)
        client.gather(futs)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiles", type=int, default=10_000)
    p.add_argument("--tiles-per-task", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    from glacierscale.cluster import ClusterSpec, make_cluster
    from glacierscale.config import GridConfig, RunConfig
    from glacierscale.core.tiles import TileSpec
    from glacierscale.orchestrate import prefect_api, run

    side = int(args.tiles ** 0.5) + 1
    tiles = [TileSpec(32611, 400 + i % side, 500 + i // side, 64, 30.0, 0)
             for i in range(args.tiles)]
    out = tempfile.mkdtemp(prefix="glacierscale-bench-out-")
    cfg = RunConfig(aoi="-117.3,52.1,-117.2,52.2", catalog="unused", out=out,
                    tiles_per_task=args.tiles_per_task,
                    grid=GridConfig(tile_size_px=64, resolution=30.0, halo_px=0))
    result: dict[str, Any] = {"tiles": args.tiles, "tiles_per_task": args.tiles_per_task,
                              "dask_workers": args.workers}
    t_api = time.perf_counter()
    with prefect_api() as api_url:
        result["ephemeral_api_start_s"] = round(time.perf_counter() - t_api, 2)
        spec = ClusterSpec(kind="local", n_workers=args.workers, dashboard_address=None)
        with make_cluster(spec) as (_, address):
            remote = ClusterSpec(kind="address", address=address)
            plain_dask(address, tiles[:200], cfg)  # warm the workers' imports
            dask_s = plain_dask(address, tiles, cfg)
            result["plain_dask_seconds"] = round(dask_s, 2)
            for runner in ("dask", "threads"):
                since = datetime.now(UTC)
                t0 = time.perf_counter()
                summary = run(cfg, tile_fn=noop_tile, tiles=tiles, cluster=remote,
                              task_runner=runner)
                secs = time.perf_counter() - t0
                assert len(summary.manifest) == args.tiles, "every tile once in the manifest"
                n_runs = count_task_runs(api_url, since)
                result[runner] = {
                    "seconds": round(secs, 2), "prefect_task_runs": n_runs,
                    "overhead_ms_per_tile": round(1000 * (secs - dask_s) / args.tiles, 3)}
                print(f"{runner}: {result[runner]}", file=sys.stderr)
    best = min(("dask", "threads"), key=lambda r: result[r]["seconds"])
    result.update({
        "prefect_task_runs": result["threads"]["prefect_task_runs"],
        "seconds": result["threads"]["seconds"],
        "overhead_ms_per_tile": result["threads"]["overhead_ms_per_tile"],
        "task_runner": "threads (the default)", "cheapest_task_runner": best,
        "goal_overhead_ms_per_tile": 5.0,
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()

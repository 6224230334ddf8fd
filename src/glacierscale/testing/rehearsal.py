"""What a rehearsal run is judged by: writes counted at the proxy, outputs compared, shapes merged.

Every check reads the S3 server directly (never through the fault proxy), so checking neither
meets nor counts faults:

- :func:`writes_per_tile`: successful final PUTs per output key of each tile, from the proxy's
  log (not the keys in the bucket: a tile written twice leaves the same keys);
- :func:`compare_runs`: pixels, georeferencing (CRS, transform, shape) and the inventory
  geometry of two runs of the same plan;
- :func:`border_merges`: every generated border shape is one inventory polygon with one id;
- :func:`temporary_objects`: temporary keys left under a run;
- :func:`plan_stats`: tiles, zones, polar and antimeridian tiles of a plan;
- :func:`region_progress`: each region's progress table as the Prefect API has it.

:func:`faulty_run` is the faulty run itself: a deployment run in which one Dask worker is
SIGKILLed and later the flow-run process, then the same run started again.
"""

from __future__ import annotations

import io
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from glacierscale.core.zones import POLAR_EPSGS
from glacierscale.io.store import TMP_PREFIX
from glacierscale.testing.injection import FaultLog, final_puts

#: The outputs a finished tile holds (band-ratio: no uncertainty band).
TILE_OUTPUTS = ("glacier_prob.tif", "glacier_mask.tif", "outlines.parquet", "item.json")


def writes_per_tile(log: FaultLog, bucket: str, prefix: str) -> dict[str, Counter[str]]:
    """Tile id -> (output name -> successful final PUTs) seen by the S3 proxy under a run."""
    base = f"/{bucket}/{prefix.strip('/')}/tiles/"
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for path, n in final_puts(log, base).items():
        tile_id, _, name = path[len(base):].partition("/")
        out[tile_id][name] += n
    return dict(out)


def written_once(per_tile: dict[str, Counter[str]], tiles: Sequence[str]) -> dict[str, Any]:
    """How many of ``tiles`` had every output written exactly once (and which were not)."""
    once, twice, missing = [], [], []
    for t in tiles:
        c = per_tile.get(t, Counter())
        if not c or "item.json" not in c:
            missing.append(t)
        elif all(v == 1 for v in c.values()):
            once.append(t)
        else:
            twice.append(t)
    return {"tiles_done_once": len(once), "tiles_written_more_than_once": twice,
            "tiles_never_written": missing}


def _read_tif(fs: Any, path: str) -> tuple[np.ndarray, tuple[float, ...], str, tuple[int, int]]:
    from rasterio.io import MemoryFile

    with MemoryFile(fs.cat_file(path)) as mem, mem.open() as ds:
        return ds.read(1), tuple(ds.transform)[:6], ds.crs.to_string(), (ds.height, ds.width)


def compare_runs(fs: Any, bucket: str, a: str, b: str) -> dict[str, Any]:
    """Tiles, pixels, georeferencing and inventory geometry of runs ``a`` and ``b`` compared."""
    def tiles(prefix: str) -> set[str]:
        keys = fs.find(f"{bucket}/{prefix}/tiles/")
        return {k.split("/tiles/")[1].split("/")[0] for k in keys if k.endswith("/item.json")}

    ta, tb = tiles(a), tiles(b)
    pixel_diff, geo_diff = [], []
    for t in sorted(ta & tb):
        for name in ("glacier_prob.tif", "glacier_mask.tif"):
            xa = _read_tif(fs, f"{bucket}/{a}/tiles/{t}/{name}")
            xb = _read_tif(fs, f"{bucket}/{b}/tiles/{t}/{name}")
            if xa[1:] != xb[1:]:
                geo_diff.append(f"{t}/{name}")
            elif not np.array_equal(xa[0], xb[0]):
                pixel_diff.append(f"{t}/{name}")
    ia = gpd.read_parquet(io.BytesIO(fs.cat_file(f"{bucket}/{a}/inventory/glaciers.parquet")))
    ib = gpd.read_parquet(io.BytesIO(fs.cat_file(f"{bucket}/{b}/inventory/glaciers.parquet")))
    same_ids = list(ia["glacier_id"]) == list(ib["glacier_id"])
    geom_equal = same_ids and bool(np.all(shapely.equals_exact(
        shapely.normalize(ia.geometry.to_numpy()), shapely.normalize(ib.geometry.to_numpy()),
        tolerance=0.0)))
    identical = ta == tb and not pixel_diff and not geo_diff and geom_equal
    return {"identical": identical, "tiles_only_in_one": sorted(ta ^ tb)[:20],
            "tiles_compared": len(ta & tb), "pixel_differences": pixel_diff[:20],
            "georeferencing_differences": geo_diff[:20], "inventory_glaciers": [len(ia), len(ib)],
            "inventory_geometry_identical": geom_equal}


def _local_crs(geom: Any) -> CRS:
    c = geom.representative_point()
    lon = c.x if abs(geom.bounds[2] - geom.bounds[0]) < 180 else 180.0
    return CRS.from_proj4(f"+proj=laea +lat_0={c.y:.5f} +lon_0={lon:.5f} +datum=WGS84 +units=m")


def border_merges(shapes: gpd.GeoDataFrame, inventory: gpd.GeoDataFrame,
                  min_cover: float = 0.8) -> dict[str, Any]:
    """For each shape: the inventory polygons it meets; merged when exactly one polygon (one
    ``glacier_id``) meets it and covers at least ``min_cover`` of its area."""
    merged, problems = 0, []
    for s in shapes.itertuples():
        crs = _local_crs(s.geometry)
        shape_m = gpd.GeoSeries([s.geometry], crs=4326).to_crs(crs).iloc[0]
        near = inventory[inventory.intersects(s.geometry.buffer(0.05))]
        polys = near.to_crs(crs)
        hits = polys[polys.intersects(shape_m)]
        ids = set(hits["glacier_id"])
        cover = (float(hits.geometry.iloc[0].intersection(shape_m).area / shape_m.area)
                 if len(hits) == 1 else 0.0)
        tiles = int(hits["n_tiles"].iloc[0]) if len(hits) == 1 else 0
        if len(hits) == 1 and len(ids) == 1 and cover >= min_cover:
            merged += 1
        else:
            problems.append({"shape": s.rgi_id, "kind": s.kind, "polygons": len(hits),
                             "ids": sorted(ids)[:5], "cover": round(cover, 3), "tiles": tiles})
    return {"border_shapes": len(shapes), "border_shapes_merged": merged,
            "not_merged": problems[:20]}


def temporary_objects(fs: Any, bucket: str, prefix: str) -> list[str]:
    """Temporary keys (``.glacierscale-tmp/``) left anywhere under a run."""
    try:
        return [k for k in fs.find(f"{bucket}/{prefix}") if f"/{TMP_PREFIX}/" in k]
    except FileNotFoundError:
        return []


def plan_stats(frame: pd.DataFrame) -> dict[str, int]:
    """Tiles, zones, polar tiles and antimeridian tiles (core touching ±180) of a plan."""
    b = shapely.bounds(np.asarray(frame.geometry))
    anti = (b[:, 0] <= -179.999) | (b[:, 2] >= 179.999)
    polar = frame["epsg"].isin(POLAR_EPSGS).to_numpy()
    return {"tiles": len(frame), "zones": int(frame["epsg"].nunique()),
            "polar_tiles": int(polar.sum()), "antimeridian_tiles": int((anti & ~polar).sum())}


def region_progress(flow_run_id: UUID) -> dict[str, dict[str, Any]]:
    """Region -> its last progress table (tiles by status) from the API, for a run's subflows."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        subs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])), limit=200)
        arts: list[Any] = []
        while subs:  # the API answers at most 200 at a time
            page = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[s.id for s in subs])), limit=200,
                offset=len(arts))
            arts += page
            if len(page) < 200:
                break
    out: dict[str, dict[str, Any]] = {}
    for a in sorted(arts, key=lambda a: a.created or 0):
        if a.type != "table" or not (a.key or "").endswith("-progress"):
            continue
        rows = a.data if isinstance(a.data, list) else []
        if not rows and isinstance(a.data, str):
            import json

            rows = json.loads(a.data)
        for row in rows:
            out[str(row.get("region"))] = row
    states = Counter(s.state.type.value if s.state else "?" for s in subs)
    out["_subflows"] = {"count": len(subs), "states": dict(states)}
    return out


def faulty_run(worker: Any, deployment: str, params: dict[str, Any], env: dict[str, str],
               dask: Any, count_landed: Callable[[], int], n_tiles: int,
               kill_worker_at: float = 0.2, kill_flow_at: float = 0.5,
               timeout: float = 1800.0, max_restarts: int = 3) -> dict[str, Any]:
    """Run ``deployment``; SIGKILL a Dask worker once ``kill_worker_at`` of ``n_tiles`` landed
    (``count_landed``), the flow-run process at ``kill_flow_at``; wait for the cluster to drain
    and start the same run again, and again (at most ``max_restarts`` more times) while a
    restart fails. Returns the first and last runs, when the kills happened and why restarts
    failed (``events``)."""
    import os
    import signal
    import time

    from glacierscale.testing.stack import run_measured, wait_for

    events: dict[str, Any] = {}

    def kills(run_id: UUID, proc: Any) -> None:
        first = first_run_done(run_id)
        wait_for(lambda: first() or count_landed() >= kill_worker_at * n_tiles, timeout,
                 "tiles to land before the worker kill", 0.3)
        if not first():
            pid = sorted(dask.worker_pids().values())[0]
            os.kill(pid, signal.SIGKILL)
            events["dask_worker_killed_at_tiles"] = count_landed()
        wait_for(lambda: first() or count_landed() >= kill_flow_at * n_tiles, timeout,
                 "tiles to land before the flow kill", 0.3)
        if not first():
            proc.send_signal(signal.SIGKILL)
            events["flow_process_killed_at_tiles"] = count_landed()

    t0 = time.perf_counter()
    a = run_measured(worker, deployment, params, env, timeout, while_running=kills)
    events["first_message"] = _message(a.run)
    restarts: list[str] = []
    while True:
        # Tiles a killed run had started finish on the workers: let them land first.
        wait_for(dask.idle, 600, "the Dask cluster to drain", 1.0)
        b = run_measured(worker, deployment, params, env, timeout)
        if b.state == "COMPLETED" or len(restarts) >= max_restarts:
            break
        # What an operator does with a run that failed on a fault: start it again.
        restarts.append(f"{b.state}: {_message(b.run)}")
    events["failed_restarts"] = restarts
    return {"first": a, "second": b, "events": events, "seconds": time.perf_counter() - t0}


def _message(flow_run: Any) -> str:
    state = getattr(flow_run, "state", None)
    return str(getattr(state, "message", "") or "")[:300]


def first_run_done(run_id: UUID) -> Callable[[], bool]:
    """A predicate: has this flow run reached a final state already?"""
    from glacierscale.testing.stack import read_flow_run

    def done() -> bool:
        try:
            fr = read_flow_run(run_id)
        except Exception:  # a busy server's 500 or timeout: not known to be done
            return False
        return bool(fr.state and fr.state.is_final())

    return done


def gib(n_bytes: float) -> float:
    """Bytes in GiB, rounded for a report."""
    return round(n_bytes / 2**30, 3) if n_bytes and math.isfinite(n_bytes) else 0.0

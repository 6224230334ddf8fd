"""The global inventory merge: the single-process merge against the cluster merge.

Builds a synthetic global run (see ``merge_world``: the global plan's tiles with their outline
files as runs write them, glaciers with the real RGI 7.0 count per region at the plan's points,
crossing tile, zone and projection borders), then merges it in one run:

* ``seconds_single_process``: what a run without a cluster does: read every tile's outlines
  (16 threads, as ``rebuild_inventory``), ``merge_tiles``, write ``glaciers.parquet``;
* ``seconds_1_worker`` / ``seconds_2_workers``: ``merge_on_cluster`` on a ``LocalCluster`` of 1
  or 2 worker processes (started before the clock), then the same ``glaciers.parquet``.

Every output is compared with the single-process one (same ids in the same order, every
attribute equal, areas within 1e-6 relative, geometries equal). Peak RSS is the largest peak
resident set (``VmHWM``) of any worker process (and of the single-process merge, run in its own
process); ``peak_rss_gib_driver`` is the calling process's peak during the cluster merges. Not
``ru_maxrss``: a spawned process inherits its parent's peak in it (the high-water mark survives
fork and exec), so a worker started after building the world reported the builder's memory.

``--scale`` keeps whole regions holding about that share of the global plan's glaciers (and
the tiles they plan); every
measured key (``tiles``, ``glaciers``, ``seconds_*``, ``speedup``, ``peak_rss_gib``,
``identical``) is of the world actually built and merged. Below scale 1 the full-scale times
are also given, labelled ``projected_*``: linear in the larger of the tile and glacier ratios,
not measured. ``--no-single-process`` skips the single-process merge (hours at full scale):
its keys are null, and the 2-worker output is compared with the 1-worker one.

Run from the repository root: ``python benchmarks/merge.py`` (``--scale 0.05`` for a quick one).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from glacierscale.config import sample_data_dir
from glacierscale.inventory.cluster_merge import merge_on_cluster, write_bands
from glacierscale.inventory.merge import merge_tiles
from glacierscale.io import Store, read_geoparquet, write_geoparquet
from glacierscale.testing.memory import peak_rss_gib, reset_peak_rss
from merge_world import build  # beside this file

OUT_SINGLE = "inventory/single.parquet"
#: The global plan at full scale (``global_glacier_points``): its tiles and glacier points.
FULL_TILES = 35_515
FULL_GLACIERS = 275_137


def tile_ids(store: Store) -> list[str]:
    """Finished tiles with outlines, in the order ``rebuild_inventory`` merges them."""
    keys = set(store.list("tiles/"))
    done = sorted(k.split("/")[1] for k in keys if k.endswith("/item.json"))
    return [t for t in done if f"tiles/{t}/outlines.parquet" in keys]


def _single(root: str, queue: Any) -> None:
    store = Store(root)
    t0 = time.perf_counter()
    ids = tile_ids(store)
    with ThreadPoolExecutor(max_workers=16) as pool:
        frames = list(pool.map(lambda t: read_geoparquet(store, f"tiles/{t}/outlines.parquet"),
                               ids))
    t1 = time.perf_counter()
    inventory = merge_tiles(frames)
    write_geoparquet(store, OUT_SINGLE, inventory)
    seconds = time.perf_counter() - t0
    queue.put((seconds, peak_rss_gib(), t1 - t0))


def single_process(root: str) -> tuple[float, float, float]:
    """Today's merge in a fresh process: (seconds, peak RSS GiB, seconds reading)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_single, args=(root, q))
    p.start()
    out = q.get()
    p.join()
    return out


def on_cluster(root: str, workers: int, key: str) -> tuple[float, float, dict[str, Any]]:
    """The cluster merge on ``workers`` local worker processes: (seconds, peak RSS GiB, info)."""
    from distributed import Client, LocalCluster

    store = Store(root)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="6GiB") as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        ids = tile_ids(store)
        bands = merge_on_cluster(client, store, ids, scratch=f"inventory/.merge-{workers}")
        write_bands(store, bands, key)
        seconds = time.perf_counter() - t0
        rss = client.run(peak_rss_gib)
    return seconds, max(rss.values()), {"bands": len(bands)}


def compare(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> dict[str, Any]:
    """Equality of two inventories: ids, attributes, areas (1e-6 relative), geometries."""
    same_ids = len(a) == len(b) and bool((a["glacier_id"].to_numpy()
                                          == b["glacier_id"].to_numpy()).all())
    out: dict[str, Any] = {"same_ids": same_ids}
    if not same_ids:
        out["identical"] = False
        return out
    rel = np.abs(a["area_km2"].to_numpy() - b["area_km2"].to_numpy()) / np.maximum(
        a["area_km2"].to_numpy(), 1e-12)
    attrs = all(pd.Series(a[c]).equals(pd.Series(b[c])) for c in a.columns
                if c not in ("geometry", "area_km2", "area_km2_lo", "area_km2_hi"))
    geoms = bool(np.all(a.geometry.geom_equals_exact(b.geometry, 0.0, align=False)))
    out.update({"max_area_rel_diff": float(rel.max()) if len(rel) else 0.0,
                "same_attributes": attrs, "same_geometries": geoms})
    out["identical"] = bool(attrs and geoms and out["max_area_rel_diff"] <= 1e-6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="share of the glaciers to build")
    ap.add_argument("--root", default=None, help="build (or reuse) the synthetic run here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-single-process", action="store_true",
                    help="skip today's merge (hours at full scale): its keys are null and the "
                         "2-worker output is compared with the 1-worker one")
    args = ap.parse_args()
    data = sample_data_dir()
    if data is None:
        raise SystemExit("sample data not found: set GLACIERSCALE_SAMPLE_DATA to ../shared/data")
    root = Path(args.root or tempfile.mkdtemp(prefix="glacierscale-merge-bench-"))
    marker = root / "world.json"
    if marker.exists() and json.loads(marker.read_text()).get("scale") == args.scale:
        info = json.loads(marker.read_text())
    else:
        t = time.perf_counter()
        info = build(root, data, args.scale, args.seed) | {"scale": args.scale}
        info["seconds_build"] = round(time.perf_counter() - t, 1)
        marker.write_text(json.dumps(info))
    single = not args.no_single_process
    single_s, single_rss, single_read = single_process(str(root)) if single else (None, None,
                                                                                 None)
    # the driver's peak from here, not the world build's
    driver_measured = reset_peak_rss() is not None
    one_s, one_rss, _ = on_cluster(str(root), 1, "inventory/one.parquet")
    two_s, two_rss, extra = on_cluster(str(root), 2, "inventory/two.parquet")
    driver_rss = peak_rss_gib() if driver_measured else None
    store = Store(str(root))
    ref = read_geoparquet(store, OUT_SINGLE if single else "inventory/one.parquet")
    c1 = compare(ref, read_geoparquet(store, "inventory/one.parquet"))
    c2 = compare(ref, read_geoparquet(store, "inventory/two.parquet"))

    def r(v: float | None, n: int = 1) -> float | None:
        return None if v is None else round(v, n)
    full = args.scale >= 1
    linear = max(FULL_TILES / info["tiles"], FULL_GLACIERS / max(len(ref), 1))
    print(json.dumps({
        "tiles": info["tiles"], "glaciers": len(ref), "glaciers_built": info["glaciers"],
        "scale": args.scale, "tiles_planned": info["tiles_planned"],
        "tiles_beyond_plan": info["tiles_beyond_plan"], "tile_pieces": info["pieces"],
        "zones": info["zones"],
        "share_crossing_tile_borders": info["share_crossing_tile_borders"],
        "share_crossing_zone_borders": info["share_crossing_zone_borders"],
        "glacier_points_planned": info["glacier_points_planned"],
        "seconds_single_process": r(single_s), "seconds_1_worker": round(one_s, 1),
        "seconds_2_workers": round(two_s, 1),
        "speedup": r(single_s / two_s if single_s else None, 2),
        "seconds_single_process_reading": r(single_read),
        "speedup_1_worker": r(single_s / one_s if single_s else None, 2),
        "peak_rss_gib": round(max(one_rss, two_rss), 3),
        "peak_rss_gib_single_process": r(single_rss, 3),
        "peak_rss_gib_driver": r(driver_rss, 3),
        "identical": bool(c1["identical"] and c2["identical"]),
        "identical_compared_with": "single_process" if single else "1_worker",
        "max_area_rel_diff": max(c1.get("max_area_rel_diff", 1.0),
                                 c2.get("max_area_rel_diff", 1.0)),
        "bands": extra["bands"], "cores": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 1),
        # Not measured unless --scale 1: the full-scale figures, projected linearly from this
        # scale by the larger of the tile and glacier ratios (labelled as projected).
        "projected_seconds_2_workers_full_scale": None if full else round(two_s * linear, 1),
        "projected_seconds_single_process_full_scale": None if full or single_s is None
        else round(single_s * linear, 1),
    }))


if __name__ == "__main__":
    main()

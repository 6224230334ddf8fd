"""Cost of the real thing: the pipeline on the real Athabasca sample tiles, per stage and km²,
projected to a global single-date run on one GPU node and on a cluster.

Measured here (2 cores, no GPU), one tile at a time in one process so stage times do not overlap:
search, load, infer, write and vectorize per tile (from ``TileResult.seconds``), and merge (the
run's ``finalize``). Two models: the ``band-ratio`` baseline (the demo's) and the built-in U-Net
(seeded weights, the size of the review's workhorse) for the inference cost that matters.

Seconds per km² use two areas: the tile cores (what a global run pays for inference, writing and
vectorizing: windows cover whole tiles) and, for information, the valid input data (the sample
covers only part of its tiles). The projection works per tile (measured per-tile stage times,
times the assumptions) and multiplies by the grid's global tile estimate.
Every assumption of the projection is printed in the JSON (``assumptions``).

    python benchmarks/pipeline.py [--unet-tiles 4]

Ends by printing one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from typing import Any

#: Assumptions of the projection (see the module docstring and docs/deploy.md).
ASSUMPTIONS: dict[str, Any] = {
    "gpu_unet_windows_per_s": 60.0,  # 512² windows/s, ResNet-style U-Net, bf16, one L4/A10G
    "gpu_node_vcpus": 8,  # CPU threads of a GPU node for search/load/write/vectorize
    "gpu_node_usd_per_h": 0.98,  # on-demand price of an 8 vCPU + 1 L4 GPU instance
    "cluster_gpu_nodes": 8,  # the global-k8s deployment's DaskCluster
    "cloud_load_factor": 3.0,  # object-store COG reads vs local sample reads, per tile
    "stac_search_s_per_tile": 0.8,  # one STAC API search per tile (optical + DEM)
    "scenes_per_tile": 3,  # composited scenes, as RunConfig.max_scenes
    "merge_scaling": "linear in tiles, single process",
}


def measure(cfg: Any, tiles: list[Any]) -> dict[str, Any]:
    from glacierscale.pipeline import process_tile
    from glacierscale.run import finalize

    results = []
    t0 = time.perf_counter()
    for tile in tiles:
        results.append(process_tile(tile, cfg))
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    summary = finalize(cfg, results, {"tiles": wall})
    merge_s = time.perf_counter() - t1
    stages: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    stages["merge"] = merge_s
    return {"results": results, "stages": stages, "wall": wall, "summary": summary}


def valid_km2(out: str, tile_ids: list[str]) -> float:
    """Area of valid data written by the tiles (from their mask COGs)."""
    import numpy as np
    import rasterio

    from glacierscale.io import Store

    store = Store(out)
    total = 0.0
    for tid in tile_ids:
        with rasterio.open(store.url(f"tiles/{tid}/glacier_mask.tif")) as ds:
            a = ds.read(1)
            total += float(np.count_nonzero(a != 255)) * abs(ds.res[0] * ds.res[1]) / 1e6
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--unet-tiles", type=int, default=4, help="sample tiles run with the U-Net")
    args = p.parse_args()

    from glacierscale.config import GridConfig, RunConfig, cache_dir, sample_data_dir
    from glacierscale.demo import athabasca_sample
    from glacierscale.plan import estimate_global_tiles
    from glacierscale.run import plan

    data = sample_data_dir()
    if data is None:
        raise SystemExit("real sample data not found: set GLACIERSCALE_SAMPLE_DATA")
    sample = athabasca_sample(data, cache_dir())
    base = {"aoi": ",".join(f"{v:g}" for v in sample.bbox), "catalog": sample.catalog,
            "start": sample.start, "end": sample.end, "collections": sample.collections}
    grid = GridConfig()
    tile_km2 = (grid.tile_size_px * grid.resolution / 1000.0) ** 2
    out: dict[str, Any] = {"machine": "2 cores, no GPU", "tile_km2": round(tile_km2, 3)}

    runs: dict[str, dict[str, Any]] = {}
    for model, limit in (("band-ratio", None), ("unet", args.unet_tiles)):
        cfg = RunConfig(**base, model=model, out=tempfile.mkdtemp(prefix=f"gs-bench-{model}-"),
                        grid=grid)
        tiles = plan(cfg)[:limit]
        m = measure(cfg, tiles)
        done = [r.tile_id for r in m["results"] if r.status == "done"]
        if not done:
            raise SystemExit(f"{model}: no tile finished: {[r.reason for r in m['results']]}")
        area_tiles = tile_km2 * len(tiles)
        area_valid = valid_km2(cfg.out, done)
        runs[model] = {
            "tiles": len(tiles), "done": len(done), "tile_area_km2": round(area_tiles, 2),
            "valid_data_km2": round(area_valid, 2),
            "stage_seconds": {k: round(v, 3) for k, v in m["stages"].items()},
            "stage_s_per_km2_tile_area": {k: round(v / area_tiles, 5)
                                          for k, v in m["stages"].items()},
            "load_s_per_km2_valid_data": round(m["stages"].get("load", 0.0) / area_valid, 5),
            "wall_seconds": round(m["wall"] + m["stages"]["merge"], 2),
            "km2_per_s": round(area_tiles / (m["wall"] + m["stages"]["merge"]), 3),
        }
    out["models"] = runs

    # ---- projection of a global single-date run -------------------------------------------
    est = estimate_global_tiles(grid)
    n_tiles = int(est["tiles"])
    unet = runs["unet"]
    per_tile = {k: v / unet["tiles"] for k, v in unet["stage_seconds"].items() if k != "merge"}
    a = ASSUMPTIONS
    # windows per tile from the engine's layout (core + halo, stride = window * (1 - overlap))
    side = grid.tile_size_px + 2 * grid.halo_px
    win, ov = RunConfig(**base).infer.window_px, RunConfig(**base).infer.overlap
    stride = max(1, int(win * (1 - ov)))
    windows = (math.ceil(max(side - win, 0) / stride) + 1) ** 2
    # Loading a tile is dominated by per-tile work (opening assets, building the lazy stack,
    # reprojecting onto the tile grid), measured per tile here; object-store reads cost more.
    load_full = per_tile.get("load", 0.0) * a["cloud_load_factor"]
    cpu_stage_s_per_tile = {
        "search": a["stac_search_s_per_tile"],
        "load": load_full,
        "write": per_tile.get("write", 0.0),
        "vectorize": per_tile.get("vectorize", 0.0),
    }
    gpu_infer_s_per_tile = windows / a["gpu_unet_windows_per_s"]
    # One node: CPU stages spread over its vCPUs, inference on its GPU, overlapped (Dask runs
    # several tiles at once; the slower side bounds the throughput).
    cpu_side = sum(cpu_stage_s_per_tile.values()) / a["gpu_node_vcpus"]
    node_s_per_tile = max(cpu_side, gpu_infer_s_per_tile)
    merge_s = runs["unet"]["stage_seconds"]["merge"] / unet["tiles"] * n_tiles
    node_h = (node_s_per_tile * n_tiles + merge_s) / 3600
    cluster_h = (node_s_per_tile * n_tiles / a["cluster_gpu_nodes"] + merge_s) / 3600
    out.update({
        "km2_per_s": runs["unet"]["km2_per_s"],
        "km2_per_s_band_ratio": runs["band-ratio"]["km2_per_s"],
        "stage_seconds": runs["unet"]["stage_seconds"],
        "stage_s_per_km2": runs["unet"]["stage_s_per_km2_tile_area"],
        "global_tiles": n_tiles, "global_tiles_range": [est["tiles_low"], est["tiles_high"]],
        "global_km2": round(n_tiles * tile_km2),
        "windows_per_tile": windows,
        "cpu_only_global_hours_this_machine": round(
            sum(per_tile.values()) * n_tiles / 3600 + merge_s / 3600, 1),
        "global_hours_projection": {
            "one_gpu_node": round(node_h, 2),
            f"cluster_{a['cluster_gpu_nodes']}_gpu_nodes": round(cluster_h, 2),
            "bound_by": "gpu" if gpu_infer_s_per_tile >= cpu_side else "cpu (search/load/write)",
        },
        "global_usd_projection": {
            "one_gpu_node": round(node_h * a["gpu_node_usd_per_h"], 2),
            f"cluster_{a['cluster_gpu_nodes']}_gpu_nodes": round(
                cluster_h * a["cluster_gpu_nodes"] * a["gpu_node_usd_per_h"], 2),
        },
        "assumptions": a,
    })
    print(json.dumps(out))


if __name__ == "__main__":
    main()

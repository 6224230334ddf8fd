"""Cost of the real thing: the pipeline on the real Athabasca sample tiles, per stage and km²,
projected to a global single-date run on one GPU node and on a cluster.

Measured here (no GPU), one tile at a time in one process so stage times do not overlap: search,
load, infer, write and vectorize per tile (from ``TileResult.seconds``), and merge (the run's
``finalize``). Two models, each through the real run path (``resolve_config`` sets the grid to
the model card's pixel size, ``process_tile`` maps each tile, ``finalize`` merges): the shipped
``default`` model (the one a run uses unless told otherwise) and the ``band-ratio`` baseline.

Every figure is labelled. ``measured`` holds what this run timed on this machine; ``assumed`` holds
what it cannot measure here (a GPU's windows/s, object-store read cost, STAC API latency, node
size and price). The projection (``global_hours_projection``, ``global_usd_projection``) combines
the measured per-tile stage costs of the ``default`` model with the assumptions and the grid's
global tile estimate, so it is a projection, not a measurement; ``cpu_only_global_hours`` uses
measured costs alone (this machine's CPU inference included).

    python benchmarks/pipeline.py [--default-tiles N]

Ends by printing one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

#: What the projection assumes (none of it can be measured on a machine without a GPU or cloud).
ASSUMPTIONS: dict[str, Any] = {
    # 512² windows/s of one ResNet-style U-Net, bf16, one L4/A10G; an ensemble's window costs one
    # forward pass per member (the count is measured: the model card's weight files).
    "gpu_unet_windows_per_s": 60.0,
    "gpu_node_vcpus": 8,  # CPU threads of a GPU node for search/load/write/vectorize
    "gpu_node_usd_per_h": 0.98,  # on-demand price of an 8 vCPU + 1 L4 GPU instance
    "cluster_gpu_nodes": 8,  # the global-k8s deployment's DaskCluster
    "cloud_load_factor": 3.0,  # object-store COG reads vs local sample reads, per tile
    "stac_search_s_per_tile": 0.8,  # one STAC API search per tile (optical + DEM)
    "scenes_per_tile": 3,  # composited scenes, as RunConfig.max_scenes
    # The merge is measured here in one process (finalize without a cluster) and scaled linearly
    # in tiles; runs merge on their cluster, ~10x faster at world size (benchmarks/merge.py), so
    # the projection's merge share is an upper bound.
    "merge_scaling": "linear in tiles at this machine's one-process cost per tile (upper bound: "
                     "runs merge on their cluster)",
}


@contextlib.contextmanager
def counting_windows(window_px: int) -> Iterator[list[int]]:
    """Count the windows the engine runs through its model while inside (``[n]``). The engine
    skips windows without a valid pixel, so a tile on the sample's edge runs fewer than its
    layout holds; counted at the one call every batch takes, at no cost to it."""
    from glacierscale.infer.prepared import Prepared

    count = [0]
    original = Prepared.run

    def run(self: Any, host: Any, valid: Any) -> Any:
        if host.shape[-1] == window_px:
            count[0] += int(host.shape[0])
        return original(self, host, valid)

    Prepared.run = run  # type: ignore[method-assign]
    try:
        yield count
    finally:
        Prepared.run = original  # type: ignore[method-assign]


def measure(cfg: Any, tiles: list[Any]) -> dict[str, Any]:
    from glacierscale.pipeline import process_tile
    from glacierscale.run import finalize

    results = []
    t0 = time.perf_counter()
    with counting_windows(cfg.infer.window_px) as windows_run:
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
    return {"results": results, "stages": stages, "wall": wall, "summary": summary,
            "windows_run": windows_run[0]}


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


def windows_per_tile(cfg: Any) -> int:
    """Windows the engine runs per tile of ``cfg``'s grid (its layout for the halo'd shape)."""
    from glacierscale.core.windows import WindowLayout

    side = cfg.grid.tile_size_px + 2 * cfg.grid.halo_px
    return WindowLayout.for_shape((side, side), cfg.infer.window_px, cfg.infer.overlap).n_windows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--default-tiles", type=int, default=None,
                   help="sample tiles run with the default model (default: all)")
    args = p.parse_args()

    from glacierscale.config import RunConfig, cache_dir, sample_data_dir
    from glacierscale.demo import athabasca_sample
    from glacierscale.plan import estimate_global_tiles
    from glacierscale.run import plan, resolve_config

    data = sample_data_dir()
    if data is None:
        raise SystemExit("real sample data not found: set GLACIERSCALE_SAMPLE_DATA")
    sample = athabasca_sample(data, cache_dir())
    base = {"aoi": ",".join(f"{v:g}" for v in sample.bbox), "catalog": sample.catalog,
            "start": sample.start, "end": sample.end, "collections": sample.collections}
    runs: dict[str, dict[str, Any]] = {}
    cfgs: dict[str, Any] = {}
    for model, limit in (("band-ratio", None), ("default", args.default_tiles)):
        cfg = resolve_config(RunConfig(**base, model=model,
                                       out=tempfile.mkdtemp(prefix=f"gs-bench-{model}-")))
        cfgs[model] = cfg
        tiles = plan(cfg)[:limit]
        m = measure(cfg, tiles)
        done = [r.tile_id for r in m["results"] if r.status == "done"]
        if not done:
            raise SystemExit(f"{model}: no tile finished: {[r.reason for r in m['results']]}")
        tile_km2 = (cfg.grid.tile_size_px * cfg.grid.resolution / 1000.0) ** 2
        area_tiles = tile_km2 * len(tiles)
        area_valid = valid_km2(cfg.out, done)
        wall = m["wall"] + m["stages"]["merge"]
        runs[model] = {
            "model": cfg.model,
            "grid": {"tile_size_px": cfg.grid.tile_size_px, "halo_px": cfg.grid.halo_px,
                     "resolution_m": cfg.grid.resolution, "tile_km2": round(tile_km2, 3)},
            "tiles": len(tiles), "done": len(done), "tile_area_km2": round(area_tiles, 2),
            "valid_data_km2": round(area_valid, 2),
            "stage_seconds": {k: round(v, 3) for k, v in m["stages"].items()},
            "stage_s_per_tile": {k: round(v / len(tiles), 4) for k, v in m["stages"].items()},
            "stage_s_per_km2_tile_area": {k: round(v / area_tiles, 5)
                                          for k, v in m["stages"].items()},
            "load_s_per_km2_valid_data": round(m["stages"].get("load", 0.0) / area_valid, 5),
            "layout_windows_per_tile": windows_per_tile(cfg),
            "windows_run": m["windows_run"],
            "cpu_infer_windows_per_s": round(m["windows_run"] / max(m["stages"].get("infer", 0.0),
                                                                    1e-9), 3),
            "wall_seconds": round(wall, 2),
            "km2_per_s": round(area_tiles / wall, 3),
        }

    # ---- projection of a global single-date run (measured per-tile costs x assumptions) -------
    cfg = cfgs["default"]
    grid = cfg.grid
    tile_km2 = (grid.tile_size_px * grid.resolution / 1000.0) ** 2
    est = estimate_global_tiles(grid)
    n_tiles = int(est["tiles"])
    run = runs["default"]
    per_tile = {k: v / run["tiles"] for k, v in run["stage_seconds"].items() if k != "merge"}
    a = ASSUMPTIONS
    # A tile of a global run is planned over glaciers and has data in every window of its
    # layout; the sample's tiles do not, so inference is costed per window run, times the layout.
    windows = run["layout_windows_per_tile"]
    infer_s_per_window = run["stage_seconds"]["infer"] / max(run["windows_run"], 1)
    per_tile["infer"] = infer_s_per_window * windows
    # Loading a tile is dominated by per-tile work (opening assets, building the lazy stack,
    # reprojecting onto the tile grid), measured per tile here; object-store reads cost more.
    cpu_stage_s_per_tile = {
        "search": a["stac_search_s_per_tile"],
        "load": per_tile.get("load", 0.0) * a["cloud_load_factor"],
        "write": per_tile.get("write", 0.0),
        "vectorize": per_tile.get("vectorize", 0.0),
    }
    from glacierscale.pipeline import cached_model

    members = max(len(cached_model(cfg.model).card.weights), 1)
    gpu_infer_s_per_tile = windows * members / a["gpu_unet_windows_per_s"]
    # One node: CPU stages spread over its vCPUs, inference on its GPU, overlapped (Dask runs
    # several tiles at once; the slower side bounds the throughput).
    cpu_side = sum(cpu_stage_s_per_tile.values()) / a["gpu_node_vcpus"]
    node_s_per_tile = max(cpu_side, gpu_infer_s_per_tile)
    merge_s = run["stage_seconds"]["merge"] / run["tiles"] * n_tiles
    node_h = (node_s_per_tile * n_tiles + merge_s) / 3600
    cluster_h = (node_s_per_tile * n_tiles / a["cluster_gpu_nodes"] + merge_s) / 3600
    out: dict[str, Any] = {
        # Headline figures (measured): the default model through the real run path.
        "km2_per_s": run["km2_per_s"],
        "km2_per_s_band_ratio": runs["band-ratio"]["km2_per_s"],
        "measured": {
            "machine": f"{os.cpu_count()} CPU threads, no GPU",
            "load_average": round(os.getloadavg()[0], 2),
            "models": runs,
        },
        "assumed": {
            **a,
            "note": "not measurable here: no GPU, local files instead of object storage and a "
                    "STAC API; the projection below rests on these",
        },
        "global_tiles": n_tiles, "global_tiles_range": [est["tiles_low"], est["tiles_high"]],
        "global_km2": round(n_tiles * tile_km2),
        "cpu_only_global_hours": {
            "label": "projected from measured per-tile costs on this machine, inference per "
                     "window run times the windows of a full tile (no assumption)",
            "hours": round(sum(per_tile.values()) * n_tiles / 3600 + merge_s / 3600, 1),
        },
        "global_hours_projection": {
            "label": "projected: measured per-tile load/write/vectorize/merge of the default "
                     "model x assumed GPU windows/s, search latency, cloud read factor, node size",
            "one_gpu_node": round(node_h, 2),
            f"cluster_{a['cluster_gpu_nodes']}_gpu_nodes": round(cluster_h, 2),
            "bound_by": "gpu" if gpu_infer_s_per_tile >= cpu_side else "cpu (search/load/write)",
            "per_tile_s": {"cpu_stages_on_node": {k: round(v, 4)
                                                  for k, v in cpu_stage_s_per_tile.items()},
                           "gpu_infer": round(gpu_infer_s_per_tile, 4),
                           "networks_per_window": members,
                           "merge": round(merge_s / n_tiles, 5)},
        },
        "global_usd_projection": {
            "label": "projected (assumed node price)",
            "one_gpu_node": round(node_h * a["gpu_node_usd_per_h"], 2),
            f"cluster_{a['cluster_gpu_nodes']}_gpu_nodes": round(
                cluster_h * a["cluster_gpu_nodes"] * a["gpu_node_usd_per_h"], 2),
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

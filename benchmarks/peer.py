"""glacierscale against a typical user's script (the peer), end to end on the same tiles.

The peer is what a competent user writes without glacierscale, each step as its library's
documentation shows it: the STAC items read with pystac and filtered by box, date and collection,
``odc.stac.load`` of each tile's grid (bilinear, native dtype, then the items' ``raster:bands``
scale and nodata), MONAI ``sliding_window_inference`` (Gaussian), rio-cogeo COGs of the
probability and the mask, ``rasterio.features.shapes`` on the mask and one geopandas dissolve of
all tiles' polygons into the inventory (GeoParquet).

Ours is ``glacierscale run`` (the CLI, Prefect and a local Dask cluster) over the same tile
cores. Both sides get the shipped ``default`` model's weights, the same window, overlap, batch
size, precision (fp32: bf16 fails the accuracy gates on this model) and torch threads, and the
same input (the real Athabasca HLS S30 scene of the sample catalog, one scene so that no
compositing choice differs). Each side runs in a fresh process; its memory is the sum of the peak
RSS (``VmHWM``) of every process of its tree, polled every 50 ms. Prefect and cluster start-up
(the run's wall time outside its own plan/tiles/merge timings) is reported apart.

    python benchmarks/peer.py [--tile-size-px 64] [--window-px 128] [--workers 1]

The last line printed is one JSON object (areas are tile cores; ``mask_disagreement`` is the
fraction of core pixels whose mask value, glacier / not glacier / no data, differs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: The sample's one Sentinel-2 (HLS S30) scene: the collection both sides read.
COLLECTION = "HLSS30_2.0"
#: The card's band names -> HLS S30 asset keys (what the peer's user looks up in the item).
S30_ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B8A", "swir16": "B11",
              "swir22": "B12"}


# -- process-tree memory -------------------------------------------------------------------------
def _describe(cmdline: list[str]) -> str:
    """A short name for a process of the tree: the program and its first telling argument."""
    words = [w for w in cmdline if not w.startswith("-")]
    known = ("prefect", "glacierscale", "peer.py", "spawn_main", "distributed")
    hit = next((w for w in cmdline if any(k in w for k in known)), words[0] if words else "?")
    if "spawn_main" in hit:
        return "dask worker/nanny (multiprocessing)"
    return Path(hit.split(" ")[0]).name


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; wall seconds, output and the sum over its process tree of
    each process's peak RSS (the largest ``VmHWM`` seen while it lived).

    A child caught between its fork and its exec still shows its parent's pages (shared, not
    its own): each process counts with the peak seen under its last command line only.
    """
    import psutil

    from glacierscale.testing.memory import peak_rss_bytes

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    root = psutil.Process(proc.pid)
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    commands: dict[int, list[str]] = {}
    max_live = 0
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.extend(s), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        live = 0
        for p in tree:
            try:
                cmdline = p.cmdline()
            except psutil.Error:
                continue
            hwm = peak_rss_bytes(p.pid)
            if commands.get(p.pid) != cmdline:  # new, or exec'd since: its own peak from here
                commands[p.pid], peaks[p.pid] = cmdline, 0
                names[p.pid] = _describe(cmdline)
            peaks[p.pid] = max(peaks[p.pid], hwm)
            with contextlib.suppress(psutil.Error):
                live += p.memory_info().rss
        max_live = max(max_live, live)
        time.sleep(0.05)
    for r in readers:
        r.join()
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - t0,
            "stdout": "".join(out), "stderr": "".join(err), "processes": len(peaks),
            "peak_rss_sum_gib": sum(peaks.values()) / 2**30,
            "peak_rss_gib_by_process": {f"{names.get(pid, '?')} ({pid})": round(v / 2**30, 3)
                                        for pid, v in sorted(peaks.items())},
            "peak_live_rss_gib": max_live / 2**30}


# -- the peer: a user's script -------------------------------------------------------------------
def peer(spec_path: str, out: str) -> None:
    """The user's script over the tiles of ``spec_path``; prints one JSON line of timings."""
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - t0
        return now

    import geopandas as gpd
    import numpy as np
    import odc.stac
    import pandas as pd
    import pystac
    import rasterio
    import rasterio.features
    import torch
    from monai.inferers import sliding_window_inference
    from odc.geo.geobox import GeoBox
    from rasterio.io import MemoryFile
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles
    from shapely.geometry import shape

    from glacierscale.models import load_model

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model = load_model(spec["model"])  # the same weights
    card = model.card
    channels_last = bool(spec["channels_last"])
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
    c = len(card.bands)
    mean = np.asarray(card.mean, np.float32).reshape(c, 1, 1)
    std = np.asarray(card.std, np.float32).reshape(c, 1, 1)
    temperature = float(card.temperature)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        # The model's documented output: K samples of logits, calibrated by the card's
        # temperature; their mean probability is the answer.
        return torch.sigmoid(model.sample_logits(x).float() / temperature).mean(0)  # type: ignore[attr-defined]

    t = stage("startup", t_start)
    items = [pystac.Item.from_file(str(p)) for p in sorted(Path(spec["catalog"]).glob("*.json"))]
    items = [i for i in items if i.collection_id == COLLECTION
             and i.datetime is not None
             and spec["start"] <= i.datetime.date().isoformat() <= spec["end"]]
    t = stage("search", t)
    keys = [S30_ASSETS[b] for b in card.bands]
    w = spec["window_px"]
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    frames = []
    for tile in spec["tiles"]:
        t = time.perf_counter()
        gbox = GeoBox(tuple(tile["shape"]), rasterio.Affine(*tile["transform"]), tile["crs"])
        ds = odc.stac.load(items, bands=keys, geobox=gbox, resampling="bilinear")
        x = np.empty((c, *tile["shape"]), np.float32)
        for i, k in enumerate(keys):
            meta = items[0].assets[k].extra_fields["raster:bands"][0]
            raw = ds[k].values[0]
            np.multiply(raw, np.float32(meta["scale"]), out=x[i], casting="unsafe")
            x[i][raw == meta["nodata"]] = np.nan
        valid = np.isfinite(x).all(axis=0)
        t = stage("load", t)
        xt = torch.from_numpy(np.nan_to_num((x - mean) / std, nan=0.0))[None]
        if channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = sliding_window_inference(xt, (w, w), spec["batch_size"], predictor,
                                         overlap=spec["overlap"], mode="gaussian")
        assert isinstance(y, torch.Tensor)
        prob = y[0, 0].numpy()
        prob[~valid] = np.nan
        h = tile["halo_px"]
        core = (slice(h, h + tile["size_px"]), slice(h, h + tile["size_px"]))
        prob = np.ascontiguousarray(prob[core])
        ok = np.isfinite(prob)
        mask = np.where(ok, np.nan_to_num(prob) >= spec["threshold"], 255).astype("uint8")
        t = stage("infer", t)
        ctr = rasterio.Affine(*tile["core_transform"])
        tdir = outdir / tile["tile_id"]
        tdir.mkdir(exist_ok=True)
        for name, arr, nodata in (("prob", prob, np.nan), ("mask", mask, 255)):
            profile = {"driver": "GTiff", "height": arr.shape[0], "width": arr.shape[1],
                       "count": 1, "dtype": str(arr.dtype), "crs": tile["crs"],
                       "transform": ctr, "nodata": nodata}
            with MemoryFile() as mem:
                with mem.open(**profile) as dst:
                    dst.write(arr, 1)
                with mem.open() as src:
                    cog_translate(src, str(tdir / f"{name}.tif"), cog_profiles.get("deflate"),
                                  in_memory=True, quiet=True)
        t = stage("write", t)
        geoms = [shape(g) for g, v in rasterio.features.shapes(mask, mask=mask == 1,
                                                               transform=ctr) if v == 1]
        if geoms:
            frames.append(gpd.GeoDataFrame({"tile_id": [tile["tile_id"]] * len(geoms)},
                                           geometry=geoms, crs=tile["crs"]))
        stage("vectorize", t)
    t = time.perf_counter()
    crs = spec["tiles"][0]["crs"]
    polys = (gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs) if frames
             else gpd.GeoDataFrame({"tile_id": []}, geometry=[], crs=crs))
    inventory = polys.dissolve().explode(index_parts=False).reset_index(drop=True)
    inventory.to_parquet(outdir / "inventory.parquet")
    stage("dissolve", t)
    print(json.dumps({"seconds": seconds, "wall_s": time.perf_counter() - t_start,
                      "polygons": len(inventory),
                      "glacier_km2": float(inventory.area.sum() / 1e6) if len(inventory)
                      else 0.0}))


# -- the comparison ------------------------------------------------------------------------------
def _mask_disagreement(ours: Path, theirs: Path, tile_ids: list[str]) -> dict[str, Any]:
    import numpy as np
    import rasterio

    differ = total = 0
    per_tile: dict[str, float] = {}
    for tid in tile_ids:
        with rasterio.open(ours / "tiles" / tid / "glacier_mask.tif") as a, \
                rasterio.open(theirs / tid / "mask.tif") as b:
            x, y = a.read(1), b.read(1)
            if a.transform != b.transform or x.shape != y.shape:
                raise RuntimeError(f"tile {tid}: the two sides wrote different grids")
        d = int(np.count_nonzero(x != y))
        per_tile[tid] = d / x.size
        differ += d
        total += x.size
    return {"fraction": differ / total, "pixels": differ, "of": total,
            "worst_tile": max(per_tile.values()) if per_tile else 0.0}


def run_and_peer_spec(sample: Any, model: str, grid: Any, infer: Any, threads: int, out: str,
                      workers: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's config fields (for ``glacierscale run --config``) and the peer's tile spec:
    the tiles the run plans over ``sample`` (a :class:`glacierscale.demo.SampleCatalog`), with
    the same model, window, overlap, batch, threads and memory layout."""
    from glacierscale.config import RunConfig
    from glacierscale.infer import resolve_runtime
    from glacierscale.run import plan

    fields: dict[str, Any] = {
        "aoi": ",".join(f"{v:g}" for v in sample.bbox), "catalog": sample.catalog,
        "start": sample.start.isoformat(), "end": sample.end.isoformat(),
        "collections": [COLLECTION], "model": model, "out": out,
        "workers": workers, "threads_per_worker": 1,
        "grid": grid.model_dump(), "infer": infer.model_dump(),
    }
    tiles = plan(RunConfig.model_validate(fields))
    rt = resolve_runtime(infer, threads=threads)
    spec = {
        "catalog": sample.catalog, "start": fields["start"], "end": fields["end"],
        "model": model, "threads": threads, "channels_last": rt.channels_last,
        "window_px": infer.window_px, "overlap": infer.overlap, "batch_size": infer.batch_size,
        "threshold": infer.threshold,
        "tiles": [{"tile_id": t.tile_id, "crs": t.crs, "shape": list(t.shape),
                   "transform": list(t.transform)[:6], "core_transform":
                   list(t.core_transform)[:6], "halo_px": t.halo_px, "size_px": t.size_px}
                  for t in tiles],
    }
    return fields, spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", help=argparse.SUPPRESS)  # child: the tile spec JSON
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--tile-size-px", type=int, default=64)
    ap.add_argument("--halo-px", type=int, default=32)
    ap.add_argument("--window-px", type=int, default=128)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="local Dask workers of the run")
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    if args.peer:
        peer(args.peer, args.out)
        return

    import yaml

    from glacierscale.config import GridConfig, InferConfig, cache_dir, sample_data_dir
    from glacierscale.demo import athabasca_sample

    data = sample_data_dir()
    if data is None:
        raise SystemExit("real sample data not found: set GLACIERSCALE_SAMPLE_DATA")
    sample = athabasca_sample(data, cache_dir())
    threads = os.cpu_count() or 1
    infer = InferConfig(window_px=args.window_px, overlap=args.overlap,
                        batch_size=args.batch_size, precision="fp32", device="cpu")
    grid = GridConfig(tile_size_px=args.tile_size_px, halo_px=args.halo_px, resolution=30.0)
    work = Path(tempfile.mkdtemp(prefix="gs-peer-"))
    fields, spec = run_and_peer_spec(sample, args.model, grid, infer, threads,
                                     str(work / "ours"), args.workers)
    tiles = spec["tiles"]
    tile_km2 = (grid.tile_size_px * grid.resolution / 1000.0) ** 2
    area = tile_km2 * len(tiles)
    (work / "tiles.json").write_text(json.dumps(spec))
    (work / "run.yaml").write_text(yaml.safe_dump(fields))

    # The peer first, then ours: each in a fresh process, nothing cached between them but the
    # operating system's page cache (both read the same files; a warm-up read evens it out).
    for p in Path(sample.catalog).parent.rglob("*.tif"):
        p.read_bytes()
    peer_run = run_measured([sys.executable, __file__, "--peer", str(work / "tiles.json"),
                             "--out", str(work / "peer")])
    if peer_run["returncode"] != 0:
        raise RuntimeError(f"peer failed:\n{peer_run['stderr'][-3000:]}")
    peer_out = json.loads(peer_run["stdout"].strip().splitlines()[-1])
    glacierscale = str(Path(sys.executable).with_name("glacierscale"))
    ours_run = run_measured([glacierscale, "run", "--config", str(work / "run.yaml")])
    if ours_run["returncode"] != 0:
        raise RuntimeError(f"glacierscale run failed ({ours_run['returncode']}):\n"
                           f"{ours_run['stderr'][-3000:]}")
    manifest = json.loads((work / "ours" / "manifest.json").read_text())
    run_timings = manifest.get("timings_s", {})
    tile_stages: dict[str, float] = {}
    for t in manifest["tiles"]:
        for k, v in t.get("seconds", {}).items():
            tile_stages[k] = tile_stages.get(k, 0.0) + v
    statuses = {t["tile_id"]: t["status"] for t in manifest["tiles"]}
    if sorted(statuses) != sorted(s["tile_id"] for s in spec["tiles"]):
        raise RuntimeError("the run planned other tiles than the peer was given")
    startup = ours_run["wall_s"] - sum(run_timings.values())
    disagreement = _mask_disagreement(work / "ours", work / "peer", sorted(statuses))

    ours_s, peer_s = ours_run["wall_s"], peer_run["wall_s"]
    # The peer's start-up: interpreter, imports and loading the model, before its first tile.
    peer_startup = peer_s - peer_out["wall_s"] + peer_out["seconds"].get("startup", 0.0)
    result = {
        "tiles": len(tiles), "tile_px": args.tile_size_px, "halo_px": args.halo_px,
        "resolution_m": grid.resolution, "tile_core_km2": round(area, 3),
        "model": args.model, "window_px": args.window_px, "overlap": args.overlap,
        "batch_size": args.batch_size, "precision": "fp32",
        "channels_last": spec["channels_last"], "threads": threads, "workers": args.workers,
        "peer_km2_per_s": round(area / peer_s, 4),
        "ours_km2_per_s": round(area / ours_s, 4),
        "speedup": round(peer_s / ours_s, 4),
        "peer_km2_per_s_without_startup": round(area / max(peer_s - peer_startup, 1e-9), 4),
        "ours_km2_per_s_without_startup": round(area / max(ours_s - startup, 1e-9), 4),
        "speedup_without_startup": round((peer_s - peer_startup) / max(ours_s - startup, 1e-9),
                                         4),
        "peer_peak_rss_gib": round(peer_run["peak_rss_sum_gib"], 3),
        "ours_peak_rss_gib": round(ours_run["peak_rss_sum_gib"], 3),
        "memory_ratio": round(ours_run["peak_rss_sum_gib"] / peer_run["peak_rss_sum_gib"], 4),
        "peer_peak_live_rss_gib": round(peer_run["peak_live_rss_gib"], 3),
        "ours_peak_live_rss_gib": round(ours_run["peak_live_rss_gib"], 3),
        "processes": {"peer": peer_run["processes"], "ours": ours_run["processes"]},
        "peak_rss_gib_by_process": {"peer": peer_run["peak_rss_gib_by_process"],
                                    "ours": ours_run["peak_rss_gib_by_process"]},
        "mask_disagreement": disagreement["fraction"],
        "mask_disagreement_pixels": [disagreement["pixels"], disagreement["of"]],
        "mask_disagreement_worst_tile": disagreement["worst_tile"],
        "tile_statuses": sorted(set(statuses.values())),
        "peer_seconds": {"wall": round(peer_s, 3),
                         **{k: round(v, 3) for k, v in peer_out["seconds"].items()},
                         "process_start_and_imports": round(
                             peer_s - peer_out["wall_s"], 3)},
        "ours_seconds": {"wall": round(ours_s, 3),
                         "prefect_cluster_startup_and_exit": round(startup, 3),
                         "startup_note": "wall time outside the run's own plan/tiles/merge "
                                         "timings: CLI imports, preflight, the temporary "
                                         "Prefect server, Dask cluster start and stop, report",
                         "run_timings": {k: round(v, 3) for k, v in run_timings.items()},
                         "tile_stages_sum": {k: round(v, 3) for k, v in tile_stages.items()}},
        "peer_glacier_km2": round(peer_out["glacier_km2"], 4),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

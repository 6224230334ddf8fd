"""Cloud-read economy of tile loads, measured against baselines in one run.

Seeded COGs (6 bands + SCL, two dates, 512 px blocks, deflate) are served by a real HTTP server on
127.0.0.1 that injects latency and records every request; their STAC items are searched through a
real STAC API (rustac) on 127.0.0.1. Then:

1. requests and bytes per tile and band for block-aligned tiles (goal: <= 5 GETs per tile-band,
   bytes <= 1.1 x the bytes of the blocks that intersect the tile, no header read twice);
   the same for the standard halo'd tiles (not block-aligned), for information;
2. read+reproject time of the reader (odc-stac through the Loader seam, with the cloud-read
   settings and URL re-signing) against a plain ``rasterio.warp.reproject`` of the same window
   over the same HTTP server (goal: <= 1.3x), on a band whose grid is offset by 5 m; and the
   whole ``load_tile`` (scaling, masking, compositing too) against the same baseline;
3. ``load_tile`` with the odc-stac and the stackstac reader on the same tiles (the faster is the
   default; both are reported);
4. peak RSS of loading a 4096 x 4096 px tile area with 8 bands (goal: < 2 GiB), in a fresh
   process so earlier phases do not count.

Every method reads its own URL prefix of the same files, so no method profits from another's
GDAL cache. Run from the repository root: ``python benchmarks/io_reads.py``; it ends by printing
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from glacierscale.catalog import open_catalog
from glacierscale.core.tiles import UTM_ORIGIN, TileSpec
from glacierscale.load import DEFAULT_LOADER, configure_cloud_reads, load_tile
from glacierscale.testing.rangeserver import Log, range_server
from glacierscale.testing.rasters import make_item, write_cog

ROOT = Path(__file__).resolve().parents[1]

EPSG = 32611
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
KEYS = ["blue", "green", "red", "nir08", "swir16", "swir22"]  # Earth Search asset keys
TILE_PX = 1024
BLOCK = 512
COL0, ROW0 = 48, 412  # first tile of the data area on the 10 m grid (10.24 km tiles)


def _field(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """Reflectance-like uint16 DN: smooth terrain-ish pattern plus sensor noise (seeded)."""
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=np.float32)
    z = 3000 + 1500 * np.outer(np.cos(x / (230 * scale)), np.sin(x / (170 * scale) + seed))
    z += rng.standard_normal((n, n), dtype=np.float32) * 120
    return np.clip(z, 1, 65535).astype(np.uint16)


def build_data(root: Path) -> dict[str, list[tuple[str, dict[str, Path]]]]:
    """Two dates of 6 bands (10 m) + SCL (20 m), 3072 px, with a 512 px margin around 2x2 tiles."""
    n = 3 * TILE_PX
    x0 = COL0 * TILE_PX * 10.0 - BLOCK * 10.0
    y0 = UTM_ORIGIN[1] - ROW0 * TILE_PX * 10.0 + BLOCK * 10.0
    scenes = []
    for d, day in enumerate(("2020-09-05", "2020-09-15")):
        files: dict[str, Path] = {}
        for b, key in enumerate(KEYS):
            files[key] = write_cog(root / day / f"{key}.tif", _field(n, 10 * d + b), f"EPSG:{EPSG}",
                                   Affine(10, 0, x0, 0, -10, y0), nodata=0, blocksize=BLOCK)
        scl = np.full((n // 2, n // 2), 4, np.uint8)
        scl[: n // 8, : n // 8] = 9  # a cloud in one corner
        files["scl"] = write_cog(root / day / "scl.tif", scl, f"EPSG:{EPSG}",
                                 Affine(20, 0, x0, 0, -20, y0), nodata=0, blocksize=BLOCK)
        scenes.append((day, files))
    # A band on a grid offset by 5 m (as Landsat's 15 m lattice is): loading it warps.
    shifted = write_cog(root / "shifted" / "red.tif", _field(n, 99), f"EPSG:{EPSG}",
                        Affine(10, 0, x0 + 5, 0, -10, y0 - 5), nodata=0, blocksize=BLOCK)
    return {"scenes": scenes, "shifted": [("2020-09-05", {"red": shifted})]}


def _items(data: dict, url: str, root: Path) -> list[pystac.Item]:
    items = []
    for day, files in data["scenes"]:
        item = make_item(f"S2_{day}", "sentinel-2-l2a", datetime.fromisoformat(day + "T18:30"),
                         files, raster={k: {"scale": 1e-4, "offset": 0.0} for k in KEYS},
                         properties={"eo:cloud_cover": 3.0})
        for asset in item.assets.values():
            asset.href = asset.href.replace(str(root), f"{url}/files")
        items.append(item)
    return items


def _with_prefix(items: list[pystac.Item], prefix: str) -> list[pystac.Item]:
    out = []
    for item in items:
        clone = item.clone()
        for asset in clone.assets.values():
            asset.href = asset.href.replace("/files/", f"/{prefix}/files/")
        out.append(clone)
    return out


def _lonlat(tile: TileSpec) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    minx, miny, maxx, maxy = tile.bounds
    lon, lat = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True).transform(
        [minx, maxx, maxx, minx], [miny, miny, maxy, maxy])
    return (min(lon), min(lat), max(lon), max(lat))


def _block_bytes(path: Path, bounds: tuple[float, float, float, float]) -> int:
    """Compressed bytes of the full-resolution blocks of ``path`` that intersect ``bounds``."""
    with rasterio.open(path) as ds:
        win = ds.window(*bounds).round_offsets().round_lengths()
        bh, bw = ds.block_shapes[0]
        r0, c0 = max(0, int(win.row_off) // bh), max(0, int(win.col_off) // bw)
        r1 = min(ds.height - 1, int(win.row_off + win.height - 1)) // bh
        c1 = min(ds.width - 1, int(win.col_off + win.width - 1)) // bw
        return sum(int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1))
                   for r in range(r0, r1 + 1) for c in range(c0, c1 + 1))


def _tile_requests(items: list[pystac.Item], tiles: list[TileSpec], log: Log, root: Path,
                   prefix: str) -> dict[str, float]:
    """GETs and bytes per tile-band while loading each tile (one scene, 6 bands + SCL)."""
    per_tile_band: list[int] = []
    fetched = needed = 0
    header_reads: Counter[str] = Counter()
    heads = 0
    for tile in tiles:
        log.clear()
        load_tile(tile, BANDS, items[:1]).compute()
        heads += log.heads
        for path, gets in log.by_path().items():
            per_tile_band.append(len(gets))
            fetched += sum(g.nbytes for g in gets)
            header_reads[path] += sum(1 for g in gets if g.ranges and g.ranges[0][0] == 0)
            local = root / path.split(f"/{prefix}/files/", 1)[1]
            needed += _block_bytes(local, tile.bounds)
    files = len(header_reads)
    return {"gets_max": max(per_tile_band), "gets_mean": statistics.fmean(per_tile_band),
            "bytes_ratio": fetched / needed,
            "repeated_header_reads": sum(max(0, n - 1) for n in header_reads.values()),
            "heads_per_file": heads / max(files, 1)}


def _reproject_ratio(items: list[pystac.Item], tiles: list[TileSpec], rounds: int = 2) -> dict:
    """Read+reproject of the 5 m-offset band: our reader and load_tile vs rasterio.warp.

    Each method reads its own URL prefix (cold GDAL caches), tiles and rounds interleave the
    methods so that load on a shared machine hits all three alike.
    """
    from glacierscale.core.grid import tile_geobox
    from glacierscale.load import OdcStacLoader

    base_s, read_s, tile_s = [], [], []
    for rnd in range(rounds):
        base_href = items[0].assets["red"].href.replace("/files/", f"/base{rnd}/files/")
        read_items = _with_prefix(items, f"read{rnd}")
        tile_items = _with_prefix(items, f"tile{rnd}")
        for tile in tiles:
            t0 = time.perf_counter()
            with rasterio.open(f"/vsicurl/{base_href}") as src:
                dst = np.full(tile.shape, np.nan, np.float32)
                reproject(rasterio.band(src, 1), dst, dst_transform=tile.transform,
                          dst_crs=tile.crs, src_nodata=0, dst_nodata=np.nan,
                          resampling=Resampling.bilinear)
            base_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            raw = OdcStacLoader().read([read_items], ["red"], tile_geobox(tile),
                                       resampling="bilinear", dtype="float32",
                                       chunks=tile.shape).compute()
            read_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ds = load_tile(tile, ["red"], tile_items).compute()
            tile_s.append(time.perf_counter() - t0)
            assert np.allclose(raw.red.values[0], dst, equal_nan=True), "warp mismatch"
            assert np.allclose(ds.red.values, dst * np.float32(1e-4), atol=1e-4, equal_nan=True)
    return {"reproject_ratio": sum(read_s) / sum(base_s),
            "load_tile_ratio": sum(tile_s) / sum(base_s),
            "reproject_rasterio_s": sum(base_s), "reproject_reader_s": sum(read_s),
            "reproject_load_tile_s": sum(tile_s)}


def _backends(items: list[pystac.Item], tiles: list[TileSpec]) -> dict[str, float]:
    out = {}
    for loader, key in (("odc-stac", "odc_stac_s"), ("stackstac", "stackstac_s")):
        prefixed = _with_prefix(items, loader)
        t0 = time.perf_counter()
        for tile in tiles:
            ds = load_tile(tile, BANDS, prefixed, loader=loader).compute()
            assert float(ds.clear_count.max()) == 2
        out[key] = time.perf_counter() - t0
    return out


def build_memory_data(workdir: Path) -> Path:
    """COGs and items of a 4096 x 4096 px area: 6 bands (two dates) and a DEM; items as ndjson."""
    n = 4096
    x0, y0 = 12 * n * 10.0, UTM_ORIGIN[1] - 103 * n * 10.0
    tr = Affine(10, 0, x0 - 10, 0, -10, y0 + 10)  # one pixel of margin for the DEM stencil
    files = {k: write_cog(workdir / "mem" / f"{k}.tif", _field(n + 2, i, 4.0), f"EPSG:{EPSG}", tr,
                          nodata=0, blocksize=BLOCK) for i, k in enumerate(KEYS)}
    dem = write_cog(workdir / "mem" / "dem.tif", _field(n + 2, 7, 4.0).astype(np.float32),
                    f"EPSG:{EPSG}", tr, nodata=-9999.0, blocksize=BLOCK)
    raster = {k: {"scale": 1e-4, "offset": 0.0} for k in KEYS}
    items = [make_item(f"m{d}", "sentinel-2-l2a", datetime(2020, 9, 5 + 5 * d, 18), files,
                       raster=raster) for d in range(2)]
    items.append(make_item("dem", "cop-dem-glo-30", datetime(2021, 4, 22), {"data": dem}))
    out = workdir / "mem" / "items.ndjson"
    out.write_text("".join(json.dumps(i.to_dict(transform_hrefs=False)) + "\n" for i in items))
    return out


def memory_child(items_path: Path) -> None:
    """Load a 4096 x 4096 px tile area with 8 bands (6 optical, elevation, slope); print peak RSS.

    Runs in a fresh process (data made by the parent), so the peak is the load's own.
    """
    import psutil

    items = open_catalog(str(items_path)).search((-180, -90, 180, 90), None, None)
    optical = [i for i in items if i.collection_id != "cop-dem-glo-30"]
    dem = [i for i in items if i.collection_id == "cop-dem-glo-30"]
    tile = TileSpec(EPSG, 12, 103, 4096, 10.0, 0)
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    ds = load_tile(tile, [*BANDS, "elevation", "slope"], optical, dem)
    out = ds.compute(scheduler="threads")
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    assert len(out.data_vars) == 9 and out.red.shape == (4096, 4096)
    assert np.isfinite(out.slope.values).all() and (out.clear_count.values == 2).all()
    print(json.dumps({"peak_rss_gib": peak[0] / 2**30, "memory_load_s": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--memory-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        configure_cloud_reads()
        memory_child(args.memory_child)
        return
    from glacierscale.testing.services import stac_api

    configure_cloud_reads()
    with tempfile.TemporaryDirectory(prefix="io-reads-") as tmp:
        work = Path(tmp)
        data_root = work / "data"
        t0 = time.perf_counter()
        data = build_data(data_root)
        build_s = time.perf_counter() - t0
        result: dict[str, object] = {"latency_s": args.latency, "build_s": round(build_s, 1)}
        with range_server(data_root, latency=args.latency) as (url, log):
            items = _items(data, url, data_root)
            ndjson = work / "items.ndjson"
            ndjson.write_text("".join(json.dumps(i.to_dict(transform_hrefs=False)) + "\n"
                                      for i in items))
            aligned = [TileSpec(EPSG, COL0 + c, ROW0 + r, TILE_PX, 10.0, 0)
                       for r in range(2) for c in range(2)]
            halo = [TileSpec(EPSG, t.col, t.row, TILE_PX, 10.0, 64) for t in aligned]
            with stac_api([ndjson]) as api:
                t0 = time.perf_counter()
                found = open_catalog(api).search(_lonlat(aligned[0]), None, None,
                                                 ["sentinel-2-l2a"])
                result["search_s"] = round(time.perf_counter() - t0, 3)
            assert sorted(i.id for i in found) == sorted(i.id for i in items), "search missed"
            found = sorted(found, key=lambda i: i.id)
            aligned_stats = _tile_requests(_with_prefix(found, "aligned"), aligned, log,
                                           data_root, "aligned")
            halo_stats = _tile_requests(_with_prefix(found, "halo"), halo, log, data_root,
                                        "halo")
            shifted = make_item("shifted", "sentinel-2-l2a", datetime(2020, 9, 5, 18),
                                data["shifted"][0][1], raster={"red": {"scale": 1e-4}})
            shifted.assets["red"].href = shifted.assets["red"].href.replace(str(data_root),
                                                                            f"{url}/files")
            repro = _reproject_ratio([shifted], halo)
            speed = _backends(found, halo)
        mem_items = build_memory_data(work)
        child = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(mem_items)], capture_output=True,
            text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        memory = json.loads(child.stdout.strip().splitlines()[-1])
    faster = "odc-stac" if speed["odc_stac_s"] <= speed["stackstac_s"] else "stackstac"
    result |= {
        "gets_per_tile_band": aligned_stats["gets_max"],
        "gets_per_tile_band_mean": round(aligned_stats["gets_mean"], 2),
        "bytes_ratio": round(aligned_stats["bytes_ratio"], 4),
        "repeated_header_reads": aligned_stats["repeated_header_reads"]
        + halo_stats["repeated_header_reads"],
        "heads_per_file": round(aligned_stats["heads_per_file"], 2),
        "gets_per_tile_band_halo": halo_stats["gets_max"],
        "bytes_ratio_halo": round(halo_stats["bytes_ratio"], 4),
        "reproject_ratio": round(repro["reproject_ratio"], 3),
        "load_tile_ratio": round(repro["load_tile_ratio"], 3),
        "reproject_rasterio_s": round(repro["reproject_rasterio_s"], 3),
        "reproject_reader_s": round(repro["reproject_reader_s"], 3),
        "reproject_load_tile_s": round(repro["reproject_load_tile_s"], 3),
        "odc_stac_s": round(speed["odc_stac_s"], 3),
        "stackstac_s": round(speed["stackstac_s"], 3),
        "faster_loader": faster,
        "default_loader": DEFAULT_LOADER,
        "peak_rss_gib": round(memory["peak_rss_gib"], 3),
        "memory_load_s": round(memory["memory_load_s"], 2),
    }
    if faster != DEFAULT_LOADER:
        print(f"note: {faster} was faster here; DEFAULT_LOADER is {DEFAULT_LOADER}",
              file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

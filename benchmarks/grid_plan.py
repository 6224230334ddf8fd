"""Plan a synthetic 275k-glacier world and compare with a per-glacier loop baseline.

Glaciers are points scattered (Gaussian, ``--sigma-km``) around the ~800 real reference glacier
locations of ``../shared/data/global``, with the real RGI 7.0 count of every O1 region (the
summary's "Global" row is not added again) and log-normal areas whose mean is the region's real
mean glacier area. RGI region polygons are not available offline, hence the scatter.

The baseline is the straightforward per-glacier loop (zone, projection and candidate cells with
the :mod:`glacierscale.core.tiles` helpers, a shapely test per cell), timed on a subsample and
extrapolated; its owning tiles are checked against the vectorised plan.

Run from the repository root: ``python benchmarks/grid_plan.py``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from glacierscale.config import GridConfig, sample_data_dir
from glacierscale.core.grid import core_polygons
from glacierscale.core.tiles import TileSpec, cells_covering, grid_origin
from glacierscale.core.zones import to_projected, zone_epsg
from glacierscale.plan import estimate_global_tiles, plan_tiles, write_plan


def reference_points(data: Path) -> pd.DataFrame:
    """Real lon/lat and O1 region of the reference glaciers (WGMS, Leclercq, GlaThiDa links)."""
    g = data / "global"
    w = pd.read_csv(g / "rgi_wgms_links_20220112.csv")
    le = pd.read_csv(g / "rgi_leclercq_links_2014_RGIV6.csv")
    gt = pd.read_csv(g / "rgi_glathida_links.csv")
    df = pd.concat([
        pd.DataFrame({"id": w.RGI60_ID, "lon": w.CenLon, "lat": w.CenLat}),
        pd.DataFrame({"id": le.RGI_ID, "lon": le.LON, "lat": le.LAT}),
        pd.DataFrame({"id": gt.RGI60_ID, "lon": gt.GTD_LON, "lat": gt.GTD_LAT}),
    ], ignore_index=True)
    df["o1region"] = df["id"].str.extract(r"RGI\d\d-(\d\d)\.", expand=False)
    return df.dropna()


def synthetic_world(data: Path, sigma_km: float, seed: int) -> gpd.GeoDataFrame:
    """Glacier points with the real per-region counts and mean areas of RGI 7.0."""
    summary = pd.read_csv(data / "global" / "RGI2000-v7.0-G-o1region-summary.csv",
                          dtype={"o1region": str})
    summary = summary[summary["o1region"].str.lower() != "global"]
    refs = reference_points(data)
    rng = np.random.default_rng(seed)
    parts = []
    for row in summary.itertuples():
        n = int(row.count)
        if n == 0:
            continue
        anchors = refs[refs["o1region"] == row.o1region]
        pick = rng.integers(0, len(anchors), n)
        lat0 = anchors["lat"].to_numpy()[pick]
        lon0 = anchors["lon"].to_numpy()[pick]
        lat = np.clip(lat0 + rng.normal(0, sigma_km, n) / 111.0, -89.9, 89.9)
        dlon = rng.normal(0, sigma_km, n) / (111.0 * np.maximum(np.cos(np.radians(lat)), 0.05))
        lon = ((lon0 + dlon + 180.0) % 360.0) - 180.0
        mean = float(row.area_km2) / n
        s = 1.5  # log-normal spread: most glaciers small, a few ice caps
        area = rng.lognormal(np.log(mean) - s * s / 2, s, n)
        ids = [f"SYN-{row.o1region}.{i:06d}" for i in range(n)]
        parts.append(pd.DataFrame({"rgi_id": ids, "o1region": row.o1region, "area_km2": area,
                                   "lon": lon, "lat": lat}))
    df = pd.concat(parts, ignore_index=True)
    return gpd.GeoDataFrame(df.drop(columns=["lon", "lat"]),
                            geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs=4326)


def as_outlines(points: gpd.GeoDataFrame, seed: int) -> gpd.GeoDataFrame:
    """The same glaciers as lumpy 16-vertex polygons of their area (vectorised)."""
    rng = np.random.default_rng(seed)
    xy = shapely.get_coordinates(points.geometry.values)
    k = 16
    ang = np.linspace(0.0, 2.0 * np.pi, k, endpoint=False)
    radius_m = np.sqrt(points["area_km2"].to_numpy() * 1e6 / np.pi)
    rad = radius_m[:, None] * rng.uniform(0.7, 1.3, (len(points), k))
    lat = np.clip(xy[:, 1:2] + rad * np.sin(ang) / 111_320.0, -89.95, 89.95)
    cos = np.maximum(np.cos(np.radians(lat)), 0.02)
    lon = xy[:, 0:1] + rad * np.cos(ang) / (111_320.0 * cos)
    ring = np.stack([lon, lat], axis=-1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    polys = shapely.polygons(ring)
    return gpd.GeoDataFrame(points.drop(columns=["area_km2"]), geometry=polys, crs=4326)


def baseline_owners(lon: np.ndarray, lat: np.ndarray, reach: np.ndarray,
                    grid: GridConfig) -> tuple[list[str], int]:
    """Per-glacier loop: owner tile id and the number of (glacier, tile) pairs it finds."""
    size_m = grid.tile_size_px * grid.resolution
    owners, pairs = [], 0
    for x_lon, x_lat, r in zip(lon.tolist(), lat.tolist(), reach.tolist(), strict=True):
        epsg = int(zone_epsg(x_lon, x_lat))
        x, y = to_projected(epsg).transform(x_lon, x_lat)
        ox, oy = grid_origin(epsg)
        col, row = int(np.floor((x - ox) / size_m)), int(np.floor((oy - y) / size_m))
        owners.append(TileSpec(epsg, col, row).tile_id)
        disk = shapely.Point(x, y).buffer(r)
        for c, rr in cells_covering(epsg, disk.bounds, size_m):
            core = core_polygons(epsg, [c], [rr], size_m)[0]
            pairs += bool(core.intersects(disk))
    return owners, pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma-km", type=float, default=25.0, help="scatter around each anchor")
    ap.add_argument("--baseline-sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = sample_data_dir()
    if data is None:
        raise SystemExit("sample data not found: set GLACIERSCALE_SAMPLE_DATA to ../shared/data")
    grid = GridConfig()
    world = synthetic_world(data, args.sigma_km, args.seed)

    t0 = time.perf_counter()
    plan = plan_tiles(world, grid)
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_plan(plan, os.path.join(tmp, "tiles.parquet"))
        write_seconds = time.perf_counter() - t1

    # Baseline on a subsample, extrapolated; its owners must agree with the plan's.
    g = plan.glaciers
    assert g is not None
    rng = np.random.default_rng(1)
    sub = rng.choice(len(g), min(args.baseline_sample, len(g)), replace=False)
    reach = grid.buffer_m + np.sqrt(g["area_km2"].to_numpy()[sub] * 1e6 / np.pi)
    t2 = time.perf_counter()
    owners, _ = baseline_owners(g["lon"].to_numpy()[sub], g["lat"].to_numpy()[sub], reach, grid)
    base_rate = len(sub) / (time.perf_counter() - t2)
    agree = float(np.mean(np.asarray(owners) == g["tile_id"].to_numpy()[sub]))
    baseline_seconds = len(g) / base_rate

    outlines = as_outlines(world, args.seed)
    t3 = time.perf_counter()
    plan_o = plan_tiles(outlines, grid)
    seconds_outlines = time.perf_counter() - t3

    est = estimate_global_tiles(grid)
    s = plan.summary
    print(json.dumps({
        "glaciers": int(s["glaciers"]), "seconds": round(seconds, 2), "tiles": int(s["tiles"]),
        "write_seconds": round(write_seconds, 2), "cores": os.cpu_count(),
        "baseline_seconds_extrapolated": round(baseline_seconds, 1),
        "speedup_vs_loop": round(baseline_seconds / seconds, 1),
        "owner_agreement_with_loop": agree, "sigma_km": args.sigma_km,
        "seconds_outlines": round(seconds_outlines, 2), "tiles_outlines": len(plan_o.tiles),
        "zones": s["zones"], "clipped_tiles": s["clipped_tiles"],
        "glacier_km2": round(s["glacier_km2"]), "core_km2": round(s["core_km2"]),
        "projected_global_tiles": est["tiles"], "projected_global_tiles_low": est["tiles_low"],
        "projected_global_tiles_high": est["tiles_high"],
    }))


if __name__ == "__main__":
    main()

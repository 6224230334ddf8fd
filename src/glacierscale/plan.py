"""Planning a run: which tiles to process, read from any RGI outline set or centroid table.

The geometry lives in :mod:`glacierscale.core.cover` and :mod:`glacierscale.core.grid`; this module
reads the inputs (shapefile, GeoPackage, GeoParquet, zip, CSV, any fsspec URL), normalises RGI 6 / 7
column names, and writes and reads the plan: a GeoParquet of tiles with a JSON/Markdown summary and
the glacier ownership table beside it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from glacierscale.config import GridConfig, sample_data_dir
from glacierscale.core.cover import GridCover, cells_in_bbox, cover_glaciers
from glacierscale.core.estimate import estimate_from_counts
from glacierscale.core.footprint import Bbox, bbox_polygon, looks_like_bbox, parse_bbox
from glacierscale.core.grid import Cells, core_polygons, footprints, ground_area_km2
from glacierscale.core.summary import summarize, summary_markdown, tile_stats
from glacierscale.core.tiles import TileSpec, grid_origin
from glacierscale.core.zones import areal_scale, normalize_lon, to_projected
from glacierscale.inventory.outlines import read_table
from glacierscale.io.store import Store

log = logging.getLogger(__name__)

_ID_COLS = ("rgi_id", "rgiid", "rgi60_id", "rgi_id_6", "glac_id", "glims_id", "glimsid", "id")
_O1_COLS = ("o1region", "rgi_reg", "region")
_O2_COLS = ("o2region",)
_AREA_COLS = ("area_km2", "area")
_LON_COLS = ("cenlon", "lon", "longitude")
_LAT_COLS = ("cenlat", "lat", "latitude")
_REGION_IN_ID = re.compile(r"(?:RGI\d{2}-(\d{2})\.)|(?:-G-(\d{2})-)")
SUMMARY_CSV = "RGI2000-v7.0-G-o2region-summary.csv"


@dataclass(frozen=True)
class TilePlan:
    """The tiles of a run: specs in a deterministic order, their table, a summary, ownership."""

    tiles: list[TileSpec]
    frame: gpd.GeoDataFrame
    summary: dict[str, Any]
    glaciers: pd.DataFrame | None = None


def read_glaciers(source: str | gpd.GeoDataFrame | pd.DataFrame) -> pd.DataFrame:
    """Read outlines or a centroid table into the normalised glacier table.

    Columns: ``glacier_id``, ``o1region``, ``o2region``, ``area_km2`` (NaN when unknown), ``lon``,
    ``lat`` (representative point, inside the outline) and ``geometry`` (lon/lat outline with
    continuous longitudes, or None for centroid tables).
    """
    df = read_table(source) if isinstance(source, str) else source
    cols = {c.lower(): c for c in df.columns}

    def pick(names: Sequence[str]) -> str | None:
        return next((cols[n] for n in names if n in cols), None)

    n = len(df)
    id_col = pick(_ID_COLS)
    # Without ids, plan_tiles numbers the glaciers after sorting them by position.
    ids = df[id_col].astype(str).to_numpy() if id_col else np.full(n, "", dtype=object)
    out = pd.DataFrame({"glacier_id": ids})
    out["o1region"] = _regions(df, pick(_O1_COLS), ids)
    o2 = pick(_O2_COLS)
    out["o2region"] = df[o2].astype(str).to_numpy() if o2 else ""
    area = pick(_AREA_COLS)
    out["area_km2"] = pd.to_numeric(df[area], errors="coerce").to_numpy() if area else np.nan
    geoms = _lonlat_geometries(df) if isinstance(df, gpd.GeoDataFrame) else None
    if geoms is not None and np.all(shapely.get_type_id(geoms) == 0):
        # points: a centroid table that happens to be a vector file
        xy = shapely.get_coordinates(geoms)
        out["lon"], out["lat"], geoms = xy[:, 0], xy[:, 1], None
    if geoms is None:
        lon_c, lat_c = pick(_LON_COLS), pick(_LAT_COLS)
        if "lon" not in out:
            if lon_c is None or lat_c is None:
                raise ValueError(
                    "the input has neither outlines nor CenLon/CenLat columns; give RGI outlines "
                    "(shapefile, GeoPackage, GeoParquet, zip) or an RGI attribute CSV")
            out["lon"] = pd.to_numeric(df[lon_c], errors="coerce").to_numpy()
            out["lat"] = pd.to_numeric(df[lat_c], errors="coerce").to_numpy()
        out["lon"] = normalize_lon(out["lon"].to_numpy())
        out["geometry"] = None
        bad = ~np.isfinite(out["lat"]) | (out["lat"].abs() > 90)
    else:
        geoms, bad = _prepare_outlines(geoms)
        rep = shapely.get_coordinates(shapely.point_on_surface(geoms[~bad]))
        out["lon"], out["lat"] = np.nan, np.nan
        out.loc[~bad, "lon"] = normalize_lon(rep[:, 0])
        out.loc[~bad, "lat"] = rep[:, 1]
        out["geometry"] = geoms
    if bad.any():
        log.warning("ignoring %d glaciers with empty geometry or invalid coordinates", bad.sum())
    return out.loc[~np.asarray(bad)].reset_index(drop=True)


def _lonlat_geometries(df: gpd.GeoDataFrame) -> np.ndarray:
    """The geometry column in EPSG:4326 as an object array."""
    if df.crs is None:
        x0, y0, x1, y1 = df.total_bounds
        if not (x0 >= -540 and x1 <= 540 and y0 >= -90 and y1 <= 90):
            raise ValueError("the outlines have no CRS and are not in degrees; set their CRS "
                             "(e.g. gdf.set_crs(...)) or reproject them to EPSG:4326")
        return np.asarray(df.geometry.to_numpy(), dtype=object)
    if df.crs.to_epsg() != 4326:
        df = df.to_crs(4326)
    return np.asarray(df.geometry.to_numpy(), dtype=object)


def _regions(df: pd.DataFrame, col: str | None, ids: np.ndarray) -> np.ndarray:
    """Two-digit RGI O1 codes from a region column, else parsed from RGI ids, else ''."""
    if col is not None:
        raw = df[col].astype(str).str.extract(r"(\d+)", expand=False)
        return raw.fillna("").map(lambda s: s.zfill(2) if s else "").to_numpy()
    found = pd.Series(ids, dtype=str).str.extract(_REGION_IN_ID)
    return found[0].where(found[0].notna(), found[1]).where(lambda v: v.notna(), "").to_numpy()


def _prepare_outlines(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid outlines with continuous longitudes; a mask of the unusable ones (empty, missing)."""
    bad = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    geoms = geoms.copy()
    invalid = np.flatnonzero(~bad & ~shapely.is_valid(geoms))
    if invalid.size:
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    b = shapely.bounds(geoms)
    # An outline spanning more than 180° of longitude is one that crosses the antimeridian stored
    # with wrapped coordinates (Chukotka, Aleutians): move its western half east by 360°.
    wraps = np.flatnonzero(~bad & (b[:, 2] - b[:, 0] > 180.0))
    if wraps.size:
        def east(c: np.ndarray) -> np.ndarray:
            return np.column_stack([np.where(c[:, 0] < 0.0, c[:, 0] + 360.0, c[:, 0]), c[:, 1]])

        geoms[wraps] = shapely.make_valid(shapely.transform(geoms[wraps], east))
    return geoms, bad


def _select(g: pd.DataFrame, regions: Sequence[str], glacier_ids: Sequence[str],
            bbox: Bbox | None) -> pd.DataFrame:
    keep = np.ones(len(g), dtype=bool)
    if regions:
        codes = {r.strip() for r in regions if r.strip()}
        o1 = {c.zfill(2) for c in codes if "-" not in c}
        o2 = {c for c in codes if "-" in c}
        keep &= g["o1region"].isin(o1).to_numpy() | g["o2region"].isin(o2).to_numpy()
        if not keep.any():
            present = sorted(set(g["o1region"]) - {""})
            raise ValueError(f"no glaciers in regions {sorted(codes)}; the input has {present} "
                             "(use two-digit RGI O1 codes such as 01,11 or O2 codes such as 01-02)")
    if glacier_ids:
        wanted = {i.strip() for i in glacier_ids if i.strip()}
        keep &= g["glacier_id"].isin(wanted).to_numpy()
        if not keep.any():
            raise ValueError(f"none of the {len(wanted)} --glacier-ids is in the input "
                             f"(ids look like {g['glacier_id'].iloc[0]!r})")
    if bbox is not None:
        area = bbox_polygon(bbox)
        keep &= shapely.intersects(area, shapely.points(g["lon"], g["lat"]))
        if not keep.any():
            raise ValueError(f"no glacier of the selection has its point inside bbox {bbox}")
    return g.loc[keep]


def plan_tiles(
    aoi: str | Bbox | gpd.GeoDataFrame, grid: GridConfig, *, regions: Sequence[str] = (),
    glacier_ids: Sequence[str] = (), bbox: Bbox | None = None,
) -> TilePlan:
    """Plan the tiles of a run.

    ``aoi`` is a ``"W,S,E,N"`` string or 4-tuple in degrees (the tiles whose cores overlap the
    box), a path/URL of outlines or a centroid table, or a (Geo)DataFrame of them (the tiles within
    ``grid.buffer_m`` of the glaciers, each glacier owned by one tile). ``regions``,
    ``glacier_ids`` and ``bbox`` select glaciers; the result does not depend on input order.
    """
    size_m = grid.tile_size_px * grid.resolution
    if isinstance(aoi, tuple | list) or (isinstance(aoi, str) and looks_like_bbox(aoi)):
        box_ = parse_bbox(aoi)  # type: ignore[arg-type]
        cells = cells_in_bbox(box_, size_m)
        frame = _tile_frame(cells, grid, None, None)
        return _finish(cells, frame, grid, None, None, {"aoi": list(box_)})
    g = read_glaciers(aoi)
    total_in = len(g)
    g = _select(g, regions, glacier_ids, bbox)
    if g.empty:
        raise ValueError(f"{aoi if isinstance(aoi, str) else 'the input'} has no usable glaciers")
    # Sort so that sums and every output are identical whatever the input order.
    g = g.iloc[np.lexsort((g["lat"].to_numpy(), g["lon"].to_numpy(),
                           g["glacier_id"].to_numpy()))].reset_index(drop=True)
    if (g["glacier_id"] == "").all():
        g["glacier_id"] = [f"g{i:07d}" for i in range(len(g))]
    geoms = None if g["geometry"].isna().all() else g["geometry"].to_numpy()
    area = g["area_km2"].to_numpy(dtype=float)
    if geoms is None:
        # A centroid stands for a glacier of its area: grow the point by that disk's radius.
        reach = grid.buffer_m + np.sqrt(np.nan_to_num(area) * 1e6 / np.pi)
    else:
        reach = np.full(len(g), grid.buffer_m)
    cov = cover_glaciers(g["lon"], g["lat"], reach, size_m, geoms)
    if geoms is not None and np.isnan(area).any():
        miss = np.flatnonzero(np.isnan(area))
        area[miss] = _outline_area_km2(geoms[miss], g["lon"].to_numpy()[miss],
                                       g["lat"].to_numpy()[miss], cov.cells.epsg[cov.owner[miss]])
    g["area_km2"] = area
    ids = np.asarray(cov.cells.ids(), dtype=object)
    g["tile_id"] = ids[cov.owner]
    g["n_tiles"] = np.bincount(cov.pair_glacier, minlength=len(g))
    frame = _tile_frame(cov.cells, grid, g, cov)
    source = aoi if isinstance(aoi, str) else f"<{type(aoi).__name__} of {total_in} rows>"
    filters = {"regions": list(regions), "glacier_ids": len(glacier_ids),
               "bbox": list(bbox) if bbox else None, "input_glaciers": total_in}
    return _finish(cov.cells, frame, grid, g.drop(columns="geometry"), cov,
                   {"aoi": source, "filters": filters})


def _outline_area_km2(geoms: np.ndarray, lon: np.ndarray, lat: np.ndarray,
                      epsg: np.ndarray) -> np.ndarray:
    """Ground area of outlines, measured in their owning zone's CRS, scale-factor corrected."""
    out = np.zeros(len(geoms))
    for e in np.unique(epsg).tolist():
        m = epsg == e
        tr = to_projected(int(e))
        proj = shapely.transform(geoms[m], lambda c, tr=tr: np.column_stack(
            tr.transform(c[:, 0], c[:, 1])))
        out[m] = shapely.area(proj) / areal_scale(int(e), lon[m], lat[m]) / 1e6
    return out


def _tile_frame(cells: Cells, grid: GridConfig, g: pd.DataFrame | None,
                cov: GridCover | None) -> gpd.GeoDataFrame:
    """One row per tile: grid, core footprint (geometry), read footprint, glacier statistics."""
    size_m = grid.tile_size_px * grid.resolution
    n = len(cells)
    core_fp, halo_fp = np.empty(n, dtype=object), np.empty(n, dtype=object)
    core_km2, clipped = np.zeros(n), np.zeros(n, dtype=bool)
    minx, maxy = np.zeros(n), np.zeros(n)
    for epsg, idx in cells.by_zone():
        cols, rows = cells.col[idx], cells.row[idx]
        ox, oy = grid_origin(epsg)
        minx[idx], maxy[idx] = ox + cols * size_m, oy - rows * size_m
        core_fp[idx] = footprints(epsg, cols, rows, size_m)
        halo_fp[idx] = footprints(epsg, cols, rows, size_m, clip=False,
                                  halo_m=grid.halo_px * grid.resolution)
        cores = core_polygons(epsg, cols, rows, size_m)
        core_km2[idx] = ground_area_km2(epsg, cores)
        clipped[idx] = shapely.area(cores) < size_m * size_m * (1.0 - 1e-9)
    halo_m = grid.halo_px * grid.resolution
    frame = pd.DataFrame({
        "tile_id": cells.ids(), "epsg": cells.epsg.astype(np.int32),
        "col": cells.col.astype(np.int32), "row": cells.row.astype(np.int32),
        "size_px": np.int32(grid.tile_size_px), "resolution": float(grid.resolution),
        "halo_px": np.int32(grid.halo_px),
        "minx": minx, "miny": maxy - size_m, "maxx": minx + size_m, "maxy": maxy,
        # the halo'd read grid, as rasterio/affine order (a, b, c, d, e, f)
        "transform": [[grid.resolution, 0.0, x - halo_m, 0.0, -grid.resolution, y + halo_m]
                      for x, y in zip(minx.tolist(), maxy.tolist(), strict=True)],
        "core_km2": core_km2, "clipped": clipped,
    })
    if g is not None and cov is not None:
        stats = tile_stats(n, cov.owner, cov.pair_glacier, cov.pair_cell,
                           g["area_km2"].to_numpy(), g["o1region"].to_numpy(dtype=str))
        for k, v in stats.items():
            frame[k] = v
    else:
        frame["n_glaciers"], frame["glacier_km2"], frame["n_reaching"] = 0, 0.0, 0
        frame["regions"] = ""
    frame["halo_footprint"] = gpd.GeoSeries(halo_fp, crs=4326)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(core_fp, crs=4326), crs=4326)


def _finish(cells: Cells, frame: gpd.GeoDataFrame, grid: GridConfig, g: pd.DataFrame | None,
            cov: GridCover | None, extra: dict[str, Any]) -> TilePlan:
    read_px = grid.tile_size_px + 2 * grid.halo_px
    own = pairs = None
    if g is not None and cov is not None:
        region = g["o1region"].to_numpy(dtype=str)
        own = (cov.owner, region, g["area_km2"].to_numpy())
        pairs = (cov.pair_cell, region[cov.pair_glacier])
    summary = summarize(
        tiles=len(cells), zones=int(np.unique(cells.epsg).size),
        clipped=int(frame["clipped"].sum()), core_km2=float(frame["core_km2"].sum()),
        read_km2=len(cells) * (read_px * grid.resolution) ** 2 / 1e6,
        owner_tile_region=own, pair_regions=pairs, grid=grid.model_dump(mode="json"))
    tiles = cells.tiles(grid.tile_size_px, grid.resolution, grid.halo_px)
    return TilePlan(tiles=tiles, frame=frame, summary={**summary, **extra}, glaciers=g)


def sidecar_paths(out: str) -> dict[str, str]:
    """Where the summary and ownership table of a plan written to ``out`` go."""
    stem = re.sub(r"\.(geo)?parquet$", "", out)
    return {"json": f"{stem}.summary.json", "md": f"{stem}.summary.md",
            "glaciers": f"{stem}.glaciers.parquet"}


def _put(out: str, payload: bytes) -> None:
    """Publish a file atomically: a complete file appears at ``out`` or nothing does."""
    root, slash, name = out.rpartition("/")
    Store(root or ("/" if slash else ".")).write_bytes_atomic(name, payload)


def write_plan(plan: TilePlan, out: str) -> None:
    """Write the tiles GeoParquet at ``out`` and, beside it, the summary (JSON and Markdown) and
    the glacier ownership table. The tiles file is written last: its presence marks a whole plan."""
    side = sidecar_paths(out)
    if plan.glaciers is not None:
        buf = io.BytesIO()
        plan.glaciers.to_parquet(buf, index=False)
        _put(side["glaciers"], buf.getvalue())
    _put(side["json"], json.dumps(plan.summary, indent=2, sort_keys=True).encode())
    _put(side["md"], summary_markdown(plan.summary).encode())
    buf = io.BytesIO()
    plan.frame.to_parquet(buf, index=False)
    _put(out, buf.getvalue())


def read_plan(path: str) -> TilePlan:
    """Read a plan written by :func:`write_plan` (any fsspec URL)."""
    with fsspec.open(path, "rb") as f:
        frame = gpd.read_parquet(io.BytesIO(f.read()))
    side = sidecar_paths(path)
    fs, _ = fsspec.core.url_to_fs(path)
    summary: dict[str, Any] = {}
    if fs.exists(side["json"]):
        with fsspec.open(side["json"], "rt") as f:
            summary = json.load(f)
    glaciers = None
    if fs.exists(side["glaciers"]):
        with fsspec.open(side["glaciers"], "rb") as f:
            glaciers = pd.read_parquet(io.BytesIO(f.read()))
    tiles = [TileSpec(int(r.epsg), int(r.col), int(r.row), int(r.size_px), float(r.resolution),
                      int(r.halo_px)) for r in frame.itertuples()]
    return TilePlan(tiles=tiles, frame=frame, summary=summary, glaciers=glaciers)


def estimate_global_tiles(grid: GridConfig, summary_csv: str | None = None) -> dict[str, Any]:
    """Tiles a whole-world run needs, from RGI 7.0 region summaries (count and area per region).

    ``summary_csv`` is an O1 or O2 region summary (default: the O2 summary in the sample data); its
    "Global" row is skipped so nothing is counted twice.
    """
    if summary_csv is None:
        base = sample_data_dir()
        if base is None or not (base / "global" / SUMMARY_CSV).exists():
            raise FileNotFoundError(f"no RGI summary found; pass summary_csv=... ({SUMMARY_CSV})")
        summary_csv = str(base / "global" / SUMMARY_CSV)
    with fsspec.open(summary_csv, "rt") as f:
        table = pd.read_csv(f, dtype={"o1region": str, "o2region": str})
    key = "o2region" if "o2region" in table.columns else "o1region"
    if key not in table.columns or not {"count", "area_km2"} <= set(table.columns):
        raise ValueError(f"{summary_csv}: expected RGI 7.0 summary columns o1region|o2region, "
                         "count, area_km2")
    table = table[table[key].astype(str).str.lower() != "global"]
    rows = [(str(r[key]), int(r["count"]), float(r["area_km2"])) for _, r in table.iterrows()]
    result = estimate_from_counts(rows, grid.tile_size_px * grid.resolution, grid.buffer_m)
    result["source"] = os.path.basename(summary_csv)
    return result

"""Merge tile outlines into one set of glaciers, whole across tile borders and UTM zones.

Two passes. Within one projection, polygons touching a core edge are dissolved with the polygons
they touch: tile cores abut exactly and ``vectorize_tile`` keeps border vertices on pixel corners,
so the union is exact (no slivers, no duplicates). Across projections (a glacier straddling a UTM
zone border, processed on both zones' grids) polygons are brought into one local Lambert azimuthal
equal-area CRS and dissolved where they overlap or nearly touch (a gap of up to one pixel between
the two grids is closed). Areas are measured in that equal-area CRS.

:mod:`.cluster_merge` computes the same result on a Dask cluster, from the same pieces below
(dissolve, touch groups, inventory rows, namesake ids).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from glacierscale.inventory.vectorize import OUTLINE_COLUMNS

#: Columns of the merged inventory (EPSG:4326) before RGI identity is attached.
MERGED_COLUMNS = ["glacier_id", "area_km2", "area_km2_lo", "area_km2_hi", "mean_prob",
                  "mean_uncertainty", "n_tiles", "tile_ids", "rgi_id", "ref_area_km2",
                  "area_change_km2", "area_change_pct_per_yr", "geometry"]


def equal_area_crs(lonlat_bounds: Sequence[tuple[float, float, float, float]]) -> CRS:
    """Lambert azimuthal equal-area CRS centred on the data (lon/lat boxes), antimeridian-safe."""
    b = np.asarray(lonlat_bounds, dtype=float)
    lons = np.radians((b[:, 0] + b[:, 2]) / 2.0)
    # Circular mean: boxes on both sides of the antimeridian average to ~180, not ~0.
    lon0 = math.degrees(math.atan2(np.sin(lons).mean(), np.cos(lons).mean()))
    lat0 = float(((b[:, 1] + b[:, 3]) / 2.0).mean())
    return CRS.from_proj4(f"+proj=laea +lat_0={lat0:.4f} +lon_0={lon0:.4f} +x_0=0 +y_0=0 "
                          "+datum=WGS84 +units=m +no_defs")


def glims_like_id(lon: float, lat: float) -> str:
    """GLIMS-style id of a point, e.g. ``G086932E27925N`` (longitude 0..360 east)."""
    lon360 = lon % 360.0
    return f"G{round(lon360 * 1000) % 360000:06d}E{round(abs(lat) * 1000):05d}" \
           f"{'N' if lat >= 0 else 'S'}"


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = int(self.parent[i])
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def _dissolve(gdf: gpd.GeoDataFrame, groups: np.ndarray, closing: float = 0.0) -> gpd.GeoDataFrame:
    """Union the geometries of each group, split the result into its parts, aggregate attributes.

    Sums: area_m2, area_lo_m2, area_hi_m2; area-weighted means: mean_prob, mean_uncertainty;
    tile ids are collected. ``closing`` (metres) closes gaps narrower than twice its value.
    """
    return _dissolve_keyed(gdf, groups, closing)[0]


def _dissolve_keyed(gdf: gpd.GeoDataFrame, groups: np.ndarray, closing: float = 0.0
                    ) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """:func:`_dissolve`, plus where each output row came from: the position of its group's
    first member in ``gdf`` and its part number. Output rows come in that (first, part) order,
    which is what lets a merge done in pieces put its rows in the single-process order."""
    geoms = gdf.geometry.to_numpy()
    out_rows: list[dict[str, object]] = []
    first: list[int] = []
    part_no: list[int] = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) == 1:
            out_rows.append(gdf.iloc[idx[0]].to_dict())
            first.append(int(idx[0]))
            part_no.append(0)
            continue
        merged = shapely.union_all(geoms[idx])
        if closing > 0:
            merged = merged.buffer(closing, join_style="mitre").buffer(-closing,
                                                                       join_style="mitre")
        parts = shapely.get_parts(merged)
        parts = parts[shapely.area(parts) > 0]
        points = shapely.point_on_surface(geoms[idx])
        tree = shapely.STRtree(parts)
        owner = tree.query(points, predicate="intersects")
        member_part = np.full(len(idx), -1)
        member_part[owner[0]] = owner[1]
        for j, part in enumerate(parts):
            sub = gdf.iloc[idx[member_part == j]]
            out_rows.append(_aggregate(sub, part))
            first.append(int(idx[0]))
            part_no.append(j)
    frame = gpd.GeoDataFrame(out_rows, columns=list(gdf.columns), geometry="geometry",
                             crs=gdf.crs)
    return frame, np.asarray(first, dtype=np.int64), np.asarray(part_no, dtype=np.int64)


def _aggregate(sub: gpd.GeoDataFrame, geom: BaseGeometry) -> dict[str, object]:
    w = sub["area_m2"].to_numpy(dtype=float)

    def wmean(col: str) -> float:
        v = sub[col].to_numpy(dtype=float)
        ok = np.isfinite(v) & (w > 0)
        return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")

    tiles = sorted({t for ts in sub["tile_id"] for t in str(ts).split(",") if t})
    return {"tile_id": ",".join(tiles), "mean_prob": wmean("mean_prob"),
            "mean_uncertainty": wmean("mean_uncertainty"),
            "touches_edge": bool(sub["touches_edge"].any()) if len(sub) else False,
            "area_m2": float(w.sum()), "area_lo_m2": float(sub["area_lo_m2"].sum()),
            "area_hi_m2": float(sub["area_hi_m2"].sum()),
            "res_m": float(sub["res_m"].max()) if len(sub) else float("nan"),
            "geometry": geom}


def _touch_groups(geoms: np.ndarray, candidates: np.ndarray, distance: float = 0.0,
                  other: np.ndarray | None = None) -> np.ndarray:
    """Connected components of geometries that touch (or lie within ``distance``)."""
    uf = _UnionFind(len(geoms))
    sub = np.flatnonzero(candidates)
    if len(sub):
        tree = shapely.STRtree(geoms[sub])
        if distance > 0:
            pairs = tree.query(geoms[sub], predicate="dwithin", distance=distance)
        else:
            pairs = tree.query(geoms[sub], predicate="intersects")
        for a, b in zip(sub[pairs[0]], sub[pairs[1]], strict=True):
            if a != b and (other is None or other[a] != other[b]):
                uf.union(int(a), int(b))
    return uf.labels()


def _empty_inventory() -> gpd.GeoDataFrame:
    cols: dict[str, list[object]] = {c: [] for c in MERGED_COLUMNS if c != "geometry"}
    gdf = gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")
    return gdf.astype({c: "float64" for c in ("area_km2", "area_km2_lo", "area_km2_hi",
                                                "mean_prob", "mean_uncertainty",
                                                "ref_area_km2", "area_change_km2",
                                                "area_change_pct_per_yr")} | {"n_tiles": "int64"})


def merge_tiles(frames: Sequence[gpd.GeoDataFrame], *,
                min_area_m2: float = 5000.0) -> gpd.GeoDataFrame:
    """Dissolve tile outlines across tile borders into one inventory (EPSG:4326).

    ``frames`` are ``vectorize_tile`` outputs (any mix of projections). Output columns:
    glacier_id (GLIMS-style id of a point inside), area_km2 (equal-area), area_km2_lo /
    area_km2_hi (area at the lower / upper probability bound), mean_prob, mean_uncertainty,
    n_tiles, tile_ids, geometry; plus rgi_id, ref_area_km2, area_change_km2,
    area_change_pct_per_yr left empty for ``attach_rgi`` to fill. Glaciers still smaller than
    ``min_area_m2`` after merging are dropped.
    """
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return _empty_inventory()
    for f in frames:
        missing = set(OUTLINE_COLUMNS) - set(f.columns)
        if missing or f.crs is None:
            raise ValueError(f"merge_tiles needs vectorize_tile outputs with a CRS; a frame "
                             f"lacks {sorted(missing) or 'a CRS'}")
    # Pass 1: per projection, exact dissolve of border-touching polygons.
    by_crs: dict[str, list[gpd.GeoDataFrame]] = {}
    for f in frames:
        by_crs.setdefault(CRS.from_user_input(f.crs).to_string(), []).append(
            f[OUTLINE_COLUMNS])
    merged_zones = []
    for crs_s, fs in by_crs.items():
        g = gpd.GeoDataFrame(pd.concat(fs, ignore_index=True), geometry="geometry", crs=crs_s)
        g["tile_id"] = g["tile_id"].astype(str)
        labels = _touch_groups(g.geometry.to_numpy(), g["touches_edge"].to_numpy(dtype=bool))
        merged_zones.append((crs_s, _dissolve(g, labels)))
    # Pass 2: one local equal-area CRS for areas and the cross-projection dissolve.
    ll_bounds = [tuple(z.to_crs(4326).total_bounds) for _, z in merged_zones]
    ea = equal_area_crs(ll_bounds)
    parts = []
    for i, (_, z) in enumerate(merged_zones):
        zz = z.to_crs(ea)
        zz["_zone"] = i
        parts.append(zz)
    allg = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=ea)
    if len(merged_zones) > 1:
        res = float(np.nanmax(allg["res_m"].to_numpy(dtype=float)))
        zone = allg["_zone"].to_numpy()
        labels = _touch_groups(allg.geometry.to_numpy(), np.ones(len(allg), bool),
                               distance=res, other=zone)
        allg = _dissolve(allg.drop(columns="_zone"), labels, closing=0.5 * res)
    else:
        allg = allg.drop(columns="_zone")
    return _finish(allg, min_area_m2)


def _finish(allg: gpd.GeoDataFrame, min_area_m2: float) -> gpd.GeoDataFrame:
    """Equal-area areas and bounds, speck removal, ids; to EPSG:4326 with the inventory columns."""
    out, area, _ = _inventory_rows(allg, min_area_m2)
    if not len(out):
        return _empty_inventory()
    out["glacier_id"] = suffix_namesakes(out["glacier_id"].to_numpy(), area)
    return out.sort_values("glacier_id", ignore_index=True)[MERGED_COLUMNS]


def _inventory_rows(allg: gpd.GeoDataFrame, min_area_m2: float
                    ) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """Inventory rows of glaciers in an equal-area CRS, in their order, ids not yet unique;
    their areas in m²; and which input rows were kept (large enough).

    Every value of a row depends on that glacier alone, so rows made in pieces equal the rows
    made all at once.
    """
    area = allg.geometry.area.to_numpy()
    keep = area >= min_area_m2
    allg, area = allg.loc[keep].reset_index(drop=True), area[keep]
    if not len(allg):
        return _empty_inventory(), area, keep
    px = allg["area_m2"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(px > 0, allg["area_lo_m2"].to_numpy(dtype=float) / px, 1.0) * area
        hi = np.where(px > 0, allg["area_hi_m2"].to_numpy(dtype=float) / px, 1.0) * area
    ll = allg.to_crs(4326)
    pts = shapely.point_on_surface(ll.geometry.to_numpy())
    ids = [glims_like_id(p.x, p.y) for p in pts]
    rows = gpd.GeoDataFrame({
        "glacier_id": ids, "area_km2": area / 1e6, "area_km2_lo": lo / 1e6,
        "area_km2_hi": hi / 1e6, "mean_prob": allg["mean_prob"].to_numpy(dtype=float),
        "mean_uncertainty": allg["mean_uncertainty"].to_numpy(dtype=float),
        "n_tiles": [len(str(t).split(",")) for t in allg["tile_id"]],
        "tile_ids": allg["tile_id"].astype(str).to_numpy(),
        "rgi_id": pd.Series([None] * len(allg), dtype=object),
        "ref_area_km2": np.nan, "area_change_km2": np.nan, "area_change_pct_per_yr": np.nan,
    }, geometry=ll.geometry.to_numpy(), crs="EPSG:4326")[MERGED_COLUMNS]
    return rows, area, keep


def suffix_namesakes(ids: np.ndarray, area_m2: np.ndarray,
                     *tiebreak: np.ndarray) -> list[str]:
    """Unique glacier ids: the largest glacier keeps the plain id, smaller namesakes get
    ``-2``, ``-3``, ... Equal areas are ordered by ``tiebreak`` keys (last key first, as in
    ``np.lexsort``), else by position."""
    ids = np.asarray([str(i) for i in ids])
    order = np.lexsort((*tiebreak, -np.asarray(area_m2, dtype=float), ids))
    seen: dict[str, int] = {}
    unique = list(ids)
    for i in order:
        n = seen.get(ids[i], 0)
        seen[ids[i]] = n + 1
        unique[i] = ids[i] if n == 0 else f"{ids[i]}-{n + 1}"
    return [str(u) for u in unique]

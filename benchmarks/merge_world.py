"""A synthetic global run's tile outlines and RGI-like reference, shaped like the real inventory.

The glaciers are the points of the global plan
(:func:`glacierscale.testing.global_count.global_glacier_points`: the real RGI 7.0 count of
every O1 region, in whole grid cells around each region's real reference glaciers from
``../shared/data/global``) and the tiles are that plan's tiles (35,515). Each glacier gets a
log-normal area with its region's real mean and stays at its point where there is room; where
neighbours crowd it, it moves to a free place in a planned tile of its region and is shrunk
(largest first) until no two come closer than 60 m, never reaching beyond the planned tiles.
A few (0.3 %, about the RGI share) are moved onto a UTM zone border, adding the border tiles
they need. Each is a lumpy outline with a vertex every ~30 m (what pixel-scale simplification
of 10 m outlines leaves). The *reference* is that outline in lon/lat (split at the
antimeridian, RGI 7 columns); the *mapped* glacier is the same outline shrunk by 0-6 % (an
area change), drawn in the projection of every zone it lies in, snapped to that zone's 10 m
pixel grid (so the two sides of a zone border leave the sub-pixel gaps and overlaps real tiles
leave) and cut by the tile cores of the global grid exactly as tiles write them:
``tiles/<tile_id>/outlines.parquet`` in the tile CRS with ``vectorize_tile``'s columns, plus
the tile's STAC item (every planned tile, with or without ice). 1 % of reference glaciers
vanish and 1 % of mapped glaciers are new.
"""

from __future__ import annotations

import itertools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from glacierscale.config import GridConfig
from glacierscale.core.footprint import ring_to_lonlat
from glacierscale.core.grid import footprints, projected
from glacierscale.core.tiles import TileSpec, grid_origin
from glacierscale.core.zones import (
    is_polar,
    normalize_lon,
    to_lonlat,
    to_projected,
    zone_bounds,
    zone_epsg,
)
from glacierscale.inventory.vectorize import OUTLINE_COLUMNS, empty_outlines
from glacierscale.io import Provenance, Store, tile_item, write_geoparquet
from glacierscale.io.outputs import tile_key
from glacierscale.plan import plan_tiles

EARTH_R = 6_371_000.0
COVERAGE = 0.12  # share of the land around an anchor that is ice
SPACING_M = 30.0  # outline vertex spacing
GAP_M = 60.0  # least distance between two glaciers
RES = 10.0
ZONE_SHARE = 0.003  # glaciers moved onto a UTM zone border (~0.3 % cross one in RGI)
MIN_AREA_M2 = 20_000.0  # smallest glacier kept (the merge drops those < 5,000 m²)


@dataclass
class _Spots:
    """Where a region's glaciers may move: its planned tiles, and how far from a point in one a
    glacier may reach without leaving the planned tiles."""

    tiles: list[TileSpec]
    planned: set[tuple[int, int, int]]

    def draw(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """A random point (lon, lat) in one of the tiles, and the room around it (m)."""
        t = self.tiles[int(rng.integers(len(self.tiles)))]
        x0, y0, x1, y1 = t.core_bounds
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        lon, lat = to_lonlat(t.epsg).transform(x, y)
        return float(lon), float(lat), self.room(t, x, y)

    def room(self, t: TileSpec, x: float, y: float) -> float:
        """How far a glacier at (x, y) in tile ``t`` may reach and stay in planned tiles: to a
        side, one more tile where the neighbour there is planned; never round the corner of an
        unplanned diagonal neighbour."""
        x0, y0, x1, y1 = t.core_bounds
        s = t.size_m

        def has(dc: int, dr: int) -> bool:
            return (t.epsg, t.col + dc, t.row + dr) in self.planned

        edge = min(x - x0 + s * has(-1, 0), x1 - x + s * has(1, 0),
                   y - y0 + s * has(0, 1), y1 - y + s * has(0, -1))
        for dc, dr, cx, cy in ((-1, 1, x0, y0), (1, 1, x1, y0), (-1, -1, x0, y1),
                               (1, -1, x1, y1)):
            if not has(dc, dr):
                edge = min(edge, math.hypot(x - cx, y - cy))
        scale = 0.97 if is_polar(t.epsg) else 0.999  # projected metres vs ground metres
        return edge * scale - 20.0


def _fit(world: gpd.GeoDataFrame, tiles: list[TileSpec], owner: np.ndarray, home_reach: np.ndarray,
         seed: int, tries: int = 12, max_drop: float = 0.01,
         straddle: float = ZONE_SHARE) -> gpd.GeoDataFrame:
    """Glaciers that never come closer than GAP_M to each other and stay in the planned tiles.

    Region by region, largest glacier first, each is shrunk to the room at its point (within
    ``home_reach[i]``, the plan's reach there); one with too little room (e.g. next to a bigger
    one) moves to a random place in a planned tile of its region, as large as its place allows.
    Only where that still leaves more than ``max_drop`` of a region's glaciers without room are
    all its glaciers made smaller and the region placed again (the count is kept, the area
    gives). Then a ``straddle`` share moves onto a UTM zone border. A glacier is a disk of 1.3
    times its mean radius here (the lumpy outline's largest radius). ``owner[i]`` is the tile
    owning glacier ``i`` in the plan. Neighbours are found on a 3-D hash grid.
    """
    rng = np.random.default_rng(seed + 2)
    xy = shapely.get_coordinates(world.geometry.to_numpy())
    home = _xyz(xy[:, 0], xy[:, 1])
    pos = home.copy()
    lon, lat = xy[:, 0].copy(), xy[:, 1].copy()
    r0 = np.sqrt(world["area_km2"].to_numpy() * 1e6 / math.pi)
    min_r = math.sqrt(MIN_AREA_M2 / math.pi)
    min_reach = 1.3 * min_r + GAP_M / 2
    reach = np.zeros(len(world))
    got = np.zeros(len(world))
    cell = 4000.0
    grid: dict[tuple[int, int, int], list[int]] = {}
    by_id = {t.tile_id: t for t in tiles}
    planned = {(t.epsg, t.col, t.row) for t in tiles}

    def cells(p: np.ndarray, r: float) -> list[tuple[int, ...]]:
        lo = np.floor((p - r) / cell).astype(int)
        hi = np.floor((p + r) / cell).astype(int)
        return list(itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi, strict=True))))

    def room(p: np.ndarray, r: float, extra: dict[tuple[int, ...], list[int]]) -> float:
        cs = cells(p, r)
        near = np.array(sorted({j for c in cs for g in (grid, extra) for j in g.get(c, ())}),
                        np.int64)
        if not len(near):
            return r
        return min(r, float((np.linalg.norm(pos[near] - p, axis=1) - reach[near]).min()))

    # How far a glacier may reach at its own point: the plan's reach there, or further where
    # neighbouring tiles are planned too.
    home_cap = home_reach.astype(float).copy()
    for i, t in enumerate(owner.tolist()):
        tile = by_id[t]
        x, y = to_projected(tile.epsg).transform(xy[i, 0], xy[i, 1])
        home_cap[i] = max(home_cap[i], _Spots([], planned).room(tile, x, y))
    for idx in world.groupby("o1region").indices.values():
        spots = _Spots(sorted({by_id[t] for t in owner[idx]}, key=lambda t: t.tile_id), planned)
        f = 1.0
        while True:
            # Never below the smallest glacier kept: shrinking makes room, it must not drop.
            want = np.maximum(f * r0[idx], 1.2 * min_r)
            cap0 = 1.3 * want + GAP_M / 2
            extra: dict[tuple[int, ...], list[int]] = {}
            placed = 0
            for n in np.argsort(-cap0, kind="stable"):
                i = int(idx[n])
                p, at = home[i], (xy[i, 0], xy[i, 1])
                space = room(p, min(cap0[n], home_cap[i] + GAP_M / 2), extra)
                best = (space, p, at)
                for _ in range(tries):
                    if best[0] >= min(cap0[n], 0.5 * cap0[n] + min_reach):
                        break  # room for at least about half its size
                    lo_, la_, edge = spots.draw(rng)
                    q = _xyz(np.array([lo_]), np.array([la_]))[0]
                    sp = room(q, min(cap0[n], edge), extra)
                    if sp > best[0]:
                        best = (sp, q, (lo_, la_))
                space, p, (lon[i], lat[i]) = best
                if space < min_reach:
                    got[i] = 0.0
                    continue
                got[i], reach[i], pos[i] = (space - GAP_M / 2) / 1.3, space, p
                placed += 1
                for c in cells(p, space):
                    extra.setdefault(c, []).append(i)
            if len(idx) - placed <= max_drop * len(idx) or f < 0.05:
                break
            f *= 0.8
            reach[idx] = 0.0
            pos[idx] = home[idx]
            lon[idx], lat[idx] = xy[idx, 0], xy[idx, 1]
        # A few glaciers of the region move onto the nearest UTM zone border at their latitude
        # (the plan's cells are whole in their zone): glaciers split between two projections.
        ok = idx[got[idx] > 0]
        for i in rng.choice(ok, round(straddle * len(ok)), replace=False).tolist():
            if abs(lat[i]) > 79.0:
                continue
            keep = reach[i]
            reach[i] = -1e12  # its own old place does not count
            border = round((lon[i] + 180.0) / 6.0) * 6.0 - 180.0
            best = (0.0, pos[i], (lon[i], lat[i]))
            for _ in range(tries):
                lo_ = float(normalize_lon(border + rng.uniform(-0.003, 0.003)))
                la_ = float(np.clip(lat[i] + rng.uniform(-0.3, 0.3), -79.0, 83.0))
                q = _xyz(np.array([lo_]), np.array([la_]))[0]
                sp = room(q, min(1.3 * max(r0[i], 300.0), 3000.0) + GAP_M / 2, extra)
                if sp > best[0]:
                    best = (sp, q, (lo_, la_))
            if best[0] < 1.3 * 300.0 + GAP_M / 2:
                reach[i] = keep
                continue
            reach[i], pos[i], (lon[i], lat[i]) = best[0], best[1], best[2]
            got[i] = (best[0] - GAP_M / 2) / 1.3
            for c in cells(pos[i], reach[i]):
                extra.setdefault(c, []).append(i)
        for c, js in extra.items():
            grid.setdefault(c, []).extend(js)
    out = world.copy()
    out["area_km2"] = math.pi * got**2 / 1e6
    out["geometry"] = gpd.points_from_xy(lon, lat)
    return gpd.GeoDataFrame(out[got > 0].reset_index(drop=True), geometry="geometry", crs=4326)


def _xyz(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return EARTH_R * np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo),
                                      np.sin(la)])


def _rings(lon0: np.ndarray, lat0: np.ndarray, r0: np.ndarray, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lumpy closed rings of mean radius ``r0`` (m) around lon/lat centres, all at once.

    Returns lon, lat of every vertex and the ring each belongs to. The shape is drawn on the
    sphere (destination point from centre, bearing and distance), with a vertex every SPACING_M.
    """
    n = np.clip(2 * np.pi * r0 * 1.2 / SPACING_M, 16, 20000).astype(int)
    owner = np.repeat(np.arange(len(r0)), n + 1)
    start = np.concatenate([[0], np.cumsum(n + 1)[:-1]])
    k = np.arange(len(owner)) - start[owner]
    k = np.where(k == n[owner], 0, k)  # closing vertex = first vertex, bit for bit
    t = 2 * np.pi * k / n[owner]
    r = np.ones(len(owner))
    for h, a in ((2, 0.12), (3, 0.08), (5, 0.05), (9, 0.03)):
        r += a * np.sin(h * t + rng.uniform(0, 2 * np.pi, len(r0))[owner])
    d = r0[owner] * np.clip(r, 0.7, 1.3) / EARTH_R
    la1, lo1 = np.radians(lat0[owner]), np.radians(lon0[owner])
    la2 = np.arcsin(np.sin(la1) * np.cos(d) + np.cos(la1) * np.sin(d) * np.cos(t))
    lo2 = lo1 + np.arctan2(np.sin(t) * np.sin(d) * np.cos(la1),
                           np.cos(d) - np.sin(la1) * np.sin(la2))
    return np.degrees(lo2), np.degrees(la2), owner


def _polygons(lon: np.ndarray, lat: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Lon/lat polygons from ring vertices; rings across the antimeridian are split there."""
    lon_n = normalize_lon(lon)
    lo_min = np.full(n, np.inf)
    lo_max = np.full(n, -np.inf)
    np.minimum.at(lo_min, owner, lon_n)
    np.maximum.at(lo_max, owner, lon_n)
    out = np.asarray(shapely.polygons(shapely.linearrings(np.column_stack([lon_n, lat]),
                                                          indices=owner)), dtype=object)
    cross = np.flatnonzero(lo_max - lo_min > 180.0)
    for i in cross:
        m = owner == i
        out[i] = ring_to_lonlat(lon[m], lat[m])
    return out


def outlines(world: gpd.GeoDataFrame, seed: int) -> gpd.GeoDataFrame:
    """Reference outlines (lon/lat, RGI 7 columns) and the mapped outline of each glacier."""
    rng = np.random.default_rng(seed + 3)
    xy = shapely.get_coordinates(world.geometry.to_numpy())
    r0 = np.sqrt(world["area_km2"].to_numpy() * 1e6 / math.pi)
    n = len(world)
    shrink = rng.uniform(0.0, 0.06, n)
    lon, lat, owner = _rings(xy[:, 0], xy[:, 1], r0, rng)
    ref = _polygons(lon, lat, owner, n)
    # The mapped glacier: the same shape, shrunk about its centre (an area change).
    scale = np.sqrt(1 - shrink)[owner]
    d_lon = normalize_lon(lon - xy[owner, 0])
    lon_m = xy[owner, 0] + d_lon * scale
    lat_m = xy[owner, 1] + (lat - xy[owner, 1]) * scale
    mapped = _polygons(lon_m, lat_m, owner, n)
    status = rng.choice(np.array(["both", "vanished", "new"]), n, p=[0.98, 0.01, 0.01])
    region = world["o1region"].to_numpy()
    rgi = [f"RGI2000-v7.0-G-{r}-{i:05d}" for i, r in enumerate(region)]
    return gpd.GeoDataFrame({
        "rgi_id": rgi, "o1region": region, "src_date": "2000-08-15", "glac_name": None,
        "status": status, "mapped": mapped}, geometry=ref, crs=4326)


def _zones_of(geoms: np.ndarray) -> list[list[int]]:
    """The zones each lon/lat geometry lies in (checked on a 5 x 5 sample of its box)."""
    b = shapely.bounds(geoms)
    f = np.linspace(0.0, 1.0, 5)
    out = []
    wide = b[:, 2] - b[:, 0] > 180  # split at the antimeridian: both ends
    lon = b[:, [0]] + (b[:, [2]] - b[:, [0]]) * f
    lat = b[:, [1]] + (b[:, [3]] - b[:, [1]]) * f
    for i in range(len(geoms)):
        gx, gy = np.meshgrid(lon[i], lat[i])
        zs = set(zone_epsg(gx.ravel(), gy.ravel()).tolist())
        if wide[i]:
            zs |= set(zone_epsg(np.array([-179.999, 179.999, -179.999, 179.999]),
                                np.array([b[i, 1], b[i, 1], b[i, 3], b[i, 3]])).tolist())
        out.append(sorted(zs))
    return out


def _snap(epsg: int, geoms: np.ndarray) -> np.ndarray:
    """Lon/lat geometries in a zone CRS with vertices on the zone's 10 m pixel corners."""
    cm = 0.0 if epsg in (3413, 3031) else zone_bounds(epsg)[0] + 3.0
    ox, oy = grid_origin(epsg)

    def f(c: np.ndarray) -> np.ndarray:
        x, y = projected(epsg, cm + normalize_lon(c[:, 0] - cm), c[:, 1])
        return np.column_stack([ox + np.round((x - ox) / RES) * RES,
                                oy + np.round((y - oy) / RES) * RES])

    out = shapely.transform(geoms, f)
    bad = np.flatnonzero(~shapely.is_valid(out))
    for i in bad:
        out[i] = shapely.make_valid(out[i])
    return out


def tile_pieces(ref: gpd.GeoDataFrame, size_m: float, seed: int
                ) -> tuple[dict[tuple[int, int, int], list[dict[str, object]]], dict[str, Any]]:
    """Mapped glaciers cut by tile cores: ``{(epsg, col, row): [outline rows]}``, and the
    share of glaciers crossing tile and zone borders."""
    rng = np.random.default_rng(seed + 4)
    mapped = ref[ref["status"] != "vanished"]
    geoms = mapped["mapped"].to_numpy()
    prob = rng.uniform(0.6, 0.95, len(geoms))
    unc = rng.uniform(0.03, 0.2, len(geoms))
    by_zone: dict[int, list[tuple[int, shapely.Geometry]]] = {}
    for i, (g, zs) in enumerate(zip(geoms, _zones_of(geoms), strict=True)):
        if len(zs) == 1:
            by_zone.setdefault(zs[0], []).append((i, g))
            continue
        for e in zs:
            w, s, ea, n = zone_bounds(e)
            part = shapely.intersection(g, shapely.box(w, s, ea, n))
            if part.area > 0:
                by_zone.setdefault(e, []).append((i, shapely.segmentize(part, 0.0002)))
    pieces: dict[tuple[int, int, int], list[dict[str, object]]] = {}
    n_zones = np.zeros(len(geoms), np.int64)
    n_cells = np.zeros(len(geoms), np.int64)
    for epsg, items in by_zone.items():
        idx = np.array([i for i, _ in items])
        zg = _snap(epsg, np.array([g for _, g in items], dtype=object))
        ox, oy = grid_origin(epsg)
        b = shapely.bounds(zg)
        c0 = np.floor((b[:, 0] - ox) / size_m).astype(int)
        c1 = np.floor((b[:, 2] - ox) / size_m).astype(int)
        r0 = np.floor((oy - b[:, 3]) / size_m).astype(int)
        r1 = np.floor((oy - b[:, 1]) / size_m).astype(int)
        for j, g in enumerate(zg):
            i = int(idx[j])
            for col in range(c0[j], c1[j] + 1):
                for row in range(r0[j], r1[j] + 1):
                    bx = (ox + col * size_m, oy - (row + 1) * size_m, ox + (col + 1) * size_m,
                          oy - row * size_m)
                    one = c0[j] == c1[j] and r0[j] == r1[j]
                    piece = g if one else shapely.clip_by_rect(g, *bx)
                    n_cells[i] += not shapely.is_empty(piece)
                    for p in shapely.get_parts(piece):
                        if p.geom_type != "Polygon" or p.area <= 0:
                            continue
                        pb = p.bounds
                        edge = (pb[0] <= bx[0] or pb[1] <= bx[1] or pb[2] >= bx[2]
                                or pb[3] >= bx[3])
                        a = float(p.area)
                        pieces.setdefault((epsg, col, row), []).append({
                            "mean_prob": prob[i], "mean_uncertainty": unc[i],
                            "touches_edge": edge, "area_m2": a, "area_lo_m2": 0.92 * a,
                            "area_hi_m2": 1.08 * a, "res_m": RES, "geometry": p})
        n_zones[idx] += 1
    crossing = {"share_crossing_tile_borders": round(float((n_cells > 1).mean()), 4),
                "share_crossing_zone_borders": round(float((n_zones > 1).mean()), 4),
                "glaciers_crossing_zone_borders": int((n_zones > 1).sum())}
    return pieces, crossing


def write_run(root: Path, tiles: list[TileSpec], ref: gpd.GeoDataFrame, seed: int,
              threads: int = 8) -> dict[str, Any]:
    """Write every planned tile's outlines and item, and the reference; return counts."""
    grid = GridConfig()
    size_m = grid.tile_size_px * grid.resolution
    pieces, crossing = tile_pieces(ref, size_m, seed)
    cells = {(t.epsg, t.col, t.row) for t in tiles}
    outside = set(pieces) - cells  # pixels snapped over a planned tile's edge: still written
    cells |= outside
    store = Store(str(root))
    prov = Provenance(("synthetic",), "synthetic-merge-benchmark")
    when = datetime(2023, 8, 15, tzinfo=UTC)

    def write(cell: tuple[int, int, int]) -> int:
        t = TileSpec(*cell, grid.tile_size_px, grid.resolution, 0)
        rows = pieces.get(cell, [])
        if rows:
            gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=t.crs)
            gdf.insert(0, "tile_id", t.tile_id)
            gdf = gdf[OUTLINE_COLUMNS]
        else:
            gdf = empty_outlines(t.crs)
        write_geoparquet(store, tile_key(t.tile_id, "outlines.parquet"), gdf)
        fp = footprints(t.epsg, [t.col], [t.row], size_m)[0]
        item = tile_item(t.tile_id, crs=t.crs, transform=t.core_transform,
                         shape=(t.size_px, t.size_px), provenance=prov, datetime_=when)
        d = item.to_dict()
        d["geometry"] = shapely.geometry.mapping(fp)
        store.write_bytes_atomic(tile_key(t.tile_id, "item.json"), json.dumps(d).encode())
        return len(rows)

    with ThreadPoolExecutor(threads) as pool:
        n_pieces = sum(pool.map(write, sorted(cells)))
    keep = ref[ref["status"] != "new"].drop(columns=["status", "mapped"])
    keep.to_parquet(root / "reference.parquet", write_covering_bbox=True)
    zones = {c[0] for c in pieces}
    return {"tiles": len(cells), "tiles_planned": len(tiles), "tiles_beyond_plan": len(outside),
            "tiles_with_ice": len(pieces), "pieces": n_pieces, "zones": len(zones)} | crossing


def build(root: Path, data: Path, scale: float, seed: int) -> dict[str, object]:
    """The whole synthetic run under ``root``; returns what was built.

    The glacier points and the tiles are those of the global plan
    (:func:`glacierscale.testing.global_count.global_glacier_points`: the real RGI 7.0 count
    per region, in whole grid cells around each region's reference glaciers, planning to the
    grid's global estimate of ~35,500 tiles). Each glacier gets a log-normal area with its
    region's real mean. ``scale`` < 1 keeps whole regions holding about that share of the points
(drawn with ``seed``), and the tiles they plan.
    """
    from glacierscale.testing.global_count import global_glacier_points

    grid = GridConfig()
    points, _ = global_glacier_points(grid, seed)
    if scale < 1:
        # Whole regions (their tiles as dense as at full scale), drawn until they hold about
        # that share of the glaciers.
        codes = np.random.default_rng(seed).permutation(sorted(points["o1region"].unique()))
        counts = points["o1region"].value_counts()
        take, n = [], 0
        for c in codes:
            if n >= scale * len(points):
                break
            if n + counts[c] <= 1.3 * scale * len(points):
                take.append(c)
                n += int(counts[c])
        points = points[points["o1region"].isin(take)].reset_index(drop=True)
    world = gpd.GeoDataFrame(points.drop(columns=["cenlon", "cenlat"]),
                             geometry=gpd.points_from_xy(points["cenlon"], points["cenlat"]),
                             crs=4326)
    plan = plan_tiles(world, grid)
    tiles = list(plan.tiles)
    assert plan.glaciers is not None
    owner = plan.glaciers.set_index("glacier_id").loc[world["rgi_id"], "tile_id"].to_numpy()
    # The plan reaches buffer + the planned disk's radius around each point.
    home_reach = grid.buffer_m + np.sqrt(points["area_km2"].to_numpy() * 1e6 / math.pi)
    summary = pd.read_csv(data / "global" / "RGI2000-v7.0-G-o1region-summary.csv",
                          dtype={"o1region": str}).set_index("o1region")
    mean = (summary["area_km2"] / summary["count"].clip(lower=1)).reindex(world["o1region"])
    s = 1.5  # log-normal spread, as in grid_plan: most glaciers small, a few ice caps
    world["area_km2"] = np.random.default_rng(seed + 1).lognormal(
        np.log(mean.to_numpy(dtype=float)) - s * s / 2, s)
    planned = len(world)
    world = _fit(world, tiles, owner, home_reach, seed)
    ref = outlines(world, seed)
    info: dict[str, object] = dict(write_run(root, tiles, ref, seed))
    info["glacier_points_planned"] = planned
    info["glaciers"] = int((ref["status"] != "vanished").sum())
    info["reference_glaciers"] = int((ref["status"] != "new").sum())
    info["glacier_km2"] = round(float(world["area_km2"].sum()))
    return info

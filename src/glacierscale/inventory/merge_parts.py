"""The tasks of the cluster merge: each reads a bounded piece of the run and writes its result.

Every row of the merge carries the key it would have in the single-process merge
(:func:`glacierscale.inventory.merge.merge_tiles` over the tiles in the same order): ``key`` =
tile position << 20 | row in the tile. A polygon made by a dissolve carries the key of its
group's first member and its part number, so the cluster merge hands every union its members in
the single-process order and breaks ties of equal-area namesakes the same way: the output is the
single-process output, bit for bit.

Intermediate rows live in *spill* files (plain Parquet: WKB geometry in the row's own CRS, the
attributes and keys) under a scratch prefix of the run's store, so a worker only ever holds the
piece it works on and any worker can read what another wrote.
"""

from __future__ import annotations

import io as _io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from glacierscale.core.zones import central_lon, is_polar, normalize_lon
from glacierscale.inventory.merge import (
    MERGED_COLUMNS,
    _dissolve_keyed,
    _inventory_rows,
    _touch_groups,
)
from glacierscale.inventory.vectorize import OUTLINE_COLUMNS
from glacierscale.io import Store, read_geoparquet, write_geoparquet

ROW_BITS = 20  # rows per tile < 2**20
PART_BITS = 12  # parts of one dissolved group < 2**12
ZONE_SHIFT = 52  # position across zones: zone rank << 52 | pass-1 key
_ATTRS = [c for c in OUTLINE_COLUMNS if c != "geometry"]


def _to_spill(store: Store, key: str, frame: pd.DataFrame, geoms: np.ndarray) -> None:
    df = pd.DataFrame(frame).drop(columns="geometry", errors="ignore")
    df["wkb"] = shapely.to_wkb(geoms)
    buf = _io.BytesIO()
    df.to_parquet(buf, index=False, compression="zstd")
    store.write_bytes_atomic(key, buf.getvalue())


def read_spill(store: Store, key: str) -> pd.DataFrame:
    """A spill file with its geometry decoded into a ``geometry`` column (CRS in ``crs``)."""
    df = pd.read_parquet(_io.BytesIO(store.read_bytes(key)))
    df["geometry"] = shapely.from_wkb(df.pop("wkb").to_numpy())
    return df


@lru_cache(maxsize=64)
def _crs_string(projjson: str) -> str:
    # Parsing a CRS costs ~20 ms; a run has a few dozen distinct ones and tens of thousands of
    # files, so each is parsed once per worker.
    return CRS.from_json(projjson).to_string()


def _read_table(store: Store, key: str) -> tuple[pa.Table, str] | None:
    """A GeoParquet file as an Arrow table (WKB geometry, no bbox column) and its CRS string;
    None for layouts this fast path does not read (then use ``read_geoparquet``)."""
    table = pq.read_table(pa.BufferReader(store.read_bytes(key)))
    geo = json.loads((table.schema.metadata or {}).get(b"geo", b"{}"))
    col = geo.get("primary_column", "geometry")
    meta = geo.get("columns", {}).get(col, {})
    if meta.get("encoding", "WKB").upper() != "WKB" or not meta.get("crs") or col != "geometry":
        return None
    table = table.drop_columns([c for c in ("bbox",) if c in table.column_names])
    return table.replace_schema_metadata(None), _crs_string(json.dumps(meta["crs"]))


def _to_frame(table: pa.Table, crs: str) -> gpd.GeoDataFrame:
    df = table.drop_columns(["geometry"]).to_pandas()
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    return gpd.GeoDataFrame(df, geometry=geoms, crs=crs)


def read_outlines(store: Store, key: str) -> gpd.GeoDataFrame:
    """A GeoParquet file as ``read_geoparquet`` reads it (bbox column dropped), with its CRS
    parsed once per distinct CRS instead of once per file."""
    got = _read_table(store, key)
    return read_geoparquet(store, key) if got is None else _to_frame(*got)


def _frame(rows: pd.DataFrame, crs: str) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows[OUTLINE_COLUMNS].reset_index(drop=True), geometry="geometry",
                            crs=crs)


def _lonlat_bounds(geoms: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-geometry lon/lat bounds as ``to_crs(4326).bounds`` gives them in the merge, and the
    same boxes with the longitudes of antimeridian-crossing geometries kept continuous
    (e.g. 179.9..180.1 instead of -180..180), for finding neighbours."""
    if not len(geoms):
        return np.zeros((0, 4)), np.zeros((0, 4))
    ll = gpd.GeoSeries(geoms, crs=crs).to_crs(4326)
    exact = ll.bounds.to_numpy()
    near = exact.copy()
    epsg = CRS.from_user_input(crs).to_epsg()
    wide = np.flatnonzero(exact[:, 2] - exact[:, 0] > 180.0)
    if len(wide) and epsg is not None and not is_polar(epsg):
        cm = central_lon(epsg)
        for i in wide:
            c = shapely.get_coordinates(ll.iloc[i])
            lon = cm + normalize_lon(c[:, 0] - cm)
            near[i, 0], near[i, 2] = lon.min(), lon.max()
    return exact, near


@dataclass
class Pieces:
    """What a task tells the driver about the rows it wrote: one entry per row."""

    spill: str = ""
    key: list[np.ndarray] = field(default_factory=list)
    crs: list[np.ndarray] = field(default_factory=list)
    edge: list[np.ndarray] = field(default_factory=list)
    bounds_ll: list[np.ndarray] = field(default_factory=list)
    bounds_near: list[np.ndarray] = field(default_factory=list)
    bounds_xy: list[np.ndarray] = field(default_factory=list)
    res: list[np.ndarray] = field(default_factory=list)
    pairs: list[np.ndarray] = field(default_factory=list)
    nonempty: list[tuple[int, str]] = field(default_factory=list)

    def add(self, key: np.ndarray, crs: str, frame: gpd.GeoDataFrame, edge: np.ndarray) -> None:
        n = len(frame)
        self.key.append(key)
        self.crs.append(np.full(n, crs, dtype=object))
        self.edge.append(edge)
        exact, near = _lonlat_bounds(frame.geometry.to_numpy(), crs)
        self.bounds_ll.append(exact)
        self.bounds_near.append(near)
        self.bounds_xy.append(shapely.bounds(frame.geometry.to_numpy()))
        self.res.append(frame["res_m"].to_numpy(dtype=float))

    def arrays(self) -> dict[str, np.ndarray]:
        """Concatenated per-row arrays (empty ones when the task wrote nothing)."""
        def cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: object) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(shape, dtype=dtype)  # type: ignore[call-overload]

        return {"key": cat(self.key, (0,), np.int64), "crs": cat(self.crs, (0,), object),
                "edge": cat(self.edge, (0,), bool), "bounds_ll": cat(self.bounds_ll, (0, 4), float),
                "bounds_near": cat(self.bounds_near, (0, 4), float),
                "bounds_xy": cat(self.bounds_xy, (0, 4), float),
                "res": cat(self.res, (0,), float),
                "pairs": cat(self.pairs, (0, 2), np.int64)}


def read_tiles(store: Store, tiles: Sequence[tuple[int, str]], spill: str) -> Pieces:
    """Read a batch of tiles' outlines, spill them, and find which border polygons touch.

    ``tiles`` are ``(position, tile_id)``. Pairs of border polygons (``touches_edge``) of the
    batch that intersect are exact; border polygons of different batches are paired later.
    """
    out = Pieces(spill=spill)
    by_crs: dict[str, list[pa.Table]] = {}
    for t, tile_id in tiles:
        key = f"tiles/{tile_id}/outlines.parquet"
        got = _read_table(store, key)
        if got is None:  # an unusual file: read it the general way
            f = read_geoparquet(store, key)
            if f.crs is None and len(f):
                raise ValueError(f"{store.url(key)} has no CRS; not a vectorize_tile output")
            got = (pa.Table.from_pandas(pd.DataFrame(f.drop(columns="geometry")).assign(
                geometry=shapely.to_wkb(f.geometry.to_numpy())), preserve_index=False),
                   f.crs.to_string() if f.crs is not None else "")
        table, crs = got
        if not table.num_rows:
            continue
        table = table.select(OUTLINE_COLUMNS).append_column(
            "key", pa.array((np.int64(t) << ROW_BITS)
                            + np.arange(table.num_rows, dtype=np.int64)))
        by_crs.setdefault(crs, []).append(table)
        out.nonempty.append((t, crs))
    if not by_crs:
        return out
    rows, geoms = [], []
    for crs, fs in by_crs.items():
        # One frame (one transformer) per zone: the per-row results are the same.
        f = _to_frame(pa.concat_tables(fs, promote_options="permissive"), crs)
        f["tile_id"] = f["tile_id"].astype(str)
        k = f["key"].to_numpy()
        edge = f["touches_edge"].to_numpy(dtype=bool)
        out.add(k, crs, f, edge)
        g = f.geometry.to_numpy()
        # Exact pairs among the batch's border polygons of this zone (as the merge's pass 1).
        sel = np.flatnonzero(edge)
        if len(sel) > 1:
            a, b = shapely.STRtree(g[sel]).query(g[sel], predicate="intersects")
            m = a < b
            out.pairs.append(np.column_stack([k[sel[a[m]]], k[sel[b[m]]]]))
        df = pd.DataFrame(f.drop(columns="geometry"))
        df["crs"] = crs
        rows.append(df)
        geoms.append(g)
    _to_spill(store, spill, pd.concat(rows, ignore_index=True), np.concatenate(geoms))
    return out


def dissolve_zone_groups(store: Store, sources: dict[str, np.ndarray],
                         components: Sequence[np.ndarray], spill: str) -> Pieces:
    """Pass 1 for components of border polygons of one zone each: exact touch groups,
    dissolved. ``sources`` maps spill files to the keys to take from them."""
    out = Pieces(spill=spill)
    rows = pd.concat([read_spill(store, s).set_index("key").loc[k].reset_index()
                      for s, k in sources.items()], ignore_index=True).set_index("key")
    res_rows, res_geoms = [], []
    members = rows.loc[np.sort(np.concatenate(components))].reset_index()
    # One dissolve per zone for the whole bin: touching polygons never sit in two components,
    # so the touch groups found over the bin are those found component by component, and with
    # the members in key order each group is unioned in the single-process order.
    for crs, sub in members.groupby("crs", sort=False):
        g = _frame(sub, str(crs))
        labels = _touch_groups(g.geometry.to_numpy(), g["touches_edge"].to_numpy(dtype=bool))
        done, first, part = _dissolve_keyed(g, labels)
        if (part >= 1 << PART_BITS).any():
            raise ValueError("a dissolved group split into more than 4096 parts")
        k = (sub["key"].to_numpy()[first] << PART_BITS) | part
        out.add(k, str(crs), done, np.zeros(len(done), bool))
        df = pd.DataFrame(done.drop(columns="geometry"))
        df["key"] = k
        df["crs"] = crs
        res_rows.append(df)
        res_geoms.append(done.geometry.to_numpy())
    if res_rows:
        _to_spill(store, spill, pd.concat(res_rows, ignore_index=True),
                  np.concatenate(res_geoms))
    return out


@dataclass(frozen=True)
class Finish:
    """What the final steps need to know about the whole merge."""

    ea: str  # the equal-area CRS (proj string)
    res: float
    zone_rank: dict[str, int]
    min_area_m2: float
    scratch: str


def _band_of(ids: Sequence[str]) -> np.ndarray:
    """Longitude band (whole degrees east, 0..359) of GLIMS-style ids: their sort prefix."""
    return np.array([int(i[1:4]) for i in ids], dtype=np.int64)


def _finish_rows(store: Store, allg: gpd.GeoDataFrame, key_a: np.ndarray, key_b: np.ndarray,
                 fin: Finish, name: str) -> dict[int, int]:
    """Inventory rows of finished glaciers (in the equal-area CRS), written per longitude band."""
    rows, area, keep = _inventory_rows(allg, fin.min_area_m2)
    if not len(rows):
        return {}
    rows["_area_m2"] = area
    rows["_key_a"] = key_a[keep]
    rows["_key_b"] = key_b[keep]
    band = _band_of(rows["glacier_id"].tolist())
    counts = {}
    for b in np.unique(band).tolist():
        part = rows[band == b]
        write_geoparquet(store, f"{fin.scratch}/band-{b:03d}/{name}.parquet", part)
        counts[int(b)] = len(part)
    return counts


def _in_ea(frames: pd.DataFrame, fin: Finish
           ) -> tuple[gpd.GeoDataFrame, np.ndarray, np.ndarray]:
    """Rows of any zones in the equal-area CRS, with their cross-zone positions and zones."""
    parts, pos, zone = [], [], []
    for crs, sub in frames.groupby("crs", sort=False):
        rank = fin.zone_rank[str(crs)]
        parts.append(_frame(sub, str(crs)).to_crs(fin.ea))
        pos.append((np.int64(rank) << ZONE_SHIFT) + sub["p1"].to_numpy(dtype=np.int64))
        zone.append(np.full(len(sub), rank, dtype=np.int64))
    allg = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry",
                            crs=fin.ea)
    return allg, np.concatenate(pos), np.concatenate(zone)


def finish_rows(store: Store, spill: str, keys: np.ndarray, p1: np.ndarray, fin: Finish,
                name: str) -> dict[int, int]:
    """Finished glaciers that need no cross-zone merge: rows ``keys`` of ``spill`` (with their
    pass-1 positions ``p1``) to inventory rows."""
    if not len(keys):
        return {}
    df = read_spill(store, spill).set_index("key").loc[keys].reset_index()
    df["p1"] = p1
    allg, pos, _ = _in_ea(df, fin)
    return _finish_rows(store, allg, pos, np.zeros(len(pos), np.int64), fin, name)


def dissolve_across_zones(store: Store, sources: dict[str, tuple[np.ndarray, np.ndarray]],
                          components: Sequence[np.ndarray], fin: Finish,
                          name: str) -> dict[int, int]:
    """Pass 2 for components of polygons near other zones' polygons: bring them into the
    equal-area CRS, dissolve those within a pixel of another zone's, finish the rows.

    ``sources`` maps spill files to (keys, pass-1 positions); ``components`` are sets of
    cross-zone positions.
    """
    frames = []
    for s, (k, p1) in sources.items():
        df = read_spill(store, s).set_index("key").loc[k].reset_index()
        df["p1"] = p1
        frames.append(df)
    allg, pos, zone = _in_ea(pd.concat(frames, ignore_index=True), fin)
    order = np.argsort(pos, kind="stable")
    allg, pos, zone = allg.iloc[order].reset_index(drop=True), pos[order], zone[order]
    where = {int(p): i for i, p in enumerate(pos)}
    done_parts, ka, kb = [], [], []
    for comp in components:
        idx = np.sort(np.array([where[int(p)] for p in comp]))
        g = allg.iloc[idx].reset_index(drop=True)
        labels = _touch_groups(g.geometry.to_numpy(), np.ones(len(g), bool),
                               distance=fin.res, other=zone[idx])
        merged, first, part = _dissolve_keyed(g, labels, closing=0.5 * fin.res)
        done_parts.append(merged)
        ka.append(pos[idx][first])
        kb.append(part)
    if not done_parts:
        return {}
    out = gpd.GeoDataFrame(pd.concat(done_parts, ignore_index=True), geometry="geometry",
                           crs=fin.ea)
    return _finish_rows(store, out, np.concatenate(ka), np.concatenate(kb), fin, name)


def finish_band(store: Store, scratch: str, band: int, names: Sequence[str]) -> str:
    """One longitude band of the inventory: namesakes numbered, sorted by id, written."""
    from glacierscale.inventory.merge import suffix_namesakes

    parts = [read_outlines(store, f"{scratch}/band-{band:03d}/{n}.parquet") for n in names]
    rows = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry",
                            crs="EPSG:4326")
    rows["glacier_id"] = suffix_namesakes(rows["glacier_id"].to_numpy(),
                                          rows["_area_m2"].to_numpy(),
                                          rows["_key_b"].to_numpy(), rows["_key_a"].to_numpy())
    rows = rows.sort_values("glacier_id", ignore_index=True)[MERGED_COLUMNS]
    key = f"{scratch}/inventory/band-{band:03d}.parquet"
    write_geoparquet(store, key, gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326"))
    return key

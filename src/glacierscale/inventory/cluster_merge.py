"""The inventory merge on a Dask cluster, equal to the single-process ``merge_tiles``.

dask-geopandas' ``dissolve`` is a tree reduction that ends in one process, so the merge is laid
out by what a polygon can touch instead:

1. Tiles are read in batches (one task each), as Arrow tables with each distinct CRS parsed once
   per worker (parsing a GeoParquet file's CRS costs ~20 ms, more than reading its rows). A
   polygon that does not touch its tile's border is final within its zone; border polygons of a
   batch are paired exactly where they touch.
2. The driver pairs border polygons of different batches by their boxes (a superset of the
   touching pairs), and takes connected components: the groups that cross tile borders.
3. Each component is dissolved in a task, which first finds its exact touch groups, so the
   over-grouping of step 2 only costs time, never changes a polygon (pass 1 of the merge).
4. The equal-area CRS of the merge is fixed from the per-zone bounds (a tiny reduction). Polygons
   whose lon/lat box comes near another zone's polygon (a superset of the pairs within a pixel)
   are grouped and dissolved across zones and projections in tasks (pass 2); all others are
   finished where they lie: area, bounds, GLIMS id, row.
5. Rows go to longitude bands (the sort prefix of the GLIMS ids); each band numbers its
   namesakes and sorts itself, so the bands in order are the inventory in order.

Memory: a task holds one batch of tiles, one bin of components or one band; the driver holds
only per-polygon keys and boxes (and, in ``merge_inventory_on_cluster``, the gathered result).
Intermediate rows are spilled to Parquet under a scratch prefix of the run's store (plain
Parquet: several CRSs per file, read back by key), which any worker can read.

dask-geopandas is not used. Its ``dissolve`` is a tree reduction that ends in one process, and
nothing here is a dataframe operation: the partitions are graph components and longitude bands,
known only once the border polygons are paired, and every task reads exactly the spill files it
was given, by key, with pyarrow. Partitioned GeoParquet would add a spatial shuffle and a
metadata pass without removing any step.

Who calls it: :func:`glacierscale.inventory.build.rebuild_inventory` with a Dask client, which
``glacierscale.run.finalize`` passes when the run has a cluster (the flow keeps its cluster up
for the merge). RGI identity and area change then run on the same cluster
(:mod:`.cluster_rgi`).
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from glacierscale.inventory.merge import MERGED_COLUMNS, _empty_inventory, equal_area_crs
from glacierscale.inventory.merge_parts import (
    PART_BITS,
    ZONE_SHIFT,
    Finish,
    Pieces,
    dissolve_across_zones,
    dissolve_zone_groups,
    finish_band,
    finish_rows,
    read_outlines,
    read_tiles,
)
from glacierscale.io import Store

log = logging.getLogger(__name__)

#: Tiles per read task, and polygons per dissolve task: tasks of ~0.5-5 s at ~3 ms overhead.
TILES_PER_TASK = 256
POLYGONS_PER_TASK = 4000


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label (smallest member index) of ``n`` nodes joined by edges a-b."""
    labels = np.arange(n)
    if not len(a):
        return labels
    while True:
        m = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping: halves the path to the root each round
        if np.array_equal(new, labels):
            return labels
        labels = new


def _groups(labels: np.ndarray) -> list[np.ndarray]:
    """Members (indices) of each component with more than one member, in label order."""
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [g for g in np.split(order, cuts) if len(g) > 1]


def _bins(groups: list[np.ndarray], n_bins: int) -> list[list[np.ndarray]]:
    """Consecutive groups packed into bins of about POLYGONS_PER_TASK members (at least
    ``n_bins`` bins when there is enough work to share)."""
    return pack(groups, n_bins, POLYGONS_PER_TASK)


def pack(groups: list[np.ndarray], n_bins: int, per_bin: int) -> list[list[np.ndarray]]:
    """Consecutive groups packed into bins of about ``per_bin`` members, and into at least
    ``n_bins`` bins when there is enough work to share (a group is never split)."""
    total = sum(len(g) for g in groups)
    cap = max(1, min(per_bin, math.ceil(total / max(n_bins, 1))))
    out: list[list[np.ndarray]] = []
    cur: list[np.ndarray] = []
    size = 0
    for g in groups:
        cur.append(g)
        size += len(g)
        if size >= cap:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def _box_pairs(bounds: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a < b) whose boxes intersect and whose ``other`` labels differ."""
    if len(bounds) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    boxes = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
    a, b = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    m = (a < b) & (other[a] != other[b])
    return a[m], b[m]


def _ea_centre(ea: str) -> tuple[float, float]:
    lat0 = float(re.search(r"\+lat_0=(\S+)", ea).group(1))  # type: ignore[union-attr]
    lon0 = float(re.search(r"\+lon_0=(\S+)", ea).group(1))  # type: ignore[union-attr]
    return lat0, lon0


def _near_boxes(bounds: np.ndarray, ea: str, res: float) -> np.ndarray:
    """Lon/lat boxes grown by more than ``res`` *equal-area* metres can span on the ground.

    The Lambert azimuthal CRS shrinks lengths by down to cos(c/2) at angular distance c from its
    centre, so a pixel there is at most res / cos(c/2) on the ground.
    """
    lat0, lon0 = (math.radians(v) for v in _ea_centre(ea))
    lat = np.radians((bounds[:, 1] + bounds[:, 3]) / 2)
    lon = np.radians((bounds[:, 0] + bounds[:, 2]) / 2)
    cos_c = np.sin(lat0) * np.sin(lat) + np.cos(lat0) * np.cos(lat) * np.cos(lon - lon0)
    k_min = np.maximum(np.sqrt(np.clip((1 + cos_c) / 2, 0, 1)), 0.02)
    d = 2.0 * res / k_min + 50.0
    dlat = d / 110_000.0
    top = np.minimum(np.maximum(np.abs(bounds[:, 1]), np.abs(bounds[:, 3])) + dlat, 89.99)
    dlon = np.minimum(d / (110_000.0 * np.cos(np.radians(top))), 360.0)
    return np.column_stack([bounds[:, 0] - dlon, bounds[:, 1] - dlat, bounds[:, 2] + dlon,
                            bounds[:, 3] + dlat])


def _cross_zone_pairs(bounds: np.ndarray, zone: np.ndarray, ea: str,
                      res: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of polygons of different zones that may lie within a pixel (boxes, wrapped
    around the antimeridian)."""
    grown = _near_boxes(bounds, ea, res)
    idx = np.arange(len(bounds))
    boxes, owner = [grown], [idx]
    for shift, side in ((360.0, grown[:, 0] < -180.0), (-360.0, grown[:, 2] > 180.0)):
        moved = grown[side].copy()
        moved[:, [0, 2]] += shift
        boxes.append(moved)
        owner.append(idx[side])
    allb, own = np.concatenate(boxes), np.concatenate(owner)
    tree = shapely.STRtree(shapely.box(allb[:, 0], allb[:, 1], allb[:, 2], allb[:, 3]))
    plain = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
    a, j = tree.query(plain, predicate="intersects")
    b = own[j]
    m = (a != b) & (zone[a] != zone[b])
    pairs = np.unique(np.column_stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])]), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _per_source(src: np.ndarray, members: np.ndarray, *cols: np.ndarray
                ) -> dict[str, Any]:
    """``{spill: key arrays}`` (or tuples of arrays) of the given member rows."""
    out: dict[str, Any] = {}
    for s in np.unique(src[members]).tolist():
        m = members[src[members] == s]
        out[s] = cols[0][m] if len(cols) == 1 else tuple(c[m] for c in cols)
    return out


def merge_on_cluster(client: Any, store: Store, tile_ids: Sequence[str], *,
                     min_area_m2: float = 5000.0, scratch: str | None = None
                     ) -> list[str]:
    """Merge ``tiles/<id>/outlines.parquet`` of ``tile_ids`` (in the order ``merge_tiles`` would
    get them) on the cluster of ``client``. Returns the keys of the inventory's longitude bands
    in order; together they are ``merge_tiles``' output, row for row."""
    scratch = scratch or f"inventory/.merge-{uuid.uuid4().hex[:12]}"
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    tiles = list(enumerate(tile_ids))
    batches = [tiles[i:i + TILES_PER_TASK] for i in range(0, len(tiles), TILES_PER_TASK)]
    clock = _Clock()
    got: list[Pieces] = client.gather(client.map(
        read_tiles, [store] * len(batches), batches,
        [f"{scratch}/tiles-{i:05d}.parquet" for i in range(len(batches))], pure=False))
    first_t: dict[str, int] = {}
    for p in got:
        for t, crs in p.nonempty:
            first_t[crs] = min(first_t.get(crs, t), t)
    zones = {crs: i for i, crs in enumerate(sorted(first_t, key=first_t.__getitem__))}
    if not zones:
        return []  # merge_tiles' zone order (above) is the order of first appearance
    read = _table(got, zones, dissolved=False)
    groups = _zone_groups(read, got)
    clock.lap("read tiles")
    bins = _bins(groups, 2 * n_workers)
    d_got: list[Pieces] = client.gather(client.map(
        dissolve_zone_groups, [store] * len(bins),
        [_per_source(read["src"], np.concatenate(bn), read["key"]) for bn in bins],
        [[read["key"][g] for g in bn] for bn in bins],
        [f"{scratch}/zone-groups-{i:05d}.parquet" for i in range(len(bins))], pure=False))
    clock.lap("dissolve border groups")
    # Pass-1 outputs: interiors and lone border polygons where they were read, dissolved groups.
    grouped = np.zeros(len(read["key"]), bool)
    for g in groups:
        grouped[g] = True
    dissolved = _table(d_got, zones, dissolved=True)
    out = {k: np.concatenate([read[k][~grouped], dissolved[k]]) for k in read}
    zb = [(float(np.nanmin(out["bounds_ll"][out["zone"] == z, 0])),
           float(np.nanmin(out["bounds_ll"][out["zone"] == z, 1])),
           float(np.nanmax(out["bounds_ll"][out["zone"] == z, 2])),
           float(np.nanmax(out["bounds_ll"][out["zone"] == z, 3]))) for z in range(len(zones))]
    fin = Finish(ea=equal_area_crs(zb).srs, res=float(np.nanmax(out["res"])), zone_rank=zones,
                 min_area_m2=min_area_m2, scratch=scratch)
    cross: list[np.ndarray] = []
    if len(zones) > 1:
        ca, cb = _cross_zone_pairs(out["bounds_near"], out["zone"], fin.ea, fin.res)
        cross = _groups(components(len(out["key"]), ca, cb))
    in_cross = np.zeros(len(out["key"]), bool)
    for g in cross:
        in_cross[g] = True
    jobs: list[tuple[str, Any]] = []
    rest = np.flatnonzero(~in_cross)
    for i, (s, (k, p1)) in enumerate(_per_source(out["src"], rest, out["key"],
                                                 out["p1"]).items()):
        name = f"f{i:05d}"
        jobs.append((name, client.submit(finish_rows, store, s, k, p1, fin, name, pure=False)))
    pos = (out["zone"] << ZONE_SHIFT) + out["p1"]
    for i, bn in enumerate(_bins(cross, 2 * n_workers)):
        name = f"x{i:05d}"
        sources = _per_source(out["src"], np.concatenate(bn), out["key"], out["p1"])
        jobs.append((name, client.submit(dissolve_across_zones, store, sources,
                                         [pos[g] for g in bn], fin, name, pure=False)))
    clock.lap("plan cross-zone groups")
    names: dict[int, list[str]] = {}
    for (name, _), counts in zip(jobs, client.gather([j for _, j in jobs]), strict=True):
        for band in counts:
            names.setdefault(band, []).append(name)
    bands = sorted(names)
    clock.lap("finish rows")
    log.info("merged %d polygons: %d border groups, %d cross-zone groups, %d bands",
             len(read["key"]), len(groups), len(cross), len(bands))
    done = list(client.gather(client.map(finish_band, [store] * len(bands),
                                         [scratch] * len(bands), bands,
                                         [names[b] for b in bands], pure=False)))
    clock.lap("bands")
    return done


def _table(pieces: list[Pieces], zones: dict[str, int], *, dissolved: bool
           ) -> dict[str, np.ndarray]:
    """One array per field over all rows the tasks wrote, with their spill file (``src``), zone
    rank and pass-1 position (``p1``: a read row is its own group, part 0)."""
    cols = [p.arrays() for p in pieces]
    t = {k: np.concatenate([c[k] for c in cols]) for k in cols[0] if k != "pairs"} if cols \
        else Pieces().arrays()
    t.pop("pairs", None)
    t["src"] = np.concatenate([np.full(len(c["key"]), p.spill, dtype=object)
                               for p, c in zip(pieces, cols, strict=True)]) if cols \
        else np.zeros(0, dtype=object)
    t["zone"] = np.array([zones[c] for c in t["crs"]], dtype=np.int64)
    t["p1"] = t["key"] if dissolved else t["key"] << PART_BITS
    return t


def _zone_groups(read: dict[str, np.ndarray], pieces: list[Pieces]) -> list[np.ndarray]:
    """Rows (indices into ``read``) of each component of border polygons that may touch:
    exact pairs found inside batches, box pairs between batches of the same zone."""
    e_idx = np.flatnonzero(read["edge"])
    pos_of = {int(k): i for i, k in enumerate(read["key"][e_idx])}
    inside = np.concatenate([p.arrays()["pairs"] for p in pieces])
    a = np.array([pos_of[int(k)] for k in inside[:, 0]], dtype=np.int64)
    b = np.array([pos_of[int(k)] for k in inside[:, 1]], dtype=np.int64)
    batch = np.unique(read["src"][e_idx], return_inverse=True)[1]
    zone = read["zone"][e_idx]
    for z in np.unique(zone).tolist():
        sel = np.flatnonzero(zone == z)
        pa, pb = _box_pairs(read["bounds_xy"][e_idx[sel]], batch[sel])
        a, b = np.concatenate([a, sel[pa]]), np.concatenate([b, sel[pb]])
    return [e_idx[g] for g in _groups(components(len(e_idx), a, b))]


class _Clock:
    """Logs the seconds each stage of the merge took."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        log.info("cluster merge: %s %.1f s", what, now - self.t)
        self.t = now


def write_bands(store: Store, band_keys: Sequence[str], key: str) -> str:
    """Concatenate band files (GeoParquet, in order) into one GeoParquet at ``key``, one band
    in memory at a time. The file's metadata is the first band's, without its bounding box
    (which covered that band only)."""
    import json
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="glacierscale-inventory-") as tmp:
        local = Path(tmp) / "glaciers.parquet"
        writer: pq.ParquetWriter | None = None
        schema = None
        for k in band_keys:
            table = pq.read_table(pa.BufferReader(store.read_bytes(k)))
            if writer is None:
                geo = json.loads(table.schema.metadata[b"geo"])
                geo["columns"]["geometry"].pop("bbox", None)
                geo["columns"]["geometry"]["geometry_types"] = []  # any
                schema = table.schema.with_metadata({**table.schema.metadata,
                                                     b"geo": json.dumps(geo).encode()})
                writer = pq.ParquetWriter(local, schema, compression="zstd")
            writer.write_table(table.cast(schema))
        if writer is None:
            raise ValueError("no bands to write")
        writer.close()
        return store.put_file_atomic(local, key)


def clean_scratch(store: Store, scratch: str) -> None:
    """Delete the merge's intermediate files."""
    for key in store.list(scratch + "/"):
        store.delete(key)


def merge_inventory_on_cluster(client: Any, store: Store, tile_ids: Sequence[str], *,
                               min_area_m2: float = 5000.0) -> gpd.GeoDataFrame:
    """``merge_tiles`` of the tiles' outlines, done on the cluster of ``client``: the same
    GeoDataFrame (EPSG:4326, ``MERGED_COLUMNS``), gathered on the caller at the end.

    ``tile_ids`` are the tiles whose ``tiles/<id>/outlines.parquet`` to merge, in the order
    ``merge_tiles`` would get their frames (``rebuild_inventory``: sorted).
    """
    scratch = f"inventory/.merge-{uuid.uuid4().hex[:12]}"
    try:
        bands = merge_on_cluster(client, store, tile_ids, min_area_m2=min_area_m2,
                                 scratch=scratch)
        if not bands:
            return _empty_inventory()
        parts = [read_outlines(store, k) for k in bands]
        return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry",
                                crs="EPSG:4326")[MERGED_COLUMNS]
    finally:
        clean_scratch(store, scratch)

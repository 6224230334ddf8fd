"""Which tiles a set of glaciers needs, and which tile owns each glacier.

* Ownership: a glacier belongs to the one tile whose core contains its representative point (a
  point guaranteed inside the outline). It is a pure function of that point, so the answer never
  depends on the order of the input or on other glaciers.
* Coverage: a tile is needed when its core comes within ``reach`` metres of a glacier (the outline
  buffered by the planning buffer; for a centroid table, a disk of the glacier's area plus the
  buffer). Glaciers across zone borders, the antimeridian or 84N/80S reach tiles of every zone they
  touch; ice caps reach as many tiles as they cover.

Everything is vectorised with numpy, pyproj and shapely 2 array operations: the only Python loops
run over zones (at most 122) and over the few cells cut by a zone border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from glacierscale.core.footprint import bbox_polygon, polygonal
from glacierscale.core.grid import (
    Cells,
    cell_key,
    core_polygons,
    footprints,
    owner_cells,
    projected,
    split_key,
)
from glacierscale.core.tiles import grid_origin
from glacierscale.core.zones import (
    NORTH_POLAR,
    SOUTH_POLAR,
    UTM_NORTH_LIMIT,
    UTM_SOUTH_LIMIT,
    lon_zone_index,
    to_projected,
    zone_bounds,
    zones_touching,
)

#: Conservative metres per degree (a little less than the true minimum) for degree margins.
_M_PER_DEG = 110_000.0
#: Refuse boxes that would need more cells than this: a box is for a valley or a region.
MAX_BBOX_CELLS = 250_000


@dataclass(frozen=True)
class GridCover:
    """Tiles needed by a set of glaciers and how glaciers map onto them."""

    cells: Cells  #: every needed tile, sorted
    owner: NDArray[np.int64]  #: per glacier, position in ``cells`` of the tile that owns it
    pair_glacier: NDArray[np.int64]  #: glacier ``pair_glacier[k]`` reaches ...
    pair_cell: NDArray[np.int64]  #: ... the tile at position ``pair_cell[k]`` (sorted, unique)


def _expand(counts: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For ``counts`` per item: the item index and the 0..count-1 offset of every expanded row."""
    item = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    return item, np.arange(item.size, dtype=np.int64) - np.repeat(starts, counts)


def _candidate_zones(w: NDArray[np.float64], s: NDArray[np.float64], e: NDArray[np.float64],
                     n: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(item, epsg)`` for every zone whose lon/lat box touches each item's box (vectorised)."""
    z0 = lon_zone_index(w)
    nz = np.minimum(lon_zone_index(e) - z0 + 1, 60)
    items, epsgs = [], []
    for base, flag in ((32600, (n >= 0.0) & (s < UTM_NORTH_LIMIT)),
                       (32700, (s < 0.0) & (n >= UTM_SOUTH_LIMIT))):
        idx = np.flatnonzero(flag)
        k, off = _expand(nz[idx])
        items.append(idx[k])
        epsgs.append(base + (z0[idx][k] + off) % 60 + 1)
    for epsg, flag in ((NORTH_POLAR, n >= UTM_NORTH_LIMIT), (SOUTH_POLAR, s < UTM_SOUTH_LIMIT)):
        idx = np.flatnonzero(flag)
        items.append(idx)
        epsgs.append(np.full(idx.size, epsg, dtype=np.int64))
    return np.concatenate(items), np.concatenate(epsgs)


def _degree_boxes(bounds: NDArray[np.float64], reach: NDArray[np.float64]
                  ) -> tuple[NDArray[np.float64], ...]:
    """Lon/lat boxes grown by ``reach`` metres, generously (never smaller than the true reach)."""
    dlat = reach / _M_PER_DEG
    s = np.maximum(bounds[:, 1] - dlat, -90.0)
    n = np.minimum(bounds[:, 3] + dlat, 90.0)
    cos = np.cos(np.radians(np.maximum(np.abs(s), np.abs(n))))
    near_pole = cos < 1e-3
    dlon = np.where(near_pole, 360.0, reach / (_M_PER_DEG * np.maximum(cos, 1e-3)))
    w = np.where(near_pole, -180.0, bounds[:, 0] - dlon)
    e = np.where(near_pole, 180.0, bounds[:, 2] + dlon)
    return w, s, np.minimum(e, w + 359.999), n


def cover_glaciers(
    rep_lon: ArrayLike, rep_lat: ArrayLike, reach_m: ArrayLike, size_m: float,
    geoms: NDArray[np.object_] | None = None,
) -> GridCover:
    """Plan the cells for glaciers given by representative points and, optionally, outlines.

    ``geoms`` are lon/lat outlines with continuous longitudes (a glacier across the antimeridian
    may run past 180); without them each glacier is its point grown by ``reach_m``. ``reach_m``
    is per glacier (or one value) in metres.
    """
    lon = np.atleast_1d(np.asarray(rep_lon, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(rep_lat, dtype=np.float64))
    reach = np.broadcast_to(np.asarray(reach_m, dtype=np.float64), lon.shape).copy()
    if lon.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return GridCover(Cells(empty, empty, empty), empty, empty, empty)
    if np.any(reach < 0) or not np.all(np.isfinite(reach)):
        raise ValueError("reach_m must be finite and >= 0 metres")
    oe, oc, orow = owner_cells(lon, lat, size_m)
    owner_keys = cell_key(oe, oc, orow)
    bounds = np.column_stack([lon, lat, lon, lat]) if geoms is None else shapely.bounds(geoms)
    item, zone = _candidate_zones(*_degree_boxes(bounds, reach))
    order = np.argsort(zone, kind="stable")
    item, zone = item[order], zone[order]
    cuts = np.flatnonzero(np.diff(zone)) + 1
    pair_g: list[NDArray[np.int64]] = [np.arange(lon.size, dtype=np.int64)]
    pair_k: list[NDArray[np.int64]] = [owner_keys]
    for gi, ze in zip(np.split(item, cuts), np.split(zone, cuts), strict=True):
        g, k = _cover_zone(int(ze[0]), gi, lon, lat, reach, size_m, geoms)
        pair_g.append(g)
        pair_k.append(k)
    g_all = np.concatenate(pair_g)
    k_all = np.concatenate(pair_k)
    cells = Cells.from_keys(k_all)
    c_all = cells.index_of(k_all)
    # unique (glacier, cell) pairs, sorted by glacier then cell
    pk = np.unique(g_all * len(cells) + c_all)
    return GridCover(cells, cells.index_of(owner_keys), pk // len(cells), pk % len(cells))


def _cover_zone(
    epsg: int, gi: NDArray[np.int64], lon: NDArray[np.float64], lat: NDArray[np.float64],
    reach: NDArray[np.float64], size_m: float, geoms: NDArray[np.object_] | None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(glacier, cell key)`` pairs of one zone for the candidate glaciers ``gi``."""
    r = reach[gi]
    if geoms is None:
        x, y = projected(epsg, lon[gi], lat[gi])
        pgeoms = shapely.points(x, y)
        b = np.column_stack([x, y, x, y])
    else:
        tr = to_projected(epsg)

        def fwd(c: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.column_stack(tr.transform(c[:, 0], c[:, 1]))

        pgeoms = shapely.transform(geoms[gi], fwd)
        b = shapely.bounds(pgeoms)
    ok = np.all(np.isfinite(b), axis=1)  # a far-away outline may not project; it cannot reach
    gi, r, pgeoms, b = gi[ok], r[ok], pgeoms[ok], b[ok]
    ox, oy = grid_origin(epsg)
    c0 = np.floor((b[:, 0] - r - ox) / size_m).astype(np.int64)
    c1 = np.floor((b[:, 2] + r - ox) / size_m).astype(np.int64)
    r0 = np.floor((oy - b[:, 3] - r) / size_m).astype(np.int64)
    r1 = np.floor((oy - b[:, 1] + r) / size_m).astype(np.int64)
    ncol = c1 - c0 + 1
    k, off = _expand(ncol * (r1 - r0 + 1))
    col = c0[k] + off % ncol[k]
    row = r0[k] + off // ncol[k]
    keys = cell_key(epsg, col, row)
    ukeys, inv = np.unique(keys, return_inverse=True)
    _, ucol, urow = split_key(ukeys)
    cores = core_polygons(epsg, ucol, urow, size_m)
    nonempty = ~shapely.is_empty(cores)
    keep = nonempty[inv]
    k, inv = k[keep], inv[keep]
    hit = shapely.dwithin(pgeoms[k], cores[inv], r[k])
    return gi[k[hit]], ukeys[inv[hit]]


def cells_in_bbox(bbox: tuple[float, float, float, float], size_m: float) -> Cells:
    """Cells whose cores overlap a W,S,E,N box in degrees (``W > E`` crosses the antimeridian)."""
    area = bbox_polygon(bbox)
    # First the candidate cell ranges of every zone, so an oversized box fails before any work.
    ranges = []
    for epsg in zones_touching(bbox):
        part = polygonal(area.intersection(shapely.box(*zone_bounds(epsg))))
        if part.is_empty:
            continue
        ring = shapely.get_coordinates(shapely.segmentize(part, 0.01))
        x, y = projected(epsg, ring[:, 0], ring[:, 1])
        ox, oy = grid_origin(epsg)
        c0, c1 = (int(np.floor((v - ox) / size_m)) for v in (x.min(), x.max()))
        r0, r1 = (int(np.floor((oy - v) / size_m)) for v in (y.max(), y.min()))
        ranges.append((epsg, part, c0, c1, r0, r1))
    total = sum((c1 - c0 + 1) * (r1 - r0 + 1) for _, _, c0, c1, r0, r1 in ranges)
    if total > MAX_BBOX_CELLS:
        raise ValueError(
            f"bbox {bbox} needs {total} candidate tiles (more than {MAX_BBOX_CELLS}); plan large "
            "areas from glacier outlines or a centroid table (--outlines) instead of a box")
    keys: list[NDArray[np.int64]] = []
    for epsg, part, c0, c1, r0, r1 in ranges:
        gc, gr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
        cols, rows = gc.ravel(), gr.ravel()
        fps = footprints(epsg, cols, rows, size_m)
        hit = shapely.intersects(fps, part) & ~shapely.touches(fps, part) & ~shapely.is_empty(fps)
        keys.append(cell_key(epsg, cols[hit], rows[hit]))
    return Cells.from_keys(np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64))

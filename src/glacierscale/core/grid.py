"""The global tile grid: sets of cells, their clipped cores, footprints, masks and GeoBoxes.

A *cell* ``(epsg, col, row)`` is one square of the fixed grid of a zone (:mod:`.zones`,
:mod:`.tiles`). Its *core* is the part of the square that lies in the zone, so the cores of all
zones tile the Earth without overlap: inside a zone, cells are disjoint squares; across a zone
border (a meridian, or the 84N/80S parallels) each side keeps only its own ground. Which cells a set
of glaciers needs is decided in :mod:`.cover`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from odc.geo.geobox import GeoBox
from odc.geo.gridspec import GridSpec
from odc.geo.types import xy_
from shapely.geometry import box

from glacierscale.core.footprint import polygonal, rings_to_lonlat, unwrap_lon
from glacierscale.core.tiles import TileSpec, grid_origin
from glacierscale.core.zones import (
    areal_scale,
    central_lon,
    is_polar,
    normalize_lon,
    polar_radius,
    to_lonlat,
    to_projected,
    zone_bounds,
    zone_clip_polygon,
    zone_epsg,
)

#: Vertices per cell edge when a cell is drawn in lon/lat. A power of two, so the fractions along
#: an edge are exact in binary and neighbouring cells produce bit-identical shared edges.
RING_POINTS_PER_EDGE = 8
_OFF = 1 << 20  # cell indices are offset into a positive range before packing into one int64 key


def cell_key(epsg: ArrayLike, col: ArrayLike, row: ArrayLike) -> NDArray[np.int64]:
    """One sortable int64 per cell, ordered by (epsg, row, col): zone by zone, north to south."""
    e = np.asarray(epsg, dtype=np.int64)
    c = np.asarray(col, dtype=np.int64) + _OFF
    r = np.asarray(row, dtype=np.int64) + _OFF
    return (e << 42) | (r << 21) | c


def split_key(key: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Inverse of :func:`cell_key`: ``(epsg, col, row)`` arrays."""
    k = np.asarray(key, dtype=np.int64)
    mask = (1 << 21) - 1
    return k >> 42, (k & mask) - _OFF, ((k >> 21) & mask) - _OFF


@dataclass(frozen=True)
class Cells:
    """A set of grid cells as parallel arrays, unique and sorted by :func:`cell_key`."""

    epsg: NDArray[np.int64]
    col: NDArray[np.int64]
    row: NDArray[np.int64]

    @classmethod
    def from_keys(cls, keys: ArrayLike) -> Cells:
        """Cells from packed keys (duplicates dropped, deterministic order)."""
        e, c, r = split_key(np.unique(np.asarray(keys, dtype=np.int64)))
        return cls(e, c, r)

    @classmethod
    def from_arrays(cls, epsg: ArrayLike, col: ArrayLike, row: ArrayLike) -> Cells:
        return cls.from_keys(cell_key(epsg, col, row))

    @property
    def keys(self) -> NDArray[np.int64]:
        return cell_key(self.epsg, self.col, self.row)

    def __len__(self) -> int:
        return int(self.epsg.size)

    def index_of(self, keys: ArrayLike) -> NDArray[np.int64]:
        """Positions of the given cell keys in this set (they must be members)."""
        k = np.asarray(keys, dtype=np.int64)
        idx = np.searchsorted(self.keys, k)
        if k.size and (np.any(idx >= len(self)) or np.any(self.keys[np.minimum(idx, len(self) - 1)]
                                                          != k)):
            raise KeyError("some cells are not in this set")
        return idx.astype(np.int64)

    def ids(self) -> list[str]:
        """Tile ids, in the same order (see :attr:`TileSpec.tile_id`)."""
        return [f"{e}_{c:04d}_{r:04d}" for e, c, r in zip(self.epsg.tolist(), self.col.tolist(),
                                                          self.row.tolist(), strict=True)]

    def tiles(self, size_px: int, resolution: float, halo_px: int) -> list[TileSpec]:
        return [TileSpec(e, c, r, size_px, resolution, halo_px)
                for e, c, r in zip(self.epsg.tolist(), self.col.tolist(), self.row.tolist(),
                                   strict=True)]

    def by_zone(self) -> Iterator[tuple[int, NDArray[np.int64]]]:
        """``(epsg, positions)`` for each zone present, in order."""
        for e in np.unique(self.epsg).tolist():
            yield int(e), np.flatnonzero(self.epsg == e)


def owner_cells(
    lon: ArrayLike, lat: ArrayLike, size_m: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """``(epsg, col, row)`` of the cell whose core contains each lon/lat point (vectorised).

    The zone comes from the point's lon/lat alone (:func:`.zones.zone_epsg`), the cell from the
    point projected into that zone; so every point on Earth is owned by exactly one core.
    """
    lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    lat_a = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    epsg = zone_epsg(lon_a, lat_a)
    col = np.zeros(epsg.shape, dtype=np.int64)
    row = np.zeros(epsg.shape, dtype=np.int64)
    for e in np.unique(epsg).tolist():
        m = epsg == e
        x, y = projected(int(e), lon_a[m], lat_a[m])
        ox, oy = grid_origin(int(e))
        col[m] = np.floor((x - ox) / size_m).astype(np.int64)
        row[m] = np.floor((oy - y) / size_m).astype(np.int64)
    return epsg, col, row


def projected(epsg: int, lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """Lon/lat to the zone CRS as float64 arrays."""
    x, y = to_projected(epsg).transform(np.asarray(lon, dtype=np.float64),
                                        np.asarray(lat, dtype=np.float64))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def tile_at(lon: float, lat: float, size_px: int = 1024, resolution: float = 10.0,
            halo_px: int = 64) -> TileSpec:
    """The tile whose core contains a lon/lat point."""
    e, c, r = owner_cells([lon], [lat], size_px * resolution)
    return TileSpec(int(e[0]), int(c[0]), int(r[0]), size_px, resolution, halo_px)


def cell_rings(
    epsg: int, col: ArrayLike, row: ArrayLike, size_m: float, halo_m: float = 0.0,
    per_edge: int = RING_POINTS_PER_EDGE,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Closed rings (``(n, 4 * per_edge + 1)`` x and y arrays) around cells, in the zone CRS.

    Positions are computed from integer cell indices plus exact binary fractions, so the edge two
    neighbouring cells share has bit-identical vertices in both rings.
    """
    c = np.asarray(col, dtype=np.float64)[:, None]
    r = np.asarray(row, dtype=np.float64)[:, None]
    t = np.arange(per_edge, dtype=np.float64) / per_edge
    h = halo_m / size_m
    lo, span = -h, 1.0 + 2.0 * h
    one = np.ones_like(t)
    # top (west->east), east (north->south), bottom (east->west), west (south->north), close
    u = np.concatenate([lo + t * span, (lo + span) * one, lo + span - t * span, lo * one, [lo]])
    v = np.concatenate([lo * one, lo + t * span, (lo + span) * one, lo + span - t * span, [lo]])
    ox, oy = grid_origin(epsg)
    return ox + (c + u) * size_m, oy - (r + v) * size_m


def _ring_lonlat(epsg: int, x: NDArray[np.float64], y: NDArray[np.float64]
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lon, lat = to_lonlat(epsg).transform(x.ravel(), y.ravel())
    return np.asarray(lon).reshape(x.shape), np.asarray(lat).reshape(x.shape)


def footprints(
    epsg: int, col: ArrayLike, row: ArrayLike, size_m: float, *, halo_m: float = 0.0,
    clip: bool = True,
) -> NDArray[np.object_]:
    """EPSG:4326 (multi)polygons of cells of one zone, split at the antimeridian.

    ``clip=True`` gives the core footprint: the cell cut to its zone's lon/lat box, so footprints
    of neighbouring zones meet exactly on the border. ``clip=False`` (with ``halo_m``) gives the
    area a tile reads. A cell with no ground in its zone gives an empty polygon.
    """
    col_a = np.atleast_1d(np.asarray(col))
    if col_a.size == 0:
        return np.empty(0, dtype=object)
    x, y = cell_rings(epsg, col_a, np.atleast_1d(np.asarray(row)), size_m, halo_m)
    lon, lat = _ring_lonlat(epsg, x, y)
    geoms = rings_to_lonlat(lon, lat, central_lon(epsg))
    if not clip:
        return geoms
    zbox = box(*zone_bounds(epsg))
    outside = ~shapely.covers(zbox, geoms)
    for i in np.flatnonzero(outside):
        geoms[i] = polygonal(shapely.intersection(geoms[i], zbox))
    return geoms


def _inside_zone(epsg: int, col: NDArray[np.int64], row: NDArray[np.int64], size_m: float
                 ) -> NDArray[np.bool_]:
    """True where the whole cell lies in its zone (no clipping needed)."""
    x, y = cell_rings(epsg, col, row, size_m)
    if is_polar(epsg):
        # A disk is convex: the square is inside iff its corners are.
        return np.all(np.hypot(x, y) < polar_radius(epsg), axis=1)
    lon, lat = _ring_lonlat(epsg, x, y)
    cm = central_lon(epsg)
    lon = cm + normalize_lon(lon - cm)
    w, s, e, n = zone_bounds(epsg)
    return np.all((lon >= w) & (lon <= e) & (lat >= s) & (lat <= n), axis=1)


def core_polygons(epsg: int, col: ArrayLike, row: ArrayLike, size_m: float) -> NDArray[np.object_]:
    """Cores of cells of one zone, in the zone CRS: squares, cut to the zone where they cross it.

    Empty polygons mark cells with no ground in the zone (never tiles of the grid).
    """
    col_a = np.atleast_1d(np.asarray(col, dtype=np.int64))
    row_a = np.atleast_1d(np.asarray(row, dtype=np.int64))
    ox, oy = grid_origin(epsg)
    cores = shapely.box(ox + col_a * size_m, oy - (row_a + 1) * size_m,
                        ox + (col_a + 1) * size_m, oy - row_a * size_m)
    if cores.size == 0:
        return cores
    partial = np.flatnonzero(~_inside_zone(epsg, col_a, row_a, size_m))
    if is_polar(epsg) and partial.size:
        disk = zone_clip_polygon(epsg, (0.0, 0.0, 0.0, 0.0))
        cores[partial] = shapely.intersection(cores[partial], disk)
    else:
        for i in partial.tolist():
            clip = zone_clip_polygon(epsg, cores[i].bounds)
            cores[i] = polygonal(shapely.intersection(cores[i], clip))
    return cores


def ground_area_km2(epsg: int, polys: NDArray[np.object_]) -> NDArray[np.float64]:
    """Area on the ground (km²) of projected polygons of one zone (local scale-factor corrected)."""
    if polys.size == 0:
        return np.zeros(0)
    area = shapely.area(polys)
    out = np.zeros(polys.size)
    ok = area > 0
    if ok.any():
        c = shapely.get_coordinates(shapely.centroid(polys[ok]))
        lon, lat = to_lonlat(epsg).transform(c[:, 0], c[:, 1])
        out[ok] = area[ok] / areal_scale(epsg, lon, lat) / 1e6
    return out


def core_mask(tile: TileSpec) -> NDArray[np.bool_]:
    """Pixels of the tile core (``size_px`` square) whose centres lie in the tile's zone.

    Away from zone borders all are True; along a border the other zone's tile owns the rest, so
    vectorizing only ``core_mask`` pixels never counts ground twice.
    """
    n = tile.size_px
    if _inside_zone(tile.epsg, np.array([tile.col]), np.array([tile.row]), tile.size_m)[0]:
        return np.ones((n, n), dtype=bool)
    minx, _, _, maxy = tile.core_bounds
    centres = (np.arange(n, dtype=np.float64) + 0.5) * tile.resolution
    gx, gy = np.meshgrid(minx + centres, maxy - centres)
    lon, lat = to_lonlat(tile.epsg).transform(gx.ravel(), gy.ravel())
    return np.asarray(zone_epsg(lon, lat) == tile.epsg).reshape(n, n)


def tile_geobox(tile: TileSpec, halo: bool = True) -> GeoBox:
    """The odc-geo GeoBox a tile reads (with halo) or owns (``halo=False``)."""
    if halo:
        return GeoBox(tile.shape, tile.transform, tile.crs)
    return GeoBox((tile.size_px, tile.size_px), tile.core_transform, tile.crs)


def tile_from_geobox(gbox: GeoBox, halo_px: int = 64) -> TileSpec:
    """The tile whose halo'd grid is ``gbox``; raises if the GeoBox is not a cell of the grid."""
    epsg = gbox.crs.epsg if gbox.crs is not None else None
    a = gbox.affine
    res = float(a.a)
    if epsg is None or a.b != 0 or a.d != 0 or a.e != -res or gbox.shape[0] != gbox.shape[1]:
        raise ValueError(f"{gbox!r} is not a north-up square tile grid in an EPSG CRS")
    size_px = int(gbox.shape[0]) - 2 * halo_px
    ox, oy = grid_origin(int(epsg))
    size_m = size_px * res
    col_f = (a.c + halo_px * res - ox) / size_m
    row_f = (oy - (a.f - halo_px * res)) / size_m
    col, row = round(col_f), round(row_f)
    if abs(col_f - col) > 1e-9 or abs(row_f - row) > 1e-9:
        raise ValueError(f"{gbox!r} is not aligned to the EPSG:{epsg} tile grid "
                         f"(halo {halo_px} px); check size, resolution and halo")
    return TileSpec(int(epsg), col, row, size_px, res, halo_px)


def grid_spec(epsg: int, size_px: int = 1024, resolution: float = 10.0) -> GridSpec:
    """The zone's tile grid as an odc-geo GridSpec: ``gs.tile_geobox((col, row))`` is the core."""
    ox, oy = grid_origin(epsg)
    # odc-geo puts the *lower* edge of row 0 at the origin when rows grow downwards (flipy).
    return GridSpec(f"EPSG:{epsg}", (size_px, size_px), resolution,
                    origin=xy_(ox, oy - size_px * resolution), flipy=True)


# Points per tile edge (both corners included) when a tile's lon/lat box is found.
_BBOX_POINTS_PER_EDGE = 21


def _tile_edges_lonlat(tile: TileSpec) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lon/lat of the densified edges of the tile with its halo, in ring order (closed).

    The edges are densified because a projected square is a curved shape in lon/lat: its corners
    alone would miss the bulge of its edges.
    """
    minx, miny, maxx, maxy = tile.bounds
    t = np.linspace(0.0, 1.0, _BBOX_POINTS_PER_EDGE)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full_like(t, maxx),
                         maxx - (maxx - minx) * t, np.full_like(t, minx)])
    ys = np.concatenate([np.full_like(t, miny), miny + (maxy - miny) * t,
                         np.full_like(t, maxy), maxy - (maxy - miny) * t])
    lon, lat = to_lonlat(tile.epsg).transform(xs, ys)
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def _pole_in_tile(tile: TileSpec) -> float | None:
    """Latitude (90 or -90) of a pole inside the tile with its halo (edges included), else None.

    Decided in the tile CRS, where it is an exact point-in-square test; in lon/lat a pole is
    only visible as a ring whose longitudes wind once around the globe.
    """
    minx, miny, maxx, maxy = tile.bounds
    for pole in (90.0, -90.0):
        x, y = to_projected(tile.epsg).transform(0.0, pole)
        if np.isfinite(x) and np.isfinite(y) and minx <= x <= maxx and miny <= y <= maxy:
            return pole
    return None


def tile_bbox_lonlat(tile: TileSpec) -> tuple[float, float, float, float]:
    """Lon/lat box (W, S, E, N) of the tile with its halo, for catalog searches.

    A tile that straddles the antimeridian (UTM zones 1 and 60, polar tiles) gets ``W > E``, the
    RFC 7946 / STAC convention, e.g. ``(179.2, 60.1, -179.5, 60.9)``: a ``-180..180`` box would
    make a catalog search return scenes from the whole latitude band. The catalog sources search
    such a box as two boxes (:func:`glacierscale.catalog.split_bbox`). A tile containing a pole
    gets all longitudes and reaches the pole's latitude.
    """
    lon, lat = _tile_edges_lonlat(tile)
    south, north = float(np.min(lat)), float(np.max(lat))
    pole = _pole_in_tile(tile)
    if pole is not None:
        # Around a pole the ring winds through all longitudes and no W..E interval describes it.
        return (-180.0, min(south, pole), 180.0, max(north, pole))
    # Continuous longitudes along the ring: a crossing of ±180 becomes e.g. 179.8 -> 180.3.
    lon_u = unwrap_lon(lon)
    west, east = float(np.min(lon_u)), float(np.max(lon_u))
    # Move the box so its west edge is in [-180, 180); a tile that does not cross keeps the
    # exact longitudes it had (no jump was unwrapped, the shift is 0).
    shift = 360.0 * float(np.floor((west + 180.0) / 360.0))
    west, east = west - shift, east - shift
    if east - west >= 360.0:
        return (-180.0, south, 180.0, north)
    if east > 180.0:
        east -= 360.0
    return (west, south, east, north)

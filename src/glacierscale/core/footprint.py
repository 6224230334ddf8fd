"""Lon/lat footprints that never wrap around the globe.

A tile is a square in its projection; in EPSG:4326 it becomes a curved ring which may cross the
antimeridian (UTM zones 1 and 60, polar grids) or even enclose a pole (the polar cells at the
centre of EPSG:3413/3031). Naively building a polygon from such a ring draws a band around the whole
Earth. Here rings are unwrapped to continuous longitudes, pole-enclosing rings are closed along the
pole, and anything beyond ±180 is cut at the antimeridian and moved back, giving a MultiPolygon
whose parts meet at ±180 (the GeoJSON RFC 7946 convention).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from shapely.affinity import translate
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from glacierscale.core.zones import normalize_lon

WORLD = box(-180.0, -90.0, 180.0, 90.0)

#: A W,S,E,N box in degrees; W > E means it crosses the antimeridian (as STAC allows).
Bbox = tuple[float, float, float, float]

_BBOX_TEXT = re.compile(r"\s*[-+]?[\d.]+\s*(,\s*[-+]?[\d.]+\s*)+")


def looks_like_bbox(text: str) -> bool:
    """Numbers and commas only: meant as a box, not a path or URL (a wrong count is then reported
    by :func:`parse_bbox` as such)."""
    return bool(_BBOX_TEXT.fullmatch(text))


def parse_bbox(text: str | Sequence[float]) -> Bbox:
    """``"W,S,E,N"`` (or a 4-sequence) in degrees; W > E means the box crosses the antimeridian."""
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ValueError(f"bbox {text!r}: expected four numbers W,S,E,N in degrees") from exc
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts):
        raise ValueError(f"bbox {text!r}: expected four numbers W,S,E,N in degrees")
    w, s, e, n = parts
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
        raise ValueError(f"bbox {text!r}: need -180 <= W,E <= 180 and -90 <= S < N <= 90")
    return (w, s, e, n)


def split_bbox(bbox: Sequence[float]) -> list[Bbox]:
    """A W,S,E,N box (or a 3-D STAC bbox) as one or two boxes that do not cross the antimeridian."""
    if len(bbox) == 6:  # 3-D STAC bbox: minx, miny, minz, maxx, maxy, maxz
        bbox = (bbox[0], bbox[1], bbox[3], bbox[4])
    w, s, e, n = (float(v) for v in bbox[:4])
    if s > n:
        raise ValueError(f"bbox {tuple(bbox)} has south {s} > north {n}; expected W,S,E,N degrees")
    if w <= e:
        return [(w, s, e, n)]
    return [(w, s, 180.0, n), (-180.0, s, e, n)]


def unwrap_lon(lon: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    """Continuous longitudes along ``axis``: every jump of more than 180° is undone by ±360°.

    Unlike ``np.unwrap`` the corrections are exact multiples of 360, so a closed ring stays closed
    bit for bit (a ring whose last vertex drifts from its first is self-intersecting).
    """
    lon = np.asarray(lon, dtype=np.float64)
    jumps = -360.0 * np.round(np.diff(lon, axis=axis) / 360.0)
    zero = np.zeros_like(np.take(lon, [0], axis=axis))
    return lon + np.cumsum(np.concatenate([zero, jumps], axis=axis), axis=axis)


def polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """Only the areal parts of ``geom`` (an intersection may add slivers of lines or points)."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _wrap_into_world(poly: Polygon) -> Polygon | MultiPolygon:
    """Cut a polygon drawn on continuous longitudes into ±180 pieces, each moved back by 360°."""
    minx, _, maxx, _ = poly.bounds
    pieces: list[Polygon] = []
    k0, k1 = (int(np.floor((v + 180.0) / 360.0)) for v in (minx, maxx))
    for k in range(k0, k1 + 1):
        part = polygonal(poly.intersection(box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)))
        if not part.is_empty:
            moved = translate(part, xoff=-360.0 * k)
            pieces.extend(shapely.get_parts(moved))
    if not pieces:
        return Polygon()
    return pieces[0] if len(pieces) == 1 else MultiPolygon(pieces)


def ring_to_lonlat(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> Polygon | MultiPolygon:
    """Polygon in ``[-180, 180]`` from a closed ring of lon/lat vertices (first == last point).

    The ring may cross the antimeridian any number of times and may enclose one pole.
    """
    lon_u = unwrap_lon(lon)
    lat_a = np.asarray(lat, dtype=np.float64)
    winding = lon_u[-1] - lon_u[0]
    if abs(winding) > 180.0:
        # The ring goes once around a pole: close it along the pole (lat ±90) so the polygon is the
        # cap it encloses, then fold the 360° of longitude back into ±180 and glue the parts.
        pole = 90.0 if float(np.mean(lat_a)) > 0.0 else -90.0
        xs = np.concatenate([lon_u, [lon_u[-1], lon_u[0], lon_u[0]]])
        ys = np.concatenate([lat_a, [pole, pole, lat_a[0]]])
        cap = shapely.make_valid(Polygon(np.column_stack([xs, ys])))
        return polygonal(shapely.union_all(shapely.get_parts(_wrap_into_world(polygonal(cap)))))
    shift = 360.0 * np.floor((float(np.min(lon_u)) + 180.0) / 360.0)
    poly = Polygon(np.column_stack([lon_u - shift, lat_a]))
    if not poly.is_valid:
        poly = polygonal(shapely.make_valid(poly))
    if poly.bounds[2] <= 180.0:
        return poly
    return _wrap_into_world(poly) if isinstance(poly, Polygon) else polygonal(
        shapely.union_all([_wrap_into_world(p) for p in poly.geoms]))


def rings_to_lonlat(
    lon: NDArray[np.float64], lat: NDArray[np.float64], ref_lon: float
) -> NDArray[np.object_]:
    """Vectorised :func:`ring_to_lonlat` for rings stacked as rows of ``(n, k)`` arrays.

    Longitudes are first expressed around ``ref_lon`` (e.g. a UTM central meridian) so that the
    common case, a ring well inside ±180, is built in one vectorised call; only rings that cross
    the antimeridian or enclose a pole take the careful path.
    """
    lon_r = ref_lon + normalize_lon(np.asarray(lon, dtype=np.float64) - ref_lon)
    lon_u = unwrap_lon(lon_r, axis=1)
    winding = np.abs(lon_u[:, -1] - lon_u[:, 0]) > 180.0
    simple = (~winding) & (lon_u.min(axis=1) >= -180.0) & (lon_u.max(axis=1) <= 180.0)
    out = np.empty(lon_u.shape[0], dtype=object)
    if simple.any():
        coords = np.stack([lon_u[simple], lat[simple]], axis=-1)
        out[simple] = shapely.polygons(coords)
    for i in np.flatnonzero(~simple):
        out[i] = ring_to_lonlat(lon_u[i], lat[i])
    return out


def bbox_polygon(bbox: Sequence[float]) -> Polygon | MultiPolygon:
    """A W,S,E,N box as a lon/lat (multi)polygon; ``W > E`` means it crosses the antimeridian.

    Also takes 3-D STAC bboxes. A box of zero width (``W == E``, a point item's bbox) stays a
    line instead of going round the world.
    """
    if len(bbox) == 6:
        bbox = (bbox[0], bbox[1], bbox[3], bbox[4])
    w, s, e, n = (float(v) for v in bbox[:4])
    if not (-90.0 <= s <= n <= 90.0):
        raise ValueError(f"bbox {tuple(bbox)}: need -90 <= south <= north <= 90 "
                         "(W,S,E,N in degrees)")
    if w == e or s == n:
        return box(w, s, e, n)
    # West into [-180, 180); east may be 180 itself (the usual "whole world" box). Longitudes
    # already in range are left alone: wrapping arithmetic would round a longitude of 1e-90 to 0
    # and turn a thin box into the whole world.
    w = w if -180.0 <= w < 180.0 else float(normalize_lon(w))
    e = e if -180.0 < e <= 180.0 else float(normalize_lon(e))
    if e <= w:
        e += 360.0
    return _wrap_into_world(box(w, s, e, n))


def polygon_to_lonlat(poly: Polygon) -> Polygon | MultiPolygon:
    """A lon/lat polygon whose longitudes may jump across ±180 (older STAC producers, rings
    transformed from a projection) as its parts in ``[-180, 180]``."""
    xy = np.asarray(poly.exterior.coords, dtype=np.float64)
    return ring_to_lonlat(xy[:, 0], xy[:, 1])


def raster_footprint(crs: Any, bounds: Sequence[float], points_per_side: int = 11
                     ) -> tuple[Polygon | MultiPolygon, list[float]]:
    """Lon/lat footprint and STAC bbox of a raster's bounds (``left, bottom, right, top`` in
    ``crs``, anything pyproj reads).

    Each side is densified, since a straight projected edge is curved in lon/lat. Across the
    antimeridian the footprint is a MultiPolygon split at ±180 and the bbox has west > east, as
    the STAC spec asks.
    """
    t = np.linspace(0.0, 1.0, points_per_side)
    left, b, r, top = (float(v) for v in bounds)
    xs = np.concatenate([left + (r - left) * t, np.full_like(t, r), r - (r - left) * t,
                         np.full_like(t, left)])
    ys = np.concatenate([np.full_like(t, top), top - (top - b) * t, np.full_like(t, b),
                         b + (top - b) * t])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    geom = polygon_to_lonlat(Polygon(np.column_stack([lon, lat])))
    minx, miny, maxx, maxy = geom.bounds
    if isinstance(geom, MultiPolygon) and minx <= -179.999 and maxx >= 179.999:
        east = max(g.bounds[0] for g in geom.geoms if g.bounds[0] > 0)
        west = min(g.bounds[2] for g in geom.geoms if g.bounds[2] < 0)
        return geom, [east, miny, west, maxy]
    return geom, [minx, miny, maxx, maxy]

"""Lon/lat footprints that never wrap around the globe.

A tile is a square in its projection; in EPSG:4326 it becomes a curved ring which may cross the
antimeridian (UTM zones 1 and 60, polar grids) or even enclose a pole (the polar cells at the
centre of EPSG:3413/3031). Naively building a polygon from such a ring draws a band around the whole
Earth. Here rings are unwrapped to continuous longitudes, pole-enclosing rings are closed along the
pole, and anything beyond ±180 is cut at the antimeridian and moved back, giving a MultiPolygon
whose parts meet at ±180 (the GeoJSON RFC 7946 convention).
"""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.affinity import translate
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from glacierscale.core.zones import normalize_lon

WORLD = box(-180.0, -90.0, 180.0, 90.0)


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


def bbox_polygon(bbox: tuple[float, float, float, float]) -> Polygon | MultiPolygon:
    """A W,S,E,N box as a lon/lat (multi)polygon; ``W > E`` means it crosses the antimeridian."""
    w, s, e, n = bbox
    if not (-90.0 <= s < n <= 90.0):
        raise ValueError(f"bbox {bbox}: need -90 <= south < north <= 90 (W,S,E,N in degrees)")
    # West into [-180, 180); east may be 180 itself (the usual "whole world" box).
    w = float(normalize_lon(w))
    e = 180.0 if e == 180.0 else float(normalize_lon(e))
    if e <= w:
        e += 360.0
    return _wrap_into_world(box(w, s, e, n))

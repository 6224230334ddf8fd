"""Lon/lat footprints that behave across the antimeridian.

A query box may cross the antimeridian (west > east, as STAC allows) and an item's geometry may be
split there (a MultiPolygon, per the GeoJSON spec) or, from older producers, be one polygon whose
longitudes jump from +179 to -179. Everything here normalises both to plain shapely geometries in
[-180, 180] so intersection tests never call a scene on the date line "elsewhere", which would
leave half a tile empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

Bbox = tuple[float, float, float, float]


def split_bbox(bbox: Sequence[float]) -> list[Bbox]:
    """A W,S,E,N box as one or two boxes that do not cross the antimeridian."""
    if len(bbox) == 6:  # 3-D STAC bbox: minx, miny, minz, maxx, maxy, maxz
        bbox = (bbox[0], bbox[1], bbox[3], bbox[4])
    w, s, e, n = (float(v) for v in bbox[:4])
    if s > n:
        raise ValueError(f"bbox {tuple(bbox)} has south {s} > north {n}; expected W,S,E,N degrees")
    if w <= e:
        return [(w, s, e, n)]
    return [(w, s, 180.0, n), (-180.0, s, e, n)]


def bbox_geometry(bbox: Sequence[float]) -> BaseGeometry:
    """The area of a W,S,E,N box (two parts when it crosses the antimeridian)."""
    parts = [box(*b) for b in split_bbox(bbox)]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def unwrap_polygon(poly: Polygon) -> BaseGeometry:
    """A polygon whose longitudes jump across +-180 as its two parts in [-180, 180]."""
    xs = [x for x, _ in poly.exterior.coords]
    if max(xs) - min(xs) <= 180.0:
        return poly
    shifted = Polygon([(x + 360.0 if x < 0 else x, y) for x, y in poly.exterior.coords])
    east = shifted.intersection(box(-180.0, -90.0, 180.0, 90.0))
    west = affinity.translate(shifted.intersection(box(180.0, -90.0, 540.0, 90.0)), xoff=-360.0)
    return unary_union([g for g in (east, west) if not g.is_empty])


def item_footprint(geometry: dict[str, Any] | None, bbox: Sequence[float] | None) -> BaseGeometry:
    """Normalised footprint of an item from its GeoJSON geometry, else its bbox."""
    if geometry:
        geom = shape(geometry)
        if isinstance(geom, Polygon):
            return unwrap_polygon(geom)
        if isinstance(geom, MultiPolygon):
            return unary_union([unwrap_polygon(p) for p in geom.geoms])
        return geom
    if bbox:
        return bbox_geometry(bbox)
    raise ValueError("item has neither geometry nor bbox; it cannot be searched by place")


def intersects(footprint: BaseGeometry, bbox: Sequence[float]) -> bool:
    """Whether an item footprint touches a (possibly antimeridian-crossing) query box."""
    return bool(footprint.intersects(bbox_geometry(bbox)))


def coverage(footprints: Sequence[BaseGeometry], bbox: Sequence[float]) -> float:
    """Fraction (0..1) of a query box covered by the union of footprints (in degree area).

    Degree areas distort with latitude, but within one tile-sized box the distortion is the same
    for numerator and denominator, so the fraction is sound.
    """
    target = bbox_geometry(bbox)
    if target.area == 0:
        return 1.0 if any(f.intersects(target) for f in footprints) else 0.0
    union = unary_union(list(footprints)) if footprints else Polygon()
    return float(min(1.0, union.intersection(target).area / target.area))

"""Lon/lat footprints that behave across the antimeridian.

A query box may cross the antimeridian (west > east, as STAC allows) and an item's geometry may be
split there (a MultiPolygon, per the GeoJSON spec) or, from older producers, be one polygon whose
longitudes jump from +179 to -179. Everything here normalises both to plain shapely geometries in
[-180, 180], with the lon/lat primitives of ``glacierscale.core.footprint``, so intersection tests
never call a scene on the date line "elsewhere", which would leave half a tile empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from glacierscale.core.footprint import bbox_polygon, polygon_to_lonlat


def item_footprint(geometry: dict[str, Any] | None, bbox: Sequence[float] | None) -> BaseGeometry:
    """Normalised footprint of an item from its GeoJSON geometry, else its bbox."""
    if geometry:
        geom = shape(geometry)
        if isinstance(geom, Polygon):
            return polygon_to_lonlat(geom)
        if isinstance(geom, MultiPolygon):
            return unary_union([polygon_to_lonlat(p) for p in geom.geoms])
        return geom
    if bbox:
        return bbox_polygon(bbox)
    raise ValueError("item has neither geometry nor bbox; it cannot be searched by place")


def coverage(footprints: Sequence[BaseGeometry], bbox: Sequence[float]) -> float:
    """Fraction (0..1) of a query box covered by the union of footprints (in degree area).

    Degree areas distort with latitude, but within one tile-sized box the distortion is the same
    for numerator and denominator, so the fraction is sound.
    """
    target = bbox_polygon(bbox)
    if target.area == 0:
        return 1.0 if any(f.intersects(target) for f in footprints) else 0.0
    union = unary_union(list(footprints)) if footprints else Polygon()
    return float(min(1.0, union.intersection(target).area / target.area))

"""Projection zones of the global tile grid: which CRS owns which part of the Earth.

The Earth is partitioned into zones, each owning a lon/lat box, half-open so that every point has
exactly one zone:

* UTM north, EPSG:326zz: ``0 <= lat < 84``, UTM south, EPSG:327zz: ``-80 <= lat < 0``, and
  ``lon0 <= lon < lon0 + 6`` with ``lon0 = -180 + 6 (zz - 1)``; longitude 180 is longitude -180
  (zone 1). No Norway/Svalbard exceptions.
* Polar stereographic north, EPSG:3413: ``lat >= 84``; south, EPSG:3031: ``lat < -80``.

Each zone carries its own fixed tile grid (:mod:`glacierscale.core.tiles`); a tile's core is the
grid cell clipped to its zone, so cores of neighbouring zones meet along the zone border and never
overlap.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from pyproj import Proj, Transformer
from shapely.geometry import Polygon, box

#: Latitude limits of UTM; beyond them the polar stereographic grids own the ground.
UTM_NORTH_LIMIT = 84.0
UTM_SOUTH_LIMIT = -80.0
NORTH_POLAR = 3413
SOUTH_POLAR = 3031
POLAR_EPSGS = (NORTH_POLAR, SOUTH_POLAR)

#: Densification step (degrees) of zone borders when they are drawn in a projected CRS, where
#: meridians and parallels are curves. 0.01° (~1 km) keeps the chord error far below a millimetre.
BORDER_STEP_DEG = 0.01


def normalize_lon(lon: ArrayLike) -> NDArray[np.float64]:
    """Longitudes wrapped into ``[-180, 180)``."""
    return np.mod(np.asarray(lon, dtype=np.float64) + 180.0, 360.0) - 180.0


def lon_zone_index(lon: ArrayLike) -> NDArray[np.int64]:
    """0-based UTM zone index ``floor((lon + 180) / 6)`` of any longitude, exact at borders.

    Computed as ``floor(lon / 6) + 30`` and then checked against the exact border ``6 k`` (an
    integer times 6 is exact in floating point), so neither the +180 shift nor an underflowing
    division can move a point that is a hair west of a border into the eastern zone.
    """
    lon_a = np.asarray(lon, dtype=np.float64)
    k = np.floor(lon_a / 6.0)
    k = np.where(lon_a < 6.0 * k, k - 1.0, k)
    k = np.where(lon_a >= 6.0 * (k + 1.0), k + 1.0, k)
    return k.astype(np.int64) + 30


def zone_epsg(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.int64]:
    """EPSG code of the zone owning each lon/lat point (vectorised; see the module docstring).

    Between 80S and 84N this is the standard UTM zone (as
    :func:`glacierscale.core.tiles.local_utm_epsg`), computed as :func:`lon_zone_index` of the
    untouched longitude so that it is exact even within 1e-15° of a border (adding 180 first can
    round such a point into the next zone).
    """
    lon_a = np.asarray(lon, dtype=np.float64)
    lon_a = np.where((lon_a >= -180.0) & (lon_a < 180.0), lon_a, normalize_lon(lon_a))
    lat_a = np.asarray(lat, dtype=np.float64)
    zone = np.clip(lon_zone_index(lon_a) + 1, 1, 60)
    epsg = np.where(lat_a >= 0.0, 32600, 32700) + zone
    epsg = np.where(lat_a >= UTM_NORTH_LIMIT, NORTH_POLAR, epsg)
    return np.where(lat_a < UTM_SOUTH_LIMIT, SOUTH_POLAR, epsg).astype(np.int64)


def is_polar(epsg: int) -> bool:
    """True for the polar stereographic zones."""
    return epsg in POLAR_EPSGS


def zone_bounds(epsg: int) -> tuple[float, float, float, float]:
    """The lon/lat box ``(west, south, east, north)`` a zone owns (half-open at east and north)."""
    if epsg == NORTH_POLAR:
        return (-180.0, UTM_NORTH_LIMIT, 180.0, 90.0)
    if epsg == SOUTH_POLAR:
        return (-180.0, -90.0, 180.0, UTM_SOUTH_LIMIT)
    if 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760:
        z = epsg % 100
        west = -180.0 + 6.0 * (z - 1)
        south, north = (0.0, UTM_NORTH_LIMIT) if epsg < 32700 else (UTM_SOUTH_LIMIT, 0.0)
        return (west, south, west + 6.0, north)
    raise ValueError(
        f"EPSG:{epsg} is not a zone of the global grid; use EPSG:326xx/327xx, 3413 or 3031"
    )


def central_lon(epsg: int) -> float:
    """Longitude around which lon/lat rings of a zone are unwrapped: the UTM central meridian."""
    if is_polar(epsg):
        return 0.0
    w, _, e, _ = zone_bounds(epsg)
    return (w + e) / 2.0


def zones_touching(bbox: tuple[float, float, float, float]) -> list[int]:
    """Zones whose lon/lat box intersects ``bbox`` (west may exceed east across the antimeridian;
    longitudes outside ±180 are wrapped). Sorted ascending."""
    w, s, e, n = bbox
    if s > n:
        raise ValueError(f"bbox south {s} > north {n}; give W,S,E,N")
    if e < w:  # crosses the antimeridian: W > E
        e += 360.0
    out: set[int] = set()
    if n >= UTM_NORTH_LIMIT:
        out.add(NORTH_POLAR)
    if s < UTM_SOUTH_LIMIT:
        out.add(SOUTH_POLAR)
    hemis = []
    if n >= 0.0 and s < UTM_NORTH_LIMIT:
        hemis.append(32600)
    if s < 0.0 and n >= UTM_SOUTH_LIMIT:
        hemis.append(32700)
    if hemis:
        zones: list[int]
        if e - w >= 360.0:
            zones = list(range(1, 61))
        else:
            z0, z1 = int(lon_zone_index(w)), int(lon_zone_index(e))
            zones = sorted({(z % 60) + 1 for z in range(z0, z1 + 1)})
        out.update(h + z for h in hemis for z in zones)
    return sorted(out)


@lru_cache(maxsize=256)
def to_projected(epsg: int) -> Transformer:
    """Cached lon/lat (EPSG:4326, x=lon) -> zone CRS transformer."""
    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=256)
def to_lonlat(epsg: int) -> Transformer:
    """Cached zone CRS -> lon/lat (EPSG:4326, x=lon) transformer."""
    return Transformer.from_crs(epsg, 4326, always_xy=True)


@lru_cache(maxsize=256)
def _proj(epsg: int) -> Proj:
    return Proj(f"EPSG:{epsg}")


def areal_scale(epsg: int, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.float64]:
    """Projected area / ground area at each point: divide a projected area by it for km² on Earth.

    UTM distorts areas by < 0.2 % within a zone, polar stereographic by up to ~6 %; dividing by
    the local factor keeps glacier and tile areas comparable across zones.
    """
    lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    lat_a = np.clip(np.atleast_1d(np.asarray(lat, dtype=np.float64)), -89.999999, 89.999999)
    if lon_a.size == 0:
        return np.zeros(0)
    return np.asarray(_proj(epsg).get_factors(lon_a, lat_a).areal_scale, dtype=np.float64)


def polar_radius(epsg: int) -> float:
    """Projected radius of the polar zone's border parallel (84N / 80S): parallels are circles."""
    lat = UTM_NORTH_LIMIT if epsg == NORTH_POLAR else UTM_SOUTH_LIMIT
    x, y = to_projected(epsg).transform(0.0, lat)
    return float(np.hypot(x, y))


def zone_clip_polygon(epsg: int, window: tuple[float, float, float, float]) -> Polygon:
    """The zone's ground, drawn in its own CRS, limited to a projected ``window`` (minx..maxy).

    UTM zone borders are meridians and parallels, i.e. curves in the projection: the lon/lat box is
    densified every :data:`BORDER_STEP_DEG` and projected, but only the part near ``window`` (its
    lon/lat extent plus a margin), so clipping one cell stays cheap. Polar zones are disks.
    """
    if is_polar(epsg):
        r = polar_radius(epsg)
        # 2**14 segments: chord error ~ r * 1.8e-8 < 2 cm on an 1,100 km circle.
        return shapely.Point(0.0, 0.0).buffer(r, quad_segs=4096)
    minx, miny, maxx, maxy = window
    xs = np.linspace(minx, maxx, 9)
    ys = np.linspace(miny, maxy, 9)
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = to_lonlat(epsg).transform(gx.ravel(), gy.ravel())
    cm = central_lon(epsg)
    lon = cm + normalize_lon(np.asarray(lon) - cm)
    w, s, e, n = zone_bounds(epsg)
    margin = 0.5
    lw, le = max(w, float(np.min(lon)) - margin), min(e, float(np.max(lon)) + margin)
    ls, ln = max(s, float(np.min(lat)) - margin), min(n, float(np.max(lat)) + margin)
    if lw >= le or ls >= ln:
        return Polygon()
    ring = shapely.segmentize(box(lw, ls, le, ln), BORDER_STEP_DEG)
    coords = shapely.get_coordinates(ring)
    x, y = to_projected(epsg).transform(coords[:, 0], coords[:, 1])
    return Polygon(np.column_stack([x, y]))

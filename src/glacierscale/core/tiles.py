"""A tile is a value: an id that maps to a pixel grid (CRS, transform, shape) plus a halo.

Tiles are cells of one fixed grid per projection (odc-geo's GridSpec is the model). The grid origin
sits on a multiple of the 10 m Sentinel-2 pixel grid, so a 10 m tile read never straddles a pixel,
and a cell index never changes when glaciers elsewhere are added to a plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine

from glacierscale.core.zones import lon_zone_index, normalize_lon

#: Grid origin (upper-left corner of cell 0,0) per projection family, in projected metres.
#: UTM: rows grow southwards from just below 10,000 km (north: northing 0..9.4e6; south: false
#: northing 10,000 km). 9,999,960 is a multiple of 10, 20, 30 and 60 m, so tiles at any Sentinel-2,
#: HLS or Landsat pixel size sit on the sensors' own pixel grids and reads need no resampling.
#: Polar stereographic: the pole is the centre of a 10,000 km square.
UTM_ORIGIN = (0.0, 9_999_960.0)
POLAR_ORIGIN = (-5_000_000.0, 5_000_000.0)


def grid_origin(epsg: int) -> tuple[float, float]:
    """Upper-left origin of the tile grid of a projection (UTM or polar stereographic)."""
    if epsg in (3413, 3031, 3995, 3976):
        return POLAR_ORIGIN
    if 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760:
        return UTM_ORIGIN
    raise ValueError(
        f"EPSG:{epsg} has no glacierscale tile grid; use a UTM zone (EPSG:326xx/327xx) "
        "or polar stereographic (EPSG:3413 north, EPSG:3031 south)"
    )


def local_utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the standard UTM zone of a lon/lat point: a metric CRS *near* the point.

    For measuring and drawing around a place (quicklooks, evaluation), so it is UTM at every
    latitude. The tile grid's owner of a point is :func:`glacierscale.core.zones.zone_epsg`
    instead, which differs on purpose beyond 84N and 80S, where the grid switches to polar
    stereographic. Both leave out the Norway/Svalbard exceptions, so zones stay formulaic.
    """
    lon = lon if -180.0 <= lon < 180.0 else float(normalize_lon(lon))
    zone = min(max(int(lon_zone_index(lon)) + 1, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True, slots=True)
class TileSpec:
    """One cell of the tile grid of a projection.

    ``col``/``row`` index cells of ``size_px * resolution`` metres from the projection's origin,
    rows growing southwards. The *core* is the cell itself; the *halo* adds ``halo_px`` pixels of
    context on every side for the model and for stitching outlines across borders.
    """

    epsg: int
    col: int
    row: int
    size_px: int = 1024
    resolution: float = 10.0
    halo_px: int = 64

    @property
    def tile_id(self) -> str:
        """Stable id encoding projection and cell, e.g. ``32611_0047_0404``."""
        return f"{self.epsg}_{self.col:04d}_{self.row:04d}"

    @property
    def size_m(self) -> float:
        return self.size_px * self.resolution

    @property
    def core_bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the core in the tile CRS."""
        ox, oy = grid_origin(self.epsg)
        minx = ox + self.col * self.size_m
        maxy = oy - self.row * self.size_m
        return (minx, maxy - self.size_m, minx + self.size_m, maxy)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of core plus halo in the tile CRS."""
        h = self.halo_px * self.resolution
        minx, miny, maxx, maxy = self.core_bounds
        return (minx - h, miny - h, maxx + h, maxy + h)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels of core plus halo."""
        n = self.size_px + 2 * self.halo_px
        return (n, n)

    @property
    def transform(self) -> Affine:
        """Affine transform of the halo'd grid (north-up)."""
        minx, _, _, maxy = self.bounds
        return Affine(self.resolution, 0.0, minx, 0.0, -self.resolution, maxy)

    @property
    def core_transform(self) -> Affine:
        minx, _, _, maxy = self.core_bounds
        return Affine(self.resolution, 0.0, minx, 0.0, -self.resolution, maxy)

    @property
    def core_slice(self) -> tuple[slice, slice]:
        """Row/column slices that cut the core out of a halo'd array."""
        h = self.halo_px
        return (slice(h, h + self.size_px), slice(h, h + self.size_px))

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @classmethod
    def from_id(
        cls, tile_id: str, size_px: int = 1024, resolution: float = 10.0, halo_px: int = 64
    ) -> TileSpec:
        """Parse ``EPSG_COL_ROW`` back into a tile (the grid parameters are not in the id)."""
        try:
            epsg_s, col_s, row_s = tile_id.split("_")
            return cls(int(epsg_s), int(col_s), int(row_s), size_px, resolution, halo_px)
        except ValueError as exc:
            raise ValueError(
                f"{tile_id!r} is not a tile id; expected EPSG_COL_ROW such as '32611_0047_0404'"
            ) from exc


def cells_covering(
    epsg: int, bounds: tuple[float, float, float, float], size_m: float
) -> list[tuple[int, int]]:
    """(col, row) of every grid cell of ``epsg`` intersecting projected ``bounds``, row-major."""
    ox, oy = grid_origin(epsg)
    minx, miny, maxx, maxy = bounds
    c0 = math.floor((minx - ox) / size_m)
    c1 = math.ceil((maxx - ox) / size_m)
    r0 = math.floor((oy - maxy) / size_m)
    r1 = math.ceil((oy - miny) / size_m)
    return [(c, r) for r in range(r0, max(r1, r0 + 1)) for c in range(c0, max(c1, c0 + 1))]

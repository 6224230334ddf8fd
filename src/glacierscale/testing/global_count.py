"""A glacier table with the real global glacier count that plans to the grid's global tile count.

Real RGI 7.0 outlines are not available offline, yet orchestration has to be rehearsed at the size
of a whole-world run. :func:`global_glacier_points` builds a centroid table with the real number
of glaciers of every RGI O1 region (the RGI 7.0 summary), spread over exactly as many tiles per
region as :func:`glacierscale.plan.estimate_global_tiles` projects, around that region's real
reference glaciers. Planning it with ``plan_tiles`` (what the deployed flow does with its
``outlines`` parameter) gives the projected global tile count, in the right zones and regions.

:func:`noop_tile` is the tile function of such runs: it does nothing, so what is measured is
orchestration alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from glacierscale.config import GridConfig, RunConfig
from glacierscale.core.tiles import TileSpec, grid_origin
from glacierscale.core.zones import to_lonlat, to_projected, zone_epsg
from glacierscale.pipeline import TileResult
from glacierscale.plan import estimate_global_tiles
from glacierscale.testing.world import reference_glaciers


def noop_tile(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """The tile function of an orchestration-only run: does nothing, writes nothing."""
    return TileResult(tile.tile_id, "no-data", "no-op tile function")


def _spiral() -> Iterator[tuple[int, int]]:
    """Cell offsets in rings of growing Chebyshev distance around (0, 0)."""
    yield (0, 0)
    for r in itertools.count(1):
        yield from ((dx, -r) for dx in range(-r, r + 1))
        yield from ((r, dy) for dy in range(-r + 1, r + 1))
        yield from ((dx, r) for dx in range(r - 1, -r - 1, -1))
        yield from ((-r, dy) for dy in range(r - 1, -r, -1))


def _whole_in_zone(epsg: int, col: int, row: int, size_m: float) -> bool:
    """Whether the cell lies wholly in its zone (corners and centre owned by ``epsg``)."""
    ox, oy = grid_origin(epsg)
    x0, y1 = ox + col * size_m, oy - row * size_m
    xs = np.array([x0, x0 + size_m, x0, x0 + size_m, x0 + size_m / 2])
    ys = np.array([y1, y1, y1 - size_m, y1 - size_m, y1 - size_m / 2])
    lon, lat = to_lonlat(epsg).transform(xs, ys)
    return bool(np.all(zone_epsg(lon, lat) == epsg))


def global_glacier_points(grid: GridConfig = GridConfig(), seed: int = 0
                          ) -> tuple[pd.DataFrame, dict[str, int]]:
    """A centroid table (``rgi_id, o1region, area_km2, cenlon, cenlat``) of the real glacier
    count per RGI O1 region that plans to the estimated tile count of each region.

    Each region's tiles are whole grid cells taken in rings around its reference glaciers; each
    glacier is a point (with a small area) well inside one of them, so ``plan_tiles`` needs
    exactly those cells. Where a region has more tiles than glaciers (ice caps spanning many
    tiles), every tile still gets one point. Returns the table and the tile count per region.
    """
    est = estimate_global_tiles(grid)
    summary = pd.read_csv(_summary_csv(), dtype={"o1region": str})
    counts = {str(code).zfill(2): int(n) for code, n in zip(
        summary["o1region"].tolist(), summary["count"].tolist(), strict=True)
        if str(code).lower() != "global"}
    refs = reference_glaciers()
    size_m = grid.tile_size_px * grid.resolution
    # A point's reach (buffer + radius of its disk) must stay inside its cell.
    area_km2 = 0.5
    margin = grid.buffer_m + np.sqrt(area_km2 * 1e6 / np.pi) + 1.0
    rng = np.random.default_rng(seed)
    taken: set[tuple[int, int, int]] = set()
    parts: list[pd.DataFrame] = []
    per_region: dict[str, int] = {}
    for code, reg in sorted(est["per_region"].items()):
        n_tiles, n_glaciers = int(reg["tiles"]), counts.get(code, int(reg["glaciers"]))
        anchors = refs[refs["o1region"] == code]
        cells = _cells_around(anchors["lon"].to_numpy(), anchors["lat"].to_numpy(), n_tiles,
                              size_m, taken)
        per_region[code] = len(cells)
        # Regions of large ice caps have more tiles than glaciers: one point in every tile.
        n_glaciers = max(n_glaciers, len(cells))
        pick = np.arange(n_glaciers) % len(cells)
        epsg = np.array([c[0] for c in cells])[pick]
        col = np.array([c[1] for c in cells])[pick]
        row = np.array([c[2] for c in cells])[pick]
        lon = np.empty(n_glaciers)
        lat = np.empty(n_glaciers)
        for e in np.unique(epsg).tolist():
            m = epsg == e
            ox, oy = grid_origin(int(e))
            x = ox + col[m] * size_m + rng.uniform(margin, size_m - margin, m.sum())
            y = oy - row[m] * size_m - rng.uniform(margin, size_m - margin, m.sum())
            lon[m], lat[m] = to_lonlat(int(e)).transform(x, y)
        parts.append(pd.DataFrame({
            "rgi_id": [f"RGI2000-v7.0-G-{code}-{i:05d}" for i in range(n_glaciers)],
            "o1region": code, "area_km2": area_km2, "cenlon": lon, "cenlat": lat}))
    return pd.concat(parts, ignore_index=True), per_region


def _cells_around(lon: np.ndarray, lat: np.ndarray, n: int, size_m: float,
                  taken: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``n`` free whole-zone cells, growing rings around the anchors in turn."""
    epsg = zone_epsg(lon, lat)
    centres = []
    for e, x_lon, x_lat in zip(epsg.tolist(), lon.tolist(), lat.tolist(), strict=True):
        ox, oy = grid_origin(e)
        x, y = to_projected(e).transform(x_lon, x_lat)
        centres.append((e, int((x - ox) // size_m), int((oy - y) // size_m)))
    spirals = [_spiral() for _ in centres]
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        # One cell per anchor in turn spreads the region's tiles over all its anchors.
        for (e, c0, r0), spiral in zip(centres, spirals, strict=True):
            for dc, dr in spiral:
                cell = (e, c0 + dc, r0 + dr)
                if cell not in taken and _whole_in_zone(e, cell[1], cell[2], size_m):
                    taken.add(cell)
                    out.append(cell)
                    break
            if len(out) >= n:
                break
    return out


def _summary_csv() -> str:
    from glacierscale.config import sample_data_dir

    base = sample_data_dir()
    if base is None:
        raise FileNotFoundError("sample data not found: set GLACIERSCALE_SAMPLE_DATA")
    return str(base / "global" / "RGI2000-v7.0-G-o1region-summary.csv")

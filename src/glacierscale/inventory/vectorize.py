"""Raster mask of a tile core -> glacier polygons with per-polygon statistics.

Outlines are simplified as one *coverage* (ice, not-ice and no-data regions together) with the
core border held fixed: shared edges are simplified identically on both sides and every vertex on
the tile border stays on its pixel corner, so a glacier cut by the tile grid rejoins its
neighbour-tile parts exactly, without slivers or overlaps (see ``merge.merge_tiles``).
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize, shapes, sieve
from shapely.geometry import Polygon
from shapely.geometry import shape as shp_shape

#: Columns of a tile's outlines (in the tile CRS), the input of ``merge_tiles``.
OUTLINE_COLUMNS = ["tile_id", "mean_prob", "mean_uncertainty", "touches_edge", "area_m2",
                   "area_lo_m2", "area_hi_m2", "res_m", "geometry"]
#: Probability margin used for the area bounds when the model gives no uncertainty band.
DEFAULT_PROB_MARGIN = 0.25


def empty_outlines(crs: str | None) -> gpd.GeoDataFrame:
    """An outlines frame with no rows but the right columns and CRS."""
    cols: dict[str, list[object]] = {c: [] for c in OUTLINE_COLUMNS if c != "geometry"}
    gdf = gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    return gdf.astype({"mean_prob": "float64", "mean_uncertainty": "float64",
                       "touches_edge": "bool", "area_m2": "float64", "area_lo_m2": "float64",
                       "area_hi_m2": "float64", "res_m": "float64", "tile_id": "object"})


def _labels(binary: np.ndarray, transform: Affine) -> tuple[np.ndarray, list[Polygon]]:
    """4-connected components of ``binary``: label image (0 = background) and raw polygons."""
    polys = [shp_shape(g) for g, v in shapes(binary.astype("uint8"), mask=binary,
                                             connectivity=4, transform=transform) if v == 1]
    if not polys:
        return np.zeros(binary.shape, "int32"), []
    # Pixel-exact polygons rasterize back to exactly their pixels (centres inside).
    labels = rasterize(((p, i + 1) for i, p in enumerate(polys)), out_shape=binary.shape,
                       transform=transform, fill=0, dtype="int32")
    return labels, polys


def _sieve(ice: np.ndarray, min_px: int) -> np.ndarray:
    """Drop ice specks and fill holes below ``min_px`` pixels, never touching border regions.

    Padding with a ring of ice protects ice regions on the core border (they may continue in the
    next tile); padding with a ring of non-ice protects non-ice regions on the border.
    """
    if min_px <= 1:
        return ice
    src = ice.astype("uint8")
    keep = sieve(np.pad(src, 1, constant_values=1), min_px, connectivity=4)[1:-1, 1:-1]
    fill = sieve(np.pad(src, 1, constant_values=0), min_px, connectivity=4)[1:-1, 1:-1]
    return (ice & (keep == 1)) | (~ice & (fill == 1))


def _fill_small_holes(poly: Polygon, min_area: float) -> Polygon:
    if min_area <= 0 or not poly.interiors:
        return poly
    keep = [r for r in poly.interiors if Polygon(r).area >= min_area]
    return Polygon(poly.exterior, keep)


def _check_inputs(mask: np.ndarray, prob: np.ndarray | None,
                  uncertainty: np.ndarray | None) -> None:
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (the tile core), got shape {mask.shape}")
    for name, arr in (("prob", prob), ("uncertainty", uncertainty)):
        if arr is not None and arr.shape != mask.shape:
            raise ValueError(f"{name} has shape {arr.shape} but mask has {mask.shape}; "
                             "pass the tile core of every band")
    bad = set(np.unique(mask).tolist()) - {0, 1, 255}
    if bad:
        raise ValueError(f"mask values must be 1 (glacier), 0 (not glacier) or 255 (no data), "
                         f"found {sorted(bad)[:5]}")


def vectorize_tile(mask: np.ndarray, prob: np.ndarray | None, *, transform: Affine, crs: str,
                   tile_id: str, uncertainty: np.ndarray | None = None,
                   min_area_m2: float = 5000.0, simplify_px: float = 0.5) -> gpd.GeoDataFrame:
    """Polygons of the glacier pixels of a tile core, in the tile CRS.

    ``mask`` is uint8 (1 glacier, 0 not, 255 no data), ``prob`` and ``uncertainty`` float 0..1
    (NaN = no data), all the tile *core*. Polygons are 4-connected regions, simplified at
    ``simplify_px`` pixels with the core border fixed; regions smaller than ``min_area_m2`` are
    dropped unless they touch the core border (they may be the tip of a glacier in the next tile:
    ``merge_tiles`` drops what is still small after merging), and holes smaller than it filled.

    Columns: tile_id, mean_prob, mean_uncertainty, touches_edge, area_m2 (pixel area),
    area_lo_m2 / area_hi_m2 (pixel area at the lower / upper probability bound: prob -/+
    uncertainty, or -/+ 0.25 without an uncertainty band, against 0.5), res_m, geometry.
    """
    mask = np.asarray(mask)
    _check_inputs(mask, prob, uncertainty)
    res = math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
    px_area = res * res
    min_px = math.ceil(min_area_m2 / px_area) if min_area_m2 > 0 else 0
    ice = _sieve(mask == 1, min_px)
    if not ice.any():
        return empty_outlines(crs)
    # The cleaned mask drives the outlines: ice specks gone, small holes filled.
    mask = np.where(ice, 1, np.where(mask == 1, 0, mask)).astype("uint8")
    raw, simplified = _coverage(mask, transform, 2.0 * simplify_px * res)
    n = len(raw)
    # Pixel-exact polygons rasterize back to exactly their pixels (centres inside).
    labels = rasterize(((p, i + 1) for i, p in enumerate(raw)), out_shape=mask.shape,
                       transform=transform, fill=0, dtype="int32")
    flat = labels[ice]
    count = np.bincount(flat, minlength=n + 1)[1:].astype("float64")

    def mean_of(arr: np.ndarray | None) -> np.ndarray:
        if arr is None:
            return np.full(n, np.nan)
        vals = np.asarray(arr, dtype="float64")[ice]
        ok = np.isfinite(vals)
        s = np.bincount(flat[ok], weights=vals[ok], minlength=n + 1)[1:]
        c = np.bincount(flat[ok], minlength=n + 1)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    mean_prob, mean_unc = mean_of(prob), mean_of(uncertainty)
    lo, hi = _area_bounds(ice, mask != 255, labels, count, prob, uncertainty, transform, min_px)

    h, w = mask.shape
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (w, h)
    core = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    rows = []
    for i, (poly, rp) in enumerate(zip(simplified, raw, strict=True)):
        b = rp.bounds
        edge = b[0] <= core[0] or b[1] <= core[1] or b[2] >= core[2] or b[3] >= core[3]
        if not edge and count[i] * px_area < min_area_m2:
            continue
        geom = _fill_small_holes(poly, min_area_m2)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        rows.append({"tile_id": tile_id, "mean_prob": mean_prob[i],
                     "mean_uncertainty": mean_unc[i], "touches_edge": edge,
                     "area_m2": count[i] * px_area, "area_lo_m2": lo[i] * px_area,
                     "area_hi_m2": hi[i] * px_area, "res_m": res, "geometry": geom})
    if not rows:
        return empty_outlines(crs)
    return gpd.GeoDataFrame(rows, columns=OUTLINE_COLUMNS, geometry="geometry", crs=crs)


def _coverage(mask: np.ndarray, transform: Affine,
              tol: float) -> tuple[list[Polygon], list[Polygon]]:
    """Raw and simplified ice polygons, simplified as part of the full-core coverage.

    The coverage holds every region (ice, not ice, no data), so shared edges stay shared and,
    with ``simplify_boundary=False``, the core border and its vertices stay exactly in place.
    """
    classes = np.where(mask == 1, 1, np.where(mask == 255, 2, 0)).astype("uint8")
    polys, values = [], []
    for g, v in shapes(classes, connectivity=4, transform=transform):
        polys.append(shp_shape(g))
        values.append(int(v))
    arr = np.empty(len(polys), dtype=object)
    arr[:] = polys
    simp = shapely.coverage_simplify(arr, tol, simplify_boundary=False) if tol > 0 else arr
    keep = [i for i, v in enumerate(values) if v == 1]
    return [polys[i] for i in keep], [simp[i] for i in keep]


def _area_bounds(ice: np.ndarray, valid: np.ndarray, labels: np.ndarray, count: np.ndarray,
                 prob: np.ndarray | None, unc: np.ndarray | None,
                 transform: Affine, min_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts per region at the lower and upper probability bound."""
    n = len(count)
    if prob is None:
        return count.copy(), count.copy()
    p = np.asarray(prob, dtype="float64")
    margin = (np.nan_to_num(np.asarray(unc, dtype="float64"), nan=DEFAULT_PROB_MARGIN)
              if unc is not None else DEFAULT_PROB_MARGIN)
    finite = np.isfinite(p)
    sure = ice & finite & (p - margin >= 0.5)
    lo = np.bincount(labels[sure], minlength=n + 1)[1:].astype("float64")
    lo += np.bincount(labels[ice & ~finite], minlength=n + 1)[1:]  # no prob: keep the mask's call
    maybe = ice | (valid & finite & (p + margin >= 0.5))
    # Specks of "maybe" away from the border hold no ice region (those were sieved): drop them.
    if min_px > 1:
        maybe = ice | (sieve(np.pad(maybe.astype("uint8"), 1, constant_values=1), min_px,
                             connectivity=4)[1:-1, 1:-1] == 1)
    hlab, _ = _labels(maybe, transform)
    # Each ice region lies in exactly one "maybe" region; the extra pixels of a maybe region are
    # shared among the ice regions it contains in proportion to their size.
    h_of = np.zeros(n + 1, dtype="int64")
    h_of[labels[ice]] = hlab[ice]
    h_of = h_of[1:]
    size_h = np.bincount(hlab.ravel(), minlength=int(hlab.max()) + 1).astype("float64")
    ice_in_h = np.bincount(h_of, weights=count, minlength=len(size_h))
    extra = size_h[h_of] - ice_in_h[h_of]
    hi = count + extra * count / np.maximum(ice_in_h[h_of], 1.0)
    return lo, hi

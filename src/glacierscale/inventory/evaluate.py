"""Accuracy of predicted outlines against reference outlines over the area actually mapped."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

_MAX_PIXELS = 200_000_000


def _burn(geoms: list[BaseGeometry], shape: tuple[int, int], transform: Affine) -> np.ndarray:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, dtype=bool)
    return rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform, fill=0,
                     dtype="uint8").astype(bool)


def evaluate(predicted: gpd.GeoDataFrame, reference: gpd.GeoDataFrame, valid_area: BaseGeometry,
             *, crs: str, resolution: float = 10.0, ring_m: float = 500.0) -> dict[str, float]:
    """Pixel metrics of ``predicted`` against ``reference`` inside ``valid_area`` (in ``crs``).

    Both are rasterized at ``resolution`` (metres, ``crs`` must be projected) over the valid
    area. Returns iou, precision, recall, f1 (pixel counts); recall_in_reference (the share of
    the reference polygons' area covered by predicted polygons, exact vector overlay);
    fp_fraction_ring (share of the ring of ``ring_m`` just outside the reference predicted as
    ice: false alarms where they matter, next to glaciers); ice_fraction_pred / _ref.
    """
    if valid_area is None or valid_area.is_empty:
        raise ValueError("valid_area is empty: nothing was mapped to evaluate against")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    pred = predicted.to_crs(crs) if predicted.crs is not None and len(predicted) else predicted
    ref = reference.to_crs(crs) if reference.crs is not None and len(reference) else reference
    if gpd.GeoSeries([valid_area], crs=crs).crs.is_geographic:
        raise ValueError(f"{crs} is geographic; evaluate in a projected CRS (e.g. the UTM zone)")
    minx, miny, maxx, maxy = valid_area.bounds
    width = max(1, math.ceil((maxx - minx) / resolution))
    height = max(1, math.ceil((maxy - miny) / resolution))
    if width * height > _MAX_PIXELS:
        raise ValueError(f"{width}x{height} pixels at {resolution} m is too large to evaluate; "
                         "use a coarser resolution")
    transform = Affine(resolution, 0.0, minx, 0.0, -resolution, maxy)
    shape = (height, width)
    valid = _burn([valid_area], shape, transform)
    pgeoms = list(pred.geometry) if len(pred) else []
    rgeoms = list(ref.geometry) if len(ref) else []
    p = _burn(pgeoms, shape, transform) & valid
    r = _burn(rgeoms, shape, transform) & valid
    tp = float((p & r).sum())
    fp = float((p & ~r).sum())
    fn = float((~p & r).sum())
    nan = float("nan")
    iou = tp / (tp + fp + fn) if tp + fp + fn else nan
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else nan
    ring = np.zeros(shape, dtype=bool)
    if rgeoms and ring_m > 0:
        ring_geom = ref.geometry.buffer(ring_m).union_all().difference(ref.geometry.union_all())
        ring = _burn([ring_geom], shape, transform) & valid & ~r
    fp_ring = float((p & ring).sum() / ring.sum()) if ring.any() else nan
    recall_ref = nan
    if rgeoms:
        ref_in = ref.geometry.union_all().intersection(valid_area)
        if ref_in.area > 0:
            pred_u = pred.geometry.union_all() if pgeoms else None
            covered = ref_in.intersection(pred_u).area if pred_u is not None else 0.0
            recall_ref = covered / ref_in.area
    n_valid = float(valid.sum())
    return {"iou": iou, "precision": precision, "recall": recall, "f1": f1,
            "recall_in_reference": recall_ref, "fp_fraction_ring": fp_ring,
            "ice_fraction_pred": float(p.sum()) / n_valid if n_valid else nan,
            "ice_fraction_ref": float(r.sum()) / n_valid if n_valid else nan}

"""evaluate: pixel metrics with known answers on generated squares."""

from __future__ import annotations

import math

import geopandas as gpd
import pytest
from shapely.geometry import box

from glacierscale.inventory import evaluate

CRS = "EPSG:32611"
X0, Y0 = 600_000.0, 5_800_000.0


def _gdf(*boxes: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=[box(X0 + a, Y0 + b, X0 + c, Y0 + d)
                                      for a, b, c, d in boxes], crs=CRS)


def test_known_overlap() -> None:
    ref = _gdf((1000, 1000, 2000, 2000))  # 1 km²
    pred = _gdf((1000, 1000, 2000, 1500), (2000, 1000, 2200, 1500))  # half of it + 0.1 km² beside
    valid = box(X0, Y0, X0 + 4000, Y0 + 4000)
    m = evaluate(pred, ref, valid, crs=CRS, resolution=10.0, ring_m=500.0)
    tp, fp, fn = 0.5, 0.1, 0.5
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["recall_in_reference"] == pytest.approx(0.5)
    ring = (2000 * 2000 - 500 * 500 * (4 - math.pi)) / 1e6 - 1.0  # rounded-corner 500 m ring
    assert m["fp_fraction_ring"] == pytest.approx(0.1 / ring, rel=0.02)
    assert m["ice_fraction_pred"] == pytest.approx(0.6 / 16)
    assert m["ice_fraction_ref"] == pytest.approx(1.0 / 16)


def test_only_the_valid_area_counts() -> None:
    ref = _gdf((0, 0, 1000, 1000))
    pred = _gdf((0, 0, 1000, 1000), (3000, 3000, 3500, 3500))
    valid = box(X0, Y0, X0 + 2000, Y0 + 2000)  # the false alarm lies outside: not counted
    m = evaluate(pred, ref, valid, crs=CRS, resolution=20.0)
    assert m["iou"] == pytest.approx(1.0) and m["precision"] == pytest.approx(1.0)
    assert m["fp_fraction_ring"] == 0.0


def test_empty_prediction_and_other_crs() -> None:
    ref = _gdf((0, 0, 1000, 1000)).to_crs(4326)  # reprojected on the way in
    pred = gpd.GeoDataFrame(geometry=[], crs=CRS)
    m = evaluate(pred, ref, box(X0, Y0, X0 + 2000, Y0 + 2000), crs=CRS, resolution=20.0)
    assert m["recall"] == 0.0 and m["iou"] == 0.0 and math.isnan(m["precision"])
    assert m["recall_in_reference"] == 0.0 and m["ice_fraction_pred"] == 0.0


def test_bad_arguments() -> None:
    ref = _gdf((0, 0, 10, 10))
    with pytest.raises(ValueError, match="valid_area is empty"):
        evaluate(ref, ref, box(0, 0, 0, 0).buffer(0), crs=CRS)
    with pytest.raises(ValueError, match="geographic"):
        evaluate(ref, ref, box(0, 0, 1, 1), crs="EPSG:4326")
    with pytest.raises(ValueError, match="too large"):
        evaluate(ref, ref, box(X0, Y0, X0 + 1e6, Y0 + 1e6), crs=CRS, resolution=0.05)

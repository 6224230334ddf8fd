"""vectorize_tile on tiny generated masks: polygons, statistics, edges, specks, holes, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from glacierscale.inventory import vectorize_tile

RES = 10.0
T = Affine(RES, 0.0, 500_000.0, 0.0, -RES, 6_000_000.0)
PX = RES * RES


def _vec(mask: np.ndarray, prob: np.ndarray | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return vectorize_tile(mask.astype("uint8"), prob, transform=T, crs="EPSG:32611",
                          tile_id="32611_0001_0002", **kw)  # type: ignore[arg-type]


def test_two_glaciers_with_statistics() -> None:
    mask = np.zeros((100, 100), "uint8")
    mask[10:40, 10:50] = 1  # 1200 px, interior
    mask[60:100, 60:100] = 1  # 1600 px, touches the bottom and right edges
    prob = np.where(mask == 1, 0.9, 0.1).astype("float32")
    prob[10:20, 10:50] = 0.7
    unc = np.full(mask.shape, 0.05, "float32")
    g = _vec(mask, prob, uncertainty=unc, min_area_m2=1000.0).sort_values("area_m2")
    assert len(g) == 2 and g.crs.to_epsg() == 32611
    small, big = g.iloc[0], g.iloc[1]
    assert small.area_m2 == 1200 * PX and big.area_m2 == 1600 * PX
    assert not small.touches_edge and big.touches_edge
    assert small.mean_prob == pytest.approx((400 * 0.7 + 800 * 0.9) / 1200)
    assert small.mean_uncertainty == pytest.approx(0.05)
    # Rectangles survive simplification unchanged.
    assert small.geometry.area == pytest.approx(1200 * PX)
    assert small.geometry.bounds == (500_100.0, 5_999_600.0, 500_500.0, 5_999_900.0)
    assert set(g.tile_id) == {"32611_0001_0002"} and (g.res_m == RES).all()


def test_area_bounds_from_probability_and_uncertainty() -> None:
    mask = np.zeros((60, 60), "uint8")
    mask[10:30, 10:30] = 1
    prob = np.full(mask.shape, 0.0, "float32")
    prob[10:30, 10:30] = 0.9
    prob[10:20, 10:30] = 0.6  # ice, but not sure ice (0.6 - 0.25 < 0.5)
    prob[30:35, 10:30] = 0.4  # not ice, but maybe (0.4 + 0.25 >= 0.5), attached to the glacier
    prob[50:55, 50:55] = 0.4  # maybe-ice with no glacier: not counted anywhere
    g = _vec(mask, prob, min_area_m2=0.0)
    assert len(g) == 1
    assert g.iloc[0].area_m2 == 400 * PX
    assert g.iloc[0].area_lo_m2 == 200 * PX
    assert g.iloc[0].area_hi_m2 == 500 * PX
    # A model-given uncertainty replaces the default margin.
    g2 = _vec(mask, prob, uncertainty=np.full(mask.shape, 0.05, "float32"), min_area_m2=0.0)
    assert g2.iloc[0].area_lo_m2 == 400 * PX and g2.iloc[0].area_hi_m2 == 400 * PX


def test_specks_dropped_holes_filled_but_border_pieces_kept() -> None:
    mask = np.zeros((80, 80), "uint8")
    mask[20:60, 20:60] = 1
    mask[30:32, 30:32] = 0  # 4 px hole: filled
    mask[40:50, 40:50] = 0  # 100 px hole (nunatak): kept
    mask[5:7, 5:7] = 1  # 4 px speck: dropped
    mask[0:2, 70:72] = 1  # 4 px on the border: kept, may continue in the next tile
    g = _vec(mask, None, min_area_m2=50 * PX)
    assert len(g) == 2
    body = g.loc[g.area_m2.idxmax()]
    assert len(body.geometry.interiors) == 1
    assert body.geometry.area == pytest.approx((1600 - 100) * PX)
    border = g.loc[g.area_m2.idxmin()]
    assert border.touches_edge and border.area_m2 == 4 * PX


def test_nodata_and_nan_probability() -> None:
    mask = np.full((40, 40), 255, "uint8")
    mask[5:35, 5:35] = 0
    mask[10:30, 10:30] = 1
    prob = np.where(mask == 1, 0.8, np.nan).astype("float32")
    prob[10:12, 10:30] = np.nan  # ice by the mask, probability unknown
    g = _vec(mask, prob, min_area_m2=0.0)
    assert len(g) == 1 and not g.iloc[0].touches_edge
    assert g.iloc[0].mean_prob == pytest.approx(0.8)
    assert np.isnan(g.iloc[0].mean_uncertainty)


def test_staircase_is_simplified_at_pixel_scale() -> None:
    yy, xx = np.mgrid[:200, :200]
    mask = (np.hypot(yy - 100, xx - 100) < 70).astype("uint8")
    raw = _vec(mask, None, simplify_px=0.0, min_area_m2=0.0).geometry.iloc[0]
    simp = _vec(mask, None, simplify_px=0.5, min_area_m2=0.0).geometry.iloc[0]
    assert len(simp.exterior.coords) < 0.6 * len(raw.exterior.coords)
    assert raw.area == mask.sum() * PX
    assert abs(simp.area - raw.area) / raw.area < 0.01
    assert raw.symmetric_difference(simp).area / raw.area < 0.02


def test_empty_and_full_tiles() -> None:
    empty = _vec(np.zeros((32, 32)), None)
    assert len(empty) == 0 and list(empty.columns)[:4] == ["tile_id", "mean_prob",
                                                           "mean_uncertainty", "touches_edge"]
    full = _vec(np.ones((32, 32)), None)
    assert len(full) == 1 and full.iloc[0].touches_edge
    assert full.geometry.iloc[0].equals(
        __import__("shapely").box(500_000.0, 6_000_000.0 - 320, 500_320.0, 6_000_000.0))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="must be 2-D"):
        _vec(np.zeros((2, 8, 8)), None)
    with pytest.raises(ValueError, match="pass the tile core"):
        _vec(np.zeros((8, 8)), np.zeros((9, 9), "float32"))
    with pytest.raises(ValueError, match="mask values must be"):
        _vec(np.full((8, 8), 7), None)

"""attach_rgi, missing_reference and region_summary on small generated outlines."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, box

from glacierscale.inventory import (
    attach_rgi,
    merge_tiles,
    missing_reference,
    parse_rgi_date,
    region_summary,
    vectorize_tile,
)

UTM = "EPSG:32645"
X0, Y0 = 500_000.0, 3_100_000.0  # near the central meridian of zone 45, Everest's latitude


def _ref(boxes: dict[str, tuple[float, float, float, float]],
         dates: dict[str, str] | None = None) -> gpd.GeoDataFrame:
    ids = list(boxes)
    return gpd.GeoDataFrame(
        {"RGIId": ids, "BgnDate": [(dates or {}).get(i, "20000101") for i in ids],
         "O1Region": ["15"] * len(ids), "Name": [f"glacier {i[-1]}" for i in ids]},
        geometry=[box(X0 + a, Y0 + b, X0 + c, Y0 + d) for a, b, c, d in boxes.values()],
        crs=UTM)


def _inventory(*geoms_local: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """An inventory as merge_tiles would give it, from boxes in local metres."""
    res = 10.0
    frames = []
    for k, (a, b, c, d) in enumerate(geoms_local):
        w, h = int((c - a) / res), int((d - b) / res)
        from affine import Affine

        t = Affine(res, 0, X0 + a, 0, -res, Y0 + d)
        frames.append(vectorize_tile(np.ones((h, w), "uint8"), np.full((h, w), 0.9, "float32"),
                                     transform=t, crs=UTM, tile_id=f"t{k}"))
    return merge_tiles(frames)


def test_pieces_follow_divides_advances_and_new_ice() -> None:
    ref = _ref({"RGI60-15.00001": (0, 0, 1000, 1000), "RGI60-15.00002": (1000, 0, 2000, 1000)})
    # Both glaciers advanced by 100 m all round; plus separate ice 1 km away.
    inv = _inventory((-100, -100, 2100, 1100), (3000, 0, 3500, 500))
    out = attach_rgi(inv, ref, date_pred=date(2020, 1, 1), date_ref=None)
    assert len(out) == 3 and out.crs.to_epsg() == 4326
    a, b, new = (out.set_index("rgi_id").loc[k] for k in
                 ("RGI60-15.00001", "RGI60-15.00002", out.loc[out.is_new, "rgi_id"].iloc[0]))
    # The divide x = 1000 is extended through the advance: 1100 m x 1200 m each.
    assert a.area_km2 == pytest.approx(1.32, rel=2e-3)
    assert b.area_km2 == pytest.approx(1.32, rel=2e-3)
    assert a.ref_area_km2 == pytest.approx(1.0, rel=2e-3)
    assert a.area_change_km2 == pytest.approx(0.32, rel=1e-2)
    years = (date(2020, 1, 1) - date(2000, 1, 1)).days / 365.25
    assert a.area_change_pct_per_yr == pytest.approx(100 * a.area_change_km2 / a.ref_area_km2
                                                     / years)
    assert a["name"] == "glacier 1" and a.region == "15" and not a.is_new
    utm = out.to_crs(UTM).set_index("rgi_id")
    assert utm.loc["RGI60-15.00001"].geometry.bounds[2] == pytest.approx(X0 + 1000, abs=0.5)
    assert new.is_new and new.ref_area_km2 == 0.0 and np.isnan(new.area_change_pct_per_yr)
    new_id = out.loc[out.is_new, "rgi_id"].iloc[0]
    assert new_id == "NEW-" + out.loc[out.is_new, "glacier_id"].iloc[0]
    assert new_id.startswith("NEW-G") and new.area_km2 == pytest.approx(0.25, rel=2e-3)
    assert new.region == "15"  # region of the nearest reference glacier
    assert out.rgi_id.is_unique


def test_divide_lines_cut_the_ice_where_outlines_leave_a_gap() -> None:
    # A gap of 20 m between the two outlines; the RGI divide line is at x = 995.
    ref = _ref({"RGI60-15.00001": (0, 0, 990, 1000), "RGI60-15.00002": (1010, 0, 2000, 1000)})
    inv = _inventory((0, 0, 2000, 1000))
    divide = gpd.GeoDataFrame({"RGIId_1": ["RGI60-15.00001"], "RGIId_2": ["RGI60-15.00002"]},
                              geometry=[LineString([(X0 + 995, Y0), (X0 + 995, Y0 + 1000)])],
                              crs=UTM)
    plain = attach_rgi(inv, ref, date_pred=None, date_ref=None).to_crs(UTM).set_index("rgi_id")
    cut = attach_rgi(inv, ref, date_pred=None, date_ref=None, intersects=divide).to_crs(UTM)
    cut = cut.set_index("rgi_id")
    # Without the line the gap is shared at its middle; with it, at the line.
    assert plain.loc["RGI60-15.00001"].geometry.bounds[2] == pytest.approx(X0 + 1000, abs=0.5)
    assert cut.loc["RGI60-15.00001"].geometry.bounds[2] == pytest.approx(X0 + 995, abs=0.5)
    assert np.isnan(cut.loc["RGI60-15.00001"].area_change_pct_per_yr)  # no prediction date


def test_dates_come_from_the_reference_unless_given() -> None:
    ref = _ref({"RGI60-15.00001": (0, 0, 1000, 1000)}, dates={"RGI60-15.00001": "19990999"})
    inv = _inventory((0, 0, 500, 1000))
    out = attach_rgi(inv, ref, date_pred=date(2019, 9, 1), date_ref=None)
    assert out.iloc[0].date_ref == date(1999, 9, 1)
    assert out.iloc[0].area_change_pct_per_yr == pytest.approx(-50.0 / 20.0, rel=3e-3)
    out = attach_rgi(inv, ref, date_pred=date(2019, 9, 1), date_ref=date(2009, 9, 1))
    assert out.iloc[0].area_change_pct_per_yr == pytest.approx(-50.0 / 10.0, rel=3e-3)


def test_parse_rgi_dates() -> None:
    assert parse_rgi_date("20001030") == date(2000, 10, 30)
    assert parse_rgi_date("20009999") == date(2000, 7, 1)
    assert parse_rgi_date("20030799") == date(2003, 7, 1)
    assert parse_rgi_date("-9999999") is None
    assert parse_rgi_date("2015-08-20T00:00:00") == date(2015, 8, 20)
    assert parse_rgi_date(None) is None


def test_vanished_glaciers_inside_the_mapped_area_are_listed() -> None:
    ref = _ref({"RGI60-15.00001": (0, 0, 1000, 1000), "RGI60-15.00003": (3000, 0, 3200, 200),
                "RGI60-15.00004": (5900, 0, 6500, 500)})
    inv = _inventory((0, 0, 1000, 1000))
    out = attach_rgi(inv, ref, date_pred=date(2020, 1, 1), date_ref=None)
    mapped = gpd.GeoSeries([box(X0 - 100, Y0 - 100, X0 + 6000, Y0 + 1100)], crs=UTM)
    full = missing_reference(out, ref, mapped.to_crs(4326).iloc[0], date_pred=date(2020, 1, 1))
    assert list(full.rgi_id) == ["RGI60-15.00001", "RGI60-15.00003"]  # 00004 is cut by the edge
    gone = full.set_index("rgi_id").loc["RGI60-15.00003"]
    assert gone.area_km2 == 0.0 and gone.ref_area_km2 == pytest.approx(0.04, rel=2e-3)
    assert gone.area_change_pct_per_yr == pytest.approx(-100.0 / 20.0, rel=1e-3)
    summary = region_summary(full)
    total = summary.set_index("region").loc["total"]
    assert total.n_glaciers == 2 and total.n_vanished == 1 and total.n_new == 0
    assert total.ref_area_km2 == pytest.approx(1.04, rel=2e-3)
    assert total.area_change_pct == pytest.approx(100 * (1.0 - 1.04) / 1.04, rel=1e-2)
    assert list(summary.region) == ["15", "total"]


def test_bad_references_are_refused() -> None:
    inv = _inventory((0, 0, 500, 500))
    dup = _ref({"RGI60-15.00001": (0, 0, 100, 100)})
    dup = pd.concat([dup, dup], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate RGI ids"):
        attach_rgi(inv, gpd.GeoDataFrame(dup, crs=UTM), date_pred=None, date_ref=None)
    with pytest.raises(ValueError, match="no RGI id column"):
        attach_rgi(inv, _ref({"a": (0, 0, 9, 9)}).rename(columns={"RGIId": "id"}),
                   date_pred=None, date_ref=None)


def test_empty_inventory() -> None:
    out = attach_rgi(merge_tiles([]), _ref({"RGI60-15.00001": (0, 0, 9, 9)}), date_pred=None,
                     date_ref=None)
    assert len(out) == 0 and "area_change_pct_per_yr" in out.columns
    assert region_summary(out).empty

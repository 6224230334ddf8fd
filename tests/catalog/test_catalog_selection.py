"""Scene selection: season windows per latitude, cloud filter, snow-aware ranking, records."""

from __future__ import annotations

from datetime import date, datetime

import pystac
import pytest
from hypothesis import given
from hypothesis import strategies as st

from glacierscale.catalog import SeasonWindow, season_dates, season_window, select_scenes

BOX = (-117.32, 52.15, -117.23, 52.21)  # Athabasca


def _item(item_id: str, when: datetime, coll: str = "sentinel-2-l2a", cloud: float | None = 10.0,
          bbox: tuple[float, float, float, float] = (-117.4, 52.1, -117.1, 52.3),
          **props: float) -> pystac.Item:
    w, s, e, n = bbox
    geom = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    p = dict(props) | ({"eo:cloud_cover": cloud} if cloud is not None else {})
    return pystac.Item(item_id, geom, list(bbox), when, p, collection=coll)


def test_windows_by_hemisphere_and_latitude() -> None:
    assert season_window(52.2) == SeasonWindow((8, 1), (10, 15))
    assert season_window(78.0) == SeasonWindow((7, 15), (9, 30))  # Svalbard: earlier snow
    assert season_window(-46.0) == SeasonWindow((2, 1), (4, 30))  # Patagonia
    assert season_window(-9.0) == SeasonWindow((5, 1), (9, 30))  # tropical Andes, dry season
    assert season_dates(52.2, 2020) == (date(2020, 8, 1), date(2020, 10, 15))
    # A window across the new year ends in the given year.
    assert season_dates(10.0, 2021) == (date(2020, 12, 1), date(2021, 3, 31))


@given(st.dates(date(1990, 1, 1), date(2030, 12, 31)))
def test_wrapping_window_contains_its_dates(d: date) -> None:
    w = SeasonWindow((12, 1), (3, 31))
    lo, hi = w.dates(w.season_year(d))
    assert w.contains(d) == (lo <= d <= hi)


def test_season_window_cloud_filter_and_ranking_with_reasons() -> None:
    items = [
        _item("july", datetime(2020, 7, 10, 19), cloud=0.0),
        _item("aug-cloudy", datetime(2020, 8, 20, 19), cloud=90.0),
        _item("aug", datetime(2020, 8, 25, 19), cloud=20.0),
        _item("sep", datetime(2020, 9, 11, 19), cloud=5.0),
        _item("sep-snowy", datetime(2020, 9, 20, 19), cloud=4.0),
        _item("oct", datetime(2020, 10, 1, 19), cloud=12.0),
        _item("old-year", datetime(2019, 9, 1, 19), cloud=0.0),
        _item("dem", datetime(2021, 4, 22), coll="cop-dem-glo-30", cloud=None),
    ]
    snow = {"sep-snowy": 0.40, "sep": 0.02, "aug": 0.01, "oct": 0.05}
    sel = select_scenes(items, bbox=BOX, snow_fraction=snow, max_scenes=2)
    assert sel.window == (date(2020, 8, 1), date(2020, 10, 15))
    assert "latitude 52.2" in sel.window_source and "latest year" in sel.window_source
    assert sel.item_ids == ["sep", "oct"]
    by_id = {a.item_ids[0]: a for a in sel.acquisitions}
    assert by_id["july"].reason.startswith("outside window")
    assert by_id["old-year"].reason.startswith("outside window")
    assert by_id["aug-cloudy"].reason == "cloud cover 90.0% > 80%"
    assert "only the best 2" in by_id["sep-snowy"].reason  # 4% cloud but 40% snow outside ice
    assert by_id["sep"].snow_source == "ndsi-outside-glaciers" and by_id["sep"].chosen
    assert "dem" not in by_id
    report = sel.report()
    assert report["chosen"] == ["sep", "oct"] and report["acquisitions"][0]["chosen"]
    # An explicit window overrides the season.
    july = select_scenes(items, bbox=BOX, start=date(2020, 7, 1), end=date(2020, 7, 31))
    assert july.item_ids == ["july"] and july.window_source == "explicit start/end"
    # The south: a February scene wins over an August one.
    south = [_item("feb", datetime(2021, 2, 20, 15), bbox=(-73.6, -46.6, -73.4, -46.4)),
             _item("aug", datetime(2020, 8, 20, 15), bbox=(-73.6, -46.6, -73.4, -46.4))]
    assert select_scenes(south, bbox=(-73.55, -46.55, -73.45, -46.45)).item_ids == ["feb"]


def test_granules_of_one_overpass_are_chosen_together() -> None:
    west = _item("T11UMU", datetime(2020, 9, 11, 19, 0), bbox=(-117.5, 52.0, -117.28, 52.4))
    east = _item("T11UNU", datetime(2020, 9, 11, 19, 0), bbox=(-117.28, 52.0, -117.0, 52.4))
    partial = _item("other", datetime(2020, 9, 14, 19), cloud=1.0,
                    bbox=(-117.28, 52.0, -117.0, 52.4))
    sel = select_scenes([west, east, partial], bbox=BOX, max_scenes=1)
    assert sel.item_ids == ["T11UMU", "T11UNU"]
    acq = sel.acquisitions[0]
    assert acq.coverage == pytest.approx(1.0) and acq.item_ids == ("T11UMU", "T11UNU")
    other = next(a for a in sel.acquisitions if a.item_ids == ("other",))
    assert 0.4 < other.coverage < 0.7 and not other.chosen


def test_unknown_cloud_and_snow_are_recorded_not_guessed_silently() -> None:
    items = [_item("hls", datetime(2020, 9, 9, 19), coll="HLSS30_2.0", cloud=None),
             _item("s2", datetime(2020, 9, 11, 19), cloud=None, **{"s2:snow_ice_percentage": 30})]
    sel = select_scenes(items, bbox=BOX)
    assert set(sel.item_ids) == {"hls", "s2"}
    reasons = {a.item_ids[0]: a for a in sel.acquisitions}
    assert "cloud cover unknown" in reasons["hls"].reason
    assert "snow unknown" in reasons["hls"].reason
    assert reasons["s2"].snow_source == "scene-snow-ice-percentage"
    with pytest.raises(ValueError, match="max_scenes"):
        select_scenes(items, max_scenes=0)

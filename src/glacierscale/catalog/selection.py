"""Scene selection per tile: end-of-ablation-season window, cloud filter, and a snow-aware ranking.

Glaciers are mapped from the end of the melt season, when seasonal snow outside glaciers is at its
minimum (the review's and DL4GAM's advice). The window depends on hemisphere and latitude
(:data:`DEFAULT_SEASONS`, configurable); explicit start/end dates override it.

Scenes are ranked as *acquisitions*: the items of one collection on one solar day (granules of
one overpass split across MGRS tiles, WRS rows or UTM zones) are chosen or rejected together, so a
chosen acquisition covers the tile as far as the overpass does. Lower score is better::

    score = cloud % + snow_weight * snow % + 100 * (1 - tile coverage) + up to 10 for earliness

``snow %`` is the pixel evidence of seasonal snow outside glacier outlines (NDSI > 0.4, from
:func:`glacierscale.load.scene_snow_fraction`) when given, else the scene's own snow/ice
percentage (``s2:snow_ice_percentage``, which also counts glacier ice, so only half weighted),
else unknown (0, and the record says so). Every acquisition gets a record of why it was chosen
or rejected.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import pystac

from glacierscale.catalog.geometry import coverage, item_footprint

MonthDay = tuple[int, int]


@dataclass(frozen=True)
class SeasonWindow:
    """A yearly window of month/day bounds (inclusive); may wrap the new year (Dec..Mar)."""

    start: MonthDay
    end: MonthDay

    def contains(self, d: date) -> bool:
        md = (d.month, d.day)
        if self.start <= self.end:
            return self.start <= md <= self.end
        return md >= self.start or md <= self.end

    def dates(self, year: int) -> tuple[date, date]:
        """The window that ends in ``year`` (a wrapping window starts the year before)."""
        start_year = year if self.start <= self.end else year - 1
        return date(start_year, *self.start), date(year, *self.end)

    def season_year(self, d: date) -> int:
        """The year of the window end that ``d`` belongs to."""
        return d.year + 1 if self.start > self.end and (d.month, d.day) >= self.start else d.year


@dataclass(frozen=True)
class SeasonBand:
    """The window for latitudes in ``[lat_min, lat_max)``."""

    lat_min: float
    lat_max: float
    window: SeasonWindow


#: End of the ablation season by latitude band. North: Aug to mid-Oct (earlier in the Arctic,
#: where autumn snow comes in September); south: Feb to Apr (mid-Jan to mid-Mar near
#: Antarctica); tropics: the dry season (Dec-Mar north of the equator, May-Sep in the
#: tropical Andes), when clouds are fewest and the snow line highest.
DEFAULT_SEASONS: tuple[SeasonBand, ...] = (
    SeasonBand(60.0, 90.01, SeasonWindow((7, 15), (9, 30))),
    SeasonBand(20.0, 60.0, SeasonWindow((8, 1), (10, 15))),
    SeasonBand(0.0, 20.0, SeasonWindow((12, 1), (3, 31))),
    SeasonBand(-20.0, 0.0, SeasonWindow((5, 1), (9, 30))),
    SeasonBand(-60.0, -20.0, SeasonWindow((2, 1), (4, 30))),
    SeasonBand(-90.01, -60.0, SeasonWindow((1, 15), (3, 15))),
)


def season_window(lat: float, seasons: Sequence[SeasonBand] = DEFAULT_SEASONS) -> SeasonWindow:
    """The end-of-ablation window for a latitude."""
    for band in seasons:
        if band.lat_min <= lat < band.lat_max:
            return band.window
    raise ValueError(f"no season window covers latitude {lat}; extend the seasons table")


def season_dates(lat: float, year: int,
                 seasons: Sequence[SeasonBand] = DEFAULT_SEASONS) -> tuple[date, date]:
    """Start and end dates of the window ending in ``year`` at latitude ``lat``."""
    return season_window(lat, seasons).dates(year)


@dataclass(frozen=True)
class Acquisition:
    """One overpass (collection + solar day) and the verdict on it."""

    item_ids: tuple[str, ...]
    collection: str
    day: date
    cloud_cover: float | None
    snow_percent: float | None
    snow_source: str
    coverage: float
    score: float | None
    chosen: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["day"] = self.day.isoformat()
        d["item_ids"] = list(self.item_ids)
        return d


@dataclass(frozen=True)
class Selection:
    """Chosen items (best first, ready for ``load_tile``) and a record for every acquisition."""

    items: tuple[pystac.Item, ...]
    window: tuple[date, date] | None
    window_source: str
    latitude: float | None
    acquisitions: tuple[Acquisition, ...] = field(default=())

    @property
    def item_ids(self) -> list[str]:
        return [i.id for i in self.items]

    def report(self) -> dict[str, Any]:
        """JSON-ready account of what was chosen and why."""
        return {
            "window": [d.isoformat() for d in self.window] if self.window else None,
            "window_source": self.window_source,
            "latitude": self.latitude,
            "chosen": self.item_ids,
            "acquisitions": [a.as_dict() for a in self.acquisitions],
        }


def _solar_day(item: pystac.Item) -> date:
    when = item.datetime or pystac.utils.str_to_datetime(item.properties["start_datetime"])
    lon = 0.0
    if item.bbox:
        w, e = item.bbox[0], item.bbox[len(item.bbox) // 2]
        lon = (w + e) / 2.0 if w <= e else ((w + e + 360.0) / 2.0 + 180.0) % 360.0 - 180.0
    return (when + timedelta(hours=lon / 15.0)).date()


def _is_dem(item: pystac.Item) -> bool:
    coll = (item.collection_id or "").lower()
    return "dem" in coll.split("-") or coll.startswith(("cop-dem", "nasadem", "alos-dem"))


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _snow(group: Sequence[pystac.Item],
          snow_fraction: Mapping[str, float] | None) -> tuple[float | None, str, float]:
    """Snow percent, its source, and the weight it gets in the score."""
    if snow_fraction:
        vals = [100.0 * snow_fraction[i.id] for i in group
                if i.id in snow_fraction and not math.isnan(snow_fraction[i.id])]
        if vals:
            return _mean(vals), "ndsi-outside-glaciers", 1.0
    props = [float(i.properties["s2:snow_ice_percentage"]) for i in group
             if i.properties.get("s2:snow_ice_percentage") is not None]
    if props:
        return _mean(props), "scene-snow-ice-percentage", 0.5
    return None, "unknown", 0.0


def select_scenes(
    items: Sequence[pystac.Item],
    *,
    bbox: Sequence[float] | None = None,
    lat: float | None = None,
    start: date | None = None,
    end: date | None = None,
    year: int | None = None,
    seasons: Sequence[SeasonBand] = DEFAULT_SEASONS,
    max_cloud_cover: float = 80.0,
    max_scenes: int = 3,
    snow_fraction: Mapping[str, float] | None = None,
    snow_weight: float = 1.0,
) -> Selection:
    """Choose the best end-of-season acquisitions for a tile and record why.

    ``bbox`` (lon/lat W,S,E,N of the tile) gives the latitude and the coverage of each
    acquisition. Explicit ``start``/``end`` override the season window; otherwise the window for
    the latitude is used, in ``year`` or else the latest year that has candidates in season.
    ``snow_fraction`` maps item ids to the fraction of seasonal snow outside glaciers (0..1).
    """
    if max_scenes < 1:
        raise ValueError("max_scenes must be at least 1")
    optical = [i for i in items if not _is_dem(i)]
    if lat is None:
        if bbox is not None:
            lat = (bbox[1] + bbox[len(bbox) // 2 + 1]) / 2.0
        elif optical and all(i.bbox for i in optical):
            lat = statistics.median((i.bbox[1] + i.bbox[len(i.bbox) // 2 + 1]) / 2.0
                                    for i in optical if i.bbox)
    groups: dict[tuple[str, date], list[pystac.Item]] = {}
    for item in optical:
        groups.setdefault((item.collection_id or "", _solar_day(item)), []).append(item)

    window: tuple[date, date] | None
    if start is not None or end is not None:
        window = (start or date.min, end or date.max)
        source = "explicit start/end"
    elif lat is not None:
        sw = season_window(lat, seasons)
        years = sorted({sw.season_year(d) for _, d in groups if sw.contains(d)})
        chosen_year = year if year is not None else (years[-1] if years else date.today().year)
        window = sw.dates(chosen_year)
        source = (f"end of ablation season at latitude {lat:.1f} "
                  f"({sw.start[1]:02d}/{sw.start[0]:02d}-{sw.end[1]:02d}/{sw.end[0]:02d} dd/mm)"
                  + ("" if year is not None else ", latest year with scenes"))
    else:
        window, source = None, "no window: no dates and no latitude"

    records: list[Acquisition] = []
    candidates: list[tuple[float, Acquisition, list[pystac.Item]]] = []
    for (coll, day), group in sorted(groups.items(), key=lambda kv: kv[0][1]):
        clouds = [float(i.properties["eo:cloud_cover"]) for i in group
                  if i.properties.get("eo:cloud_cover") is not None]
        cloud = _mean(clouds)
        snow, snow_src, weight = _snow(group, snow_fraction)
        cov = (coverage([item_footprint(i.geometry, i.bbox) for i in group], bbox)
               if bbox is not None else 1.0)
        acq = Acquisition(tuple(i.id for i in group), coll, day, cloud, snow, snow_src,
                          round(cov, 4), score=None, chosen=False, reason="")
        reason = ""
        if window is not None and not (window[0] <= day <= window[1]):
            reason = f"outside window {window[0]}..{window[1]}"
        elif cloud is not None and cloud > max_cloud_cover:
            reason = f"cloud cover {cloud:.1f}% > {max_cloud_cover:.0f}%"
        elif cov <= 0.0:
            reason = "does not overlap the tile"
        if reason:
            records.append(replace(acq, reason=reason))
            continue
        late = 0.0
        if window is not None and window[1] > window[0] and window[1] != date.max:
            span = (window[1] - window[0]).days
            late = 10.0 * (window[1] - day).days / max(span, 1)
        score = ((cloud if cloud is not None else 50.0) + snow_weight * weight * (snow or 0.0)
                 + 100.0 * (1.0 - cov) + late)
        candidates.append((score, replace(acq, score=round(score, 2)), group))
    candidates.sort(key=lambda c: (c[0], c[1].day))
    chosen_items: list[pystac.Item] = []
    for rank, (score, acq, group) in enumerate(candidates):
        notes = [] if acq.cloud_cover is not None else ["cloud cover unknown (scored as 50%)"]
        if acq.snow_source == "unknown":
            notes.append("snow unknown")
        if rank < max_scenes:
            why = f"rank {rank + 1}: score {score:.1f} (cloud + snow + coverage + earliness)"
            chosen_items += group
        else:
            why = f"rank {rank + 1}: only the best {max_scenes} acquisitions are used"
        records.append(replace(acq, chosen=rank < max_scenes, reason="; ".join([why, *notes])))
    records.sort(key=lambda a: (not a.chosen, a.score if a.score is not None else math.inf,
                                a.day))
    return Selection(tuple(chosen_items), window, source, lat, tuple(records))

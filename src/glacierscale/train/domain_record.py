"""The training domain a trained model's card states (:mod:`glacierscale.models.domain`).

Taken from what training actually used, not from what it was asked for: the lon/lat box of the
tiles that held labels, the boxes kept out of the labels, the instruments, collections and months
of the scenes those tiles were loaded from, and the pixel size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glacierscale.models.domain import Domain, Region, sensor_family
from glacierscale.train.chips import Chip, ChipSource


def labelled_bbox(chips: Sequence[Chip]) -> tuple[float, float, float, float]:
    """Lon/lat box of the cores of the chips (the tiles that held labels)."""
    from pyproj import Transformer

    lons: list[float] = []
    lats: list[float] = []
    for c in chips:
        x0, y0, x1, y1 = c.tile.core_bounds
        to_ll = Transformer.from_crs(c.tile.crs, "EPSG:4326", always_xy=True)
        lo, la = to_ll.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
        lons += list(lo)
        lats += list(la)
    return (round(min(lons), 5), round(min(lats), 5), round(max(lons), 5), round(max(lats), 5))


def _items(source: ChipSource, bbox: tuple[float, float, float, float],
           ids: set[str]) -> list[Any]:
    from glacierscale.catalog import open_catalog

    found = open_catalog(source.catalog).search(bbox, source.start, source.end,
                                                source.collections)
    return [i for i in found if i.id in ids]


def training_domain(chips: Sequence[Chip], source: ChipSource, resolution_m: float, *,
                    region: str, excluded: Sequence[tuple[float, float, float, float]] = (),
                    notes: str = "") -> Domain:
    """The domain of a model trained on ``chips`` loaded from ``source`` at ``resolution_m``.

    ``region`` names the labelled area; ``excluded`` are lon/lat boxes kept out of the labels.
    """
    bbox = labelled_bbox(chips)
    items = _items(source, bbox, {i for c in chips for i in c.item_ids})
    sensors = sorted({f for i in items
                      if (f := sensor_family(str(i.properties.get("platform", "")))
                          or sensor_family(str(i.collection_id or ""))) is not None})
    months = sorted({i.datetime.month for i in items if i.datetime is not None})
    return Domain(
        regions=(Region(region, bbox),),
        excluded=tuple(Region("held out of the training labels", b) for b in excluded),
        sensors=tuple(sensors), collections=tuple(sorted({str(i.collection_id) for i in items})),
        resolution_m=resolution_m, months=tuple(months), notes=notes)

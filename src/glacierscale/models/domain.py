"""Where a model has been: its training domain, and whether a tile lies inside it.

A trained model's card records its domain (``card.domain``): the boxes of its labelled training
regions (lon/lat) and the boxes inside them that were held out of its labels, the sensors
(instrument families) and collections of its training scenes, its pixel size, and the months of
its acquisitions. :func:`check_tile` is a pure function of a card (or its domain) and a tile's
lon/lat box, the collections and platforms of its scenes, its pixel size and dates; a run calls it
once per tile, logs one warning for the run and counts the tiles out of domain.

Outside its domain a model is not wrong by definition, but nothing measured vouches for it: the
default then leans on its physics floor, and the run says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from glacierscale.models.card import ModelCard

Box = tuple[float, float, float, float]

#: Instrument families by platform name or collection id (lower case, matched by prefix).
#: Sentinel-2 L1C/L2A and HLS S30 are one instrument (MSI) in different processing chains; HLS L30
#: and Landsat 8/9 Collection 2 are OLI. ``landsat-c2-l2`` alone does not say which Landsat.
SENSOR_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sentinel-2", "sentinel-2-msi"), ("sentinel-s2", "sentinel-2-msi"),
    ("hlss30", "sentinel-2-msi"),
    ("landsat-8", "landsat-oli"), ("landsat-9", "landsat-oli"), ("landsat8", "landsat-oli"),
    ("landsat9", "landsat-oli"), ("hlsl30", "landsat-oli"),
    ("landsat-7", "landsat-etm+"), ("landsat7", "landsat-etm+"),
    ("landsat-4", "landsat-tm"), ("landsat-5", "landsat-tm"),
)

#: A pixel size within this factor of the training resolution is in domain.
RESOLUTION_TOLERANCE = 1.5


def sensor_family(name: str) -> str | None:
    """The instrument family of a platform name or collection id, or None when it is unknown
    (e.g. a Landsat collection holding several instruments)."""
    low = name.lower()
    for prefix, family in SENSOR_PREFIXES:
        if low.startswith(prefix):
            return family
    return None


@dataclass(frozen=True)
class Region:
    """A named lon/lat box ``(W, S, E, N)``; ``W > E`` crosses the antimeridian."""

    name: str
    bbox: Box

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bbox": list(self.bbox)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Region:
        w, s, e, n = (float(v) for v in d["bbox"])
        return cls(str(d["name"]), (w, s, e, n))


def _spans(w: float, e: float) -> list[tuple[float, float]]:
    return [(w, e)] if w <= e else [(w, 180.0), (-180.0, e)]


def boxes_intersect(a: Box, b: Box) -> bool:
    """True when two lon/lat boxes share area (antimeridian-aware)."""
    if a[3] <= b[1] or b[3] <= a[1]:
        return False
    return any(x0 < y1 and y0 < x1 for x0, x1 in _spans(a[0], a[2]) for y0, y1 in _spans(b[0],
                                                                                        b[2]))


def box_within(inner: Box, outer: Box) -> bool:
    """True when ``inner`` lies inside ``outer`` (antimeridian-aware)."""
    if inner[1] < outer[1] or inner[3] > outer[3]:
        return False
    return all(any(o0 <= i0 and i1 <= o1 for o0, o1 in _spans(outer[0], outer[2]))
               for i0, i1 in _spans(inner[0], inner[2]))


@dataclass(frozen=True)
class Domain:
    """A model's training domain. Empty ``regions``/``sensors``/``months`` or a None resolution
    mean "any" (a physics baseline has no training domain)."""

    regions: tuple[Region, ...] = ()
    excluded: tuple[Region, ...] = ()
    sensors: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    resolution_m: float | None = None
    months: tuple[int, ...] = ()
    notes: str = ""
    tolerance: float = field(default=RESOLUTION_TOLERANCE)

    def to_dict(self) -> dict[str, Any]:
        return {"regions": [r.to_dict() for r in self.regions],
                "excluded": [r.to_dict() for r in self.excluded],
                "sensors": list(self.sensors), "collections": list(self.collections),
                "resolution_m": self.resolution_m, "resolution_tolerance": self.tolerance,
                "months": list(self.months), "notes": self.notes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Domain:
        res = d.get("resolution_m")
        return cls(tuple(Region.from_dict(r) for r in d.get("regions", [])),
                   tuple(Region.from_dict(r) for r in d.get("excluded", [])),
                   tuple(str(s) for s in d.get("sensors", [])),
                   tuple(str(c) for c in d.get("collections", [])),
                   float(res) if res is not None else None,
                   tuple(int(m) for m in d.get("months", [])), str(d.get("notes", "")),
                   float(d.get("resolution_tolerance", RESOLUTION_TOLERANCE)))


@dataclass(frozen=True)
class DomainCheck:
    """The answer for one tile: in domain or not, and why not (one reason per failed test)."""

    in_domain: bool
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.in_domain


def domain_of(model: ModelCard | Mapping[str, Any] | Domain) -> Domain | None:
    """The :class:`Domain` of a card, a card's ``domain`` mapping or a domain; None when the card
    states none."""
    if isinstance(model, Domain):
        return model
    d = model.domain if isinstance(model, ModelCard) else model
    return Domain.from_dict(d) if d else None


def check_tile(model: ModelCard | Mapping[str, Any] | Domain, bbox: Sequence[float], *,
               collections: Iterable[str] = (), platforms: Iterable[str] = (),
               resolution_m: float | None = None, dates: Iterable[date] = ()) -> DomainCheck:
    """Whether a tile lies in a model's training domain.

    ``bbox``: the tile's lon/lat box ``(W, S, E, N)``; ``collections`` and ``platforms``: those of
    the scenes the tile is mapped from (platforms, when given, name the instrument more exactly);
    ``resolution_m``: the run's pixel size; ``dates``: the scenes' acquisition dates. A card
    without a stated domain is out of domain ("states no training domain"); a domain that restricts
    nothing (the physics baselines': no training data) holds every tile.
    """
    dom = domain_of(model)
    if dom is None:
        return DomainCheck(False, ("the model card states no training domain",))
    box: Box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    reasons: list[str] = []
    if dom.regions:
        if not any(boxes_intersect(box, r.bbox) for r in dom.regions):
            seen = ", ".join(r.name for r in dom.regions)
            reasons.append(f"region not seen in training (trained on {seen})")
        elif any(box_within(box, r.bbox) for r in dom.excluded):
            reasons.append("inside an area held out of the training labels")
    if dom.sensors:
        names = list(platforms) or list(collections)
        found = [sensor_family(n) for n in names]
        families = {f for f in found if f is not None}
        if not names or len(families) < len(set(found)):
            unknown = [n for n, f in zip(names, found, strict=True) if f is None]
            reasons.append(f"sensor unknown ({unknown or 'no scenes given'}); trained on "
                           f"{list(dom.sensors)}")
        elif not families <= set(dom.sensors):
            reasons.append(f"sensor {sorted(families - set(dom.sensors))} not seen in training "
                           f"(trained on {list(dom.sensors)})")
    if dom.resolution_m is not None and resolution_m is not None:
        ratio = max(resolution_m / dom.resolution_m, dom.resolution_m / resolution_m)
        if ratio > dom.tolerance:
            reasons.append(f"pixel size {resolution_m:g} m is far from the training "
                           f"{dom.resolution_m:g} m")
    months = sorted({d.month for d in dates})
    if dom.months and months and not set(months) <= set(dom.months):
        reasons.append(f"months {months} outside the training months {list(dom.months)}")
    return DomainCheck(not reasons, tuple(reasons))


def domain_warning(model: str, reasons: Sequence[Sequence[str]]) -> str | None:
    """The run's one warning about its model's domain, from each tile's out-of-domain reasons
    (an empty sequence for a tile in domain): how many tiles lie outside and why, the commonest
    reasons first; None when every tile is in domain."""
    out = [r for r in reasons if r]
    if not out:
        return None
    counts: dict[str, int] = {}
    for tile in out:
        for reason in tile:
            key = reason.split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
    why = "; ".join(f"{k}: {n} tiles" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"{len(out)} of {len(reasons)} tiles lie outside the training domain of model "
            f"{model} ({why}); there its output is vouched for by the physics floor only, where "
            "the model has one")

"""How many tiles the whole world needs, from glacier counts and areas per region alone.

Used when the full outlines are not at hand (planning a budget, sizing a cluster). For each region
row (count N, area A, from the RGI 7.0 summaries) with tiles of side ``s`` and buffer ``b``:

* a glacier is a disk of the region's mean area ``A/N``; its outline is :data:`SHAPE_FACTOR` times
  longer than that disk's circumference (glaciers are elongated and lobed), so the buffered
  glacier area is ``A/N + P b + π b²``;
* **low**: the buffered area packed into full tiles, ``N (A/N + P b + π b²) / s²``;
* **high**: every glacier alone, hitting on average ``(π R² + 4 R s + s²) / s²`` cells for a disk
  of radius ``R`` dropped at random on the grid (Steiner's formula);
* **central**: the buffered area over tiles that are :data:`FILL` full on average, kept within
  ``[low, high]``.

SHAPE_FACTOR and FILL are measured on the real RGI outline samples (see
``tests/test_plan.py::test_estimate_constants_match_real_outlines``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

#: Outline perimeter / circumference of the disk of the same area: median over the 237 real RGI
#: outlines of the Everest, Exploradores, Iceland and Oetztal samples (1.88).
SHAPE_FACTOR = 1.9
#: "low" / tiles actually planned, median over those five real samples (0.29 to 0.72; 0.55).
#: Dense icefields fill tiles better than scattered cirque glaciers; the low and high bounds frame
#: the uncertainty of applying it to whole regions.
FILL = 0.55


def estimate_region(count: int, area_km2: float, size_m: float, buffer_m: float,
                    fill: float = FILL, shape_factor: float = SHAPE_FACTOR) -> dict[str, float]:
    """Low, central and high tile counts (floats) for one region of ``count`` glaciers."""
    if count <= 0:
        return {"low": 0.0, "central": 0.0, "high": 0.0}
    s = size_m / 1000.0
    b = buffer_m / 1000.0
    mean = max(area_km2, 0.0) / count
    r0 = math.sqrt(mean / math.pi)
    perimeter = shape_factor * 2.0 * math.pi * r0
    buffered = count * (mean + perimeter * b + math.pi * b * b)
    low = buffered / (s * s)
    r = r0 + b
    high = count * (math.pi * r * r + 4.0 * r * s + s * s) / (s * s)
    central = min(max(buffered / (s * s * fill), low), high)
    return {"low": low, "central": central, "high": high}


def estimate_from_counts(rows: Iterable[tuple[str, int, float]], size_m: float,
                         buffer_m: float) -> dict[str, Any]:
    """Tile counts for the world from ``(region, count, area_km2)`` rows (O1 or O2 codes).

    O2 rows (``"01-02"``) are summed into their O1 region for the per-region report; estimating
    per O2 row follows the glaciers' sizes more closely than per O1 region.
    """
    per: dict[str, dict[str, float]] = {}
    for region, count, area in rows:
        o1 = region.split("-")[0].zfill(2)
        est = estimate_region(count, area, size_m, buffer_m)
        acc = per.setdefault(o1, {"glaciers": 0, "glacier_km2": 0.0, "low": 0.0, "central": 0.0,
                                  "high": 0.0})
        acc["glaciers"] += count
        acc["glacier_km2"] += area
        for k in ("low", "central", "high"):
            acc[k] += est[k]
    report = {
        code: {"glaciers": int(v["glaciers"]), "glacier_km2": round(v["glacier_km2"], 1),
               "tiles": math.ceil(v["central"]), "tiles_low": math.ceil(v["low"]),
               "tiles_high": math.ceil(v["high"])}
        for code, v in sorted(per.items())
    }
    return {
        "tiles": sum(r["tiles"] for r in report.values()),
        "tiles_low": sum(r["tiles_low"] for r in report.values()),
        "tiles_high": sum(r["tiles_high"] for r in report.values()),
        "glaciers": sum(r["glaciers"] for r in report.values()),
        "glacier_km2": round(sum(r["glacier_km2"] for r in report.values()), 1),
        "tile_km2": round((size_m / 1000.0) ** 2, 4),
        "fill": FILL, "shape_factor": SHAPE_FACTOR,
        "per_region": report,
    }

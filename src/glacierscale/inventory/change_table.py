"""Tables of a change comparison: per glacier, per tile (ice outside outlines), per region.

Column names end in their unit (``_km2``, ``_pct``, ``_per_yr``); ``*_unc`` columns are the
one-sided uncertainty (half the width of the lower..upper bound interval, as DL4GAM reports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from glacierscale.inventory.change_epoch import Epoch

#: Per (tile, glacier) sums, in ground km²: the outline's pixels owned by the tile; those seen
#: by A, by B, by both; and per epoch, on the pixels both saw, ice at the threshold and at the
#: lower / upper probability bound.
COLUMNS = ("owned", "seen_a", "seen_b", "both", "ice_a", "lo_a", "hi_a", "ice_b", "lo_b", "hi_b")
C = {c: i for i, c in enumerate(COLUMNS)}
#: A rate per year only from dates at least this far apart: over weeks, a change is noise
#: divided by a tiny number.
RATE_MIN_DAYS = 365

#: How errors are combined, and why; recorded in change.json and the report.
COMBINATION = {
    "epoch": "area error of one epoch = half the difference between its areas at the upper "
             "and lower probability bound (p ± u against the threshold; u = spread of the "
             "model's members, else a fixed margin)",
    "glacier_change": "the two epochs' errors added in quadrature: independent, as they come "
                      "from different scenes and dates, often different sensors",
    "region": "errors of the glaciers of a region added linearly (fully correlated): one "
              "model and one threshold map them all, neighbours share scenes, so a bias moves "
              "every glacier the same way; the regional change error is the quadrature of the "
              "two epochs' regional errors. change_unc_indep_km2 gives the (smaller) figure if "
              "glaciers were independent",
}

_UNC_PAIRS = (("area_a", "lo_a", "hi_a", "ice_a"), ("area_b", "lo_b", "hi_b", "ice_b"))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _epoch_cols(t: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, lo, hi, ice in _UNC_PAIRS:
        out[f"{name}_km2"] = t[:, C[ice]]
        out[f"{name}_lo_km2"] = t[:, C[lo]]
        out[f"{name}_hi_km2"] = t[:, C[hi]]
        out[f"{name}_unc_km2"] = (t[:, C[hi]] - t[:, C[lo]]) / 2.0
    return out


def _day(e: Epoch, tile_id: str) -> date | None:
    rec = e.tiles.get(tile_id)
    return rec.day if rec is not None and rec.day is not None else e.day


def _sensor(e: Epoch, tile_id: str) -> str:
    rec = e.tiles.get(tile_id)
    return ",".join(rec.collections) if rec is not None else ""


def glacier_table(ref: gpd.GeoDataFrame, t: np.ndarray, best_tile: np.ndarray, a: Epoch,
                  b: Epoch, min_seen: float) -> gpd.GeoDataFrame:
    """One row per glacier: areas on the ground both epochs saw, change, rates, seen share, flag.

    ``t`` holds the :data:`COLUMNS` sums per glacier; ``best_tile`` the tile where each glacier
    was seen most, whose dates and sensors stand for the glacier's.
    """
    cols = _epoch_cols(t)
    owned = t[:, C["owned"]]
    share = np.clip(_div(t[:, C["both"]], owned), 0.0, 1.0)
    day_a = [_day(a, str(tid)) for tid in best_tile]
    day_b = [_day(b, str(tid)) for tid in best_tile]
    days = np.array([(db - da).days if da and db else np.nan
                     for da, db in zip(day_a, day_b, strict=True)], dtype="float64")
    years = days / 365.25
    change = cols["area_b_km2"] - cols["area_a_km2"]
    change_unc = np.hypot(cols["area_a_unc_km2"], cols["area_b_unc_km2"])
    with np.errstate(invalid="ignore"):
        ok_rate = np.abs(days) >= RATE_MIN_DAYS
    rate = np.where(ok_rate, change / np.where(ok_rate, years, 1.0), np.nan)
    rate_unc = np.where(ok_rate, change_unc / np.abs(np.where(ok_rate, years, 1.0)), np.nan)
    compared = np.nan_to_num(share, nan=0.0) >= min_seen
    flag = np.where(np.nan_to_num(share, nan=0.0) <= 0.0, "not seen by both epochs",
                    np.where(compared, "", [f"seen {s:.0%} < {min_seen:.0%} by both epochs"
                                            for s in np.nan_to_num(share, nan=0.0)]))
    data: dict[str, Any] = {
        "glacier_id": ref["glacier_id"].to_numpy(), "name": ref["name"].to_numpy(),
        "region": ref["region"].to_numpy(), "outline_km2": owned,
        "date_a": day_a, "date_b": day_b, "years": years,
        "sensor_a": [_sensor(a, str(x)) for x in best_tile],
        "sensor_b": [_sensor(b, str(x)) for x in best_tile],
        "seen_share": share, "seen_share_a": np.clip(_div(t[:, C["seen_a"]], owned), 0, 1),
        "seen_share_b": np.clip(_div(t[:, C["seen_b"]], owned), 0, 1), **cols,
        "change_km2": change, "change_unc_km2": change_unc,
        "change_pct": 100.0 * _div(change, cols["area_a_km2"]),
        "change_pct_unc": 100.0 * _div(change_unc, cols["area_a_km2"]),
        "change_km2_per_yr": rate, "change_km2_per_yr_unc": rate_unc,
        "change_pct_per_yr": 100.0 * _div(rate, cols["area_a_km2"]),
        "change_pct_per_yr_unc": 100.0 * _div(rate_unc, cols["area_a_km2"]),
        "compared": compared, "flag": flag,
    }
    out = gpd.GeoDataFrame(data, geometry=ref.geometry.to_numpy(), crs="EPSG:4326")
    return out.sort_values(["region", "glacier_id"], ignore_index=True)


def outside_table(rows: Sequence[tuple[str, str, np.ndarray]], a: Epoch,
                  b: Epoch) -> pd.DataFrame:
    """Ice outside every outline, per tile: on the ground both epochs saw, with its change."""
    t = np.stack([r[2] for r in rows]) if rows else np.zeros((0, len(COLUMNS)))
    cols = _epoch_cols(t)
    change = cols["area_b_km2"] - cols["area_a_km2"]
    frame = pd.DataFrame({
        "tile_id": [r[0] for r in rows], "region": [r[1] for r in rows],
        "date_a": [_day(a, r[0]) for r in rows], "date_b": [_day(b, r[0]) for r in rows],
        "seen_km2": t[:, C["both"]], **cols, "change_km2": change,
        "change_unc_km2": np.hypot(cols["area_a_unc_km2"], cols["area_b_unc_km2"])})
    return frame.sort_values("tile_id", ignore_index=True)


def _region_row(region: str, g: pd.DataFrame, o: pd.DataFrame) -> dict[str, Any]:
    ok = g[g["compared"]]
    area_a, area_b = float(ok["area_a_km2"].sum()), float(ok["area_b_km2"].sum())
    unc_a, unc_b = float(ok["area_a_unc_km2"].sum()), float(ok["area_b_unc_km2"].sum())
    change = area_b - area_a
    change_unc = float(np.hypot(unc_a, unc_b))
    rated = ok[np.isfinite(ok["change_km2_per_yr"])]
    rate = float(rated["change_km2_per_yr"].sum()) if len(rated) else np.nan
    rate_unc = float(rated["change_km2_per_yr_unc"].sum()) if len(rated) else np.nan
    base = float(rated["area_a_km2"].sum()) if len(rated) else np.nan

    def pct(x: float, den: float) -> float:
        return 100.0 * x / den if den and np.isfinite(den) and den > 0 else np.nan

    oa, ob = float(o["area_a_km2"].sum()), float(o["area_b_km2"].sum())
    return {
        "region": region, "glaciers": len(ok), "flagged": int((~g["compared"]).sum()),
        "flagged_outline_km2": float(g.loc[~g["compared"], "outline_km2"].sum()),
        "outline_km2": float(ok["outline_km2"].sum()),
        "area_a_km2": area_a, "area_a_unc_km2": unc_a, "area_b_km2": area_b,
        "area_b_unc_km2": unc_b, "change_km2": change, "change_unc_km2": change_unc,
        "change_unc_indep_km2": float(np.sqrt((ok["change_unc_km2"] ** 2).sum())),
        "change_pct": pct(change, area_a), "change_pct_unc": pct(change_unc, area_a),
        "change_km2_per_yr": rate, "change_km2_per_yr_unc": rate_unc,
        "change_pct_per_yr": pct(rate, base), "change_pct_per_yr_unc": pct(rate_unc, base),
        "outside_a_km2": oa, "outside_b_km2": ob, "outside_change_km2": ob - oa,
        "outside_change_unc_km2": float(np.hypot(o["area_a_unc_km2"].sum(),
                                                 o["area_b_unc_km2"].sum())),
    }


def region_table(glaciers: pd.DataFrame, outside: pd.DataFrame) -> pd.DataFrame:
    """Regional sums of the compared glaciers (flagged ones counted apart), plus a total row."""
    regions = sorted(set(glaciers["region"]) | set(outside["region"]))
    rows = [_region_row(r, glaciers[glaciers["region"] == r], outside[outside["region"] == r])
            for r in regions]
    rows.append(_region_row("total", glaciers, outside))
    return pd.DataFrame(rows)

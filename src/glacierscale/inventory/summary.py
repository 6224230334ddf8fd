"""Region summary of an inventory: counts, areas and area change per RGI region, plus a total."""

from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = ["region", "n_glaciers", "n_new", "n_vanished", "area_km2", "area_km2_lo",
                   "area_km2_hi", "ref_area_km2", "area_change_km2", "area_change_pct",
                   "area_change_pct_per_yr"]


def region_summary(inventory: pd.DataFrame) -> pd.DataFrame:
    """One row per region (``region`` column of ``attach_rgi`` output) and a ``total`` row.

    ``area_change_pct`` compares only glaciers with a reference (new candidates would make it
    meaningless); ``area_change_pct_per_yr`` is the reference-area-weighted mean rate.
    """
    df = pd.DataFrame(inventory.drop(columns="geometry", errors="ignore"))
    if not len(df):
        return pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    if "region" not in df:
        df["region"] = "unknown"
    df["region"] = df["region"].fillna("").replace("", "unknown").astype(str)
    for col in ("is_new",):
        if col not in df:
            df[col] = False
    for col in ("ref_area_km2", "area_change_km2", "area_change_pct_per_yr", "area_km2_lo",
                "area_km2_hi"):
        if col not in df:
            df[col] = np.nan
    rows = [_summarise(name, g) for name, g in df.groupby("region", sort=True)]
    rows.append(_summarise("total", df))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _summarise(name: object, g: pd.DataFrame) -> dict[str, object]:
    known = g[~g["is_new"].astype(bool)]
    ref = float(known["ref_area_km2"].sum())
    change_known = float(known["area_km2"].sum()) - ref
    rate = known["area_change_pct_per_yr"].to_numpy(dtype=float)
    w = known["ref_area_km2"].to_numpy(dtype=float)
    ok = np.isfinite(rate) & (w > 0)
    return {
        "region": str(name), "n_glaciers": len(g), "n_new": int(g["is_new"].astype(bool).sum()),
        "n_vanished": int(((g["area_km2"] == 0) & (g["ref_area_km2"] > 0)).sum()),
        "area_km2": float(g["area_km2"].sum()), "area_km2_lo": float(g["area_km2_lo"].sum()),
        "area_km2_hi": float(g["area_km2_hi"].sum()), "ref_area_km2": ref,
        "area_change_km2": float(g["area_change_km2"].sum()),
        "area_change_pct": 100.0 * change_known / ref if ref > 0 else float("nan"),
        "area_change_pct_per_yr": float((rate[ok] * w[ok]).sum() / w[ok].sum())
        if ok.any() else float("nan"),
    }

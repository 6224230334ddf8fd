"""Human-readable views of a change comparison: a plot per region and a Markdown section."""

from __future__ import annotations

import io as _io
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from glacierscale.inventory.change_table import COMBINATION

if TYPE_CHECKING:
    from glacierscale.inventory.change import ChangeResult


def _rated(g: pd.DataFrame) -> bool:
    """Plot %/yr when every compared glacier has a rate (dates a year or more apart)."""
    ok = g[g["compared"]]
    return bool(len(ok)) and bool(np.isfinite(ok["change_pct_per_yr"]).all())


def _label(e: dict[str, Any]) -> str:
    return f"{e['name']} ({e['date']}, {', '.join(e['sensors'])})"


def region_plot_png(result: ChangeResult, region: str) -> bytes:
    """Area change against glacier size for one region's glaciers, with error bars (PNG).

    Relative change (%, or %/yr when every glacier has dates a year or more apart) against the
    outline area on a log axis; flagged glaciers (seen too little) are drawn hollow in grey.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = result.glaciers[result.glaciers["region"] == region]
    per_yr = _rated(g)
    y, yerr = ("change_pct_per_yr", "change_pct_per_yr_unc") if per_yr else \
        ("change_pct", "change_pct_unc")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    styles: tuple[tuple[bool, dict[str, Any]], ...] = (
        (True, {"fmt": "o", "color": "tab:blue", "ecolor": "tab:blue"}),
        (False, {"fmt": "o", "color": "grey", "ecolor": "lightgrey", "mfc": "none"}))
    for compared, style in styles:
        part = g[g["compared"] == compared]
        if len(part):
            ax.errorbar(part["outline_km2"], part[y], yerr=part[yerr], capsize=2, ms=4,
                        lw=0.8, label="compared" if compared else "flagged (seen too little)",
                        **style)
    ax.axhline(0.0, color="black", lw=0.6)
    row = result.regions[result.regions["region"] == region]
    if len(row):
        r = row.iloc[0]
        val, unc = (r["change_pct_per_yr"], r["change_pct_per_yr_unc"]) if per_yr else \
            (r["change_pct"], r["change_pct_unc"])
        if np.isfinite(val):
            ax.axhspan(val - unc, val + unc, color="tab:orange", alpha=0.2)
            ax.axhline(val, color="tab:orange", lw=1.2,
                       label=f"region {val:+.2f} ± {unc:.2f} {'%/yr' if per_yr else '%'}")
    if len(g) and (g["outline_km2"] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel("glacier outline area (km²)")
    ax.set_ylabel("area change (%/yr)" if per_yr else "area change (%)")
    a, b = result.epochs
    ax.set_title(f"region {region}: {_label(a)} → {_label(b)}", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, alpha=0.3)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def region_plots(result: ChangeResult) -> dict[str, bytes]:
    """One PNG per region that has glaciers."""
    return {str(r): region_plot_png(result, str(r))
            for r in sorted(set(result.glaciers["region"]))}


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def change_markdown(result: ChangeResult) -> str:
    """A Markdown section for the run report or a Prefect artifact."""
    a, b = result.epochs
    s = result.settings
    lines = ["## Area change", "",
             f"From **{a['name']}** ({a['date']}) to **{b['name']}** ({b['date']}), model "
             f"{', '.join(s['model'])} (weights sha256 {s['weights_sha256'][0][:12]}), threshold "
             f"{s['threshold']:g}, {s['grid']['tile_size_px']} px tiles of "
             f"{s['grid']['resolution_m']:g} m; uncertainty from the {s['uncertainty']}.", "",
             "| epoch | date | sensors (tiles) |", "|---|---|---|"]
    for e in (a, b):
        sensors = ", ".join(f"{k} ({v})" for k, v in e["sensors"].items())
        lines.append(f"| {e['name']} | {e['date']} | {sensors} |")
    lines += ["", "| region | glaciers | flagged | area A km² | area B km² | change km² | "
              "change % | %/yr |", "|---|---|---|---|---|---|---|---|"]
    for _, r in result.regions.iterrows():
        lines.append(
            f"| {r['region']} | {r['glaciers']} | {r['flagged']} | "
            f"{_f(r['area_a_km2'])} ± {_f(r['area_a_unc_km2'])} | "
            f"{_f(r['area_b_km2'])} ± {_f(r['area_b_unc_km2'])} | "
            f"{_f(r['change_km2'])} ± {_f(r['change_unc_km2'])} | "
            f"{_f(r['change_pct'], 2)} ± {_f(r['change_pct_unc'], 2)} | "
            f"{_f(r['change_pct_per_yr'], 2)} ± {_f(r['change_pct_per_yr_unc'], 2)} |")
    lines += ["", f"Glaciers are compared only on ground both epochs saw; a glacier seen under "
              f"{s['min_seen']:.0%} by both is flagged and left out of the sums. Ice outside "
              "every outline is listed apart (outside.csv). %/yr only for dates a year or more "
              "apart.", "", "How errors are combined:"]
    lines += [f"- {k}: {v}" for k, v in COMBINATION.items()]
    lines += [""] + [f"![region {r}](plots/region_{r}.png)" for r in sorted(result.plots)]
    return "\n".join(lines) + "\n"

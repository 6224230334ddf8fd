"""Per-tile glacier statistics and the plan summary (counts per RGI region, km² processed).

Pure numpy over the arrays a :class:`glacierscale.core.cover.GridCover` gives, so the numbers are
the same whichever reader produced the glaciers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def tile_stats(
    n_tiles: int, owner: NDArray[np.int64], pair_glacier: NDArray[np.int64],
    pair_cell: NDArray[np.int64], area_km2: NDArray[np.float64], region: NDArray[np.str_],
) -> dict[str, Any]:
    """Per tile: glaciers owned and their area, glaciers reaching it, and their RGI regions.

    ``regions`` is a comma-joined sorted list of the O1 codes of every glacier reaching the tile
    ('' when the input does not say).
    """
    area = np.nan_to_num(np.asarray(area_km2, dtype=np.float64))
    n_owned = np.bincount(owner, minlength=n_tiles)
    km2_owned = np.bincount(owner, weights=area, minlength=n_tiles)
    n_reach = np.bincount(pair_cell, minlength=n_tiles)
    codes, code_idx = np.unique(np.asarray(region, dtype=str), return_inverse=True)
    # unique (tile, region) pairs, then joined per tile
    tr = np.unique(pair_cell * max(len(codes), 1) + code_idx[pair_glacier])
    t_of, r_of = tr // max(len(codes), 1), tr % max(len(codes), 1)
    regions = [""] * n_tiles
    for t, labels in _group(t_of, codes[r_of]):
        regions[t] = ",".join(x for x in labels if x)
    return {"n_glaciers": n_owned, "glacier_km2": km2_owned, "n_reaching": n_reach,
            "regions": np.asarray(regions, dtype=object)}


def _group(keys: NDArray[np.int64], values: NDArray[Any]) -> list[tuple[int, list[str]]]:
    """Consecutive runs of equal (sorted) keys with their values."""
    if keys.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return [(int(k[0]), v.tolist()) for k, v in zip(np.split(keys, cuts), np.split(values, cuts),
                                                      strict=True)]


def summarize(
    *, tiles: int, zones: int, clipped: int, core_km2: float, read_km2: float,
    owner_tile_region: tuple[NDArray[np.int64], NDArray[np.str_], NDArray[np.float64]] | None,
    pair_regions: tuple[NDArray[np.int64], NDArray[np.str_]] | None,
    grid: dict[str, Any],
) -> dict[str, Any]:
    """The plan summary: totals, and per RGI O1 region the glaciers, their km² and the tiles.

    ``owner_tile_region`` is (owner tile, O1 region, area km²) per glacier; ``pair_regions`` is
    (tile, O1 region) per glacier-reaches-tile pair. A tile reached from two regions counts in
    both, so the per-region tile counts may add up to more than the total.
    """
    out: dict[str, Any] = {"tiles": tiles, "zones": zones, "clipped_tiles": clipped,
                           "core_km2": round(core_km2, 3), "read_km2": round(read_km2, 3),
                           "grid": grid}
    if owner_tile_region is None or pair_regions is None:
        out.update(glaciers=0, glacier_km2=0.0, per_region={})
        return out
    owner, region, area = owner_tile_region
    area = np.nan_to_num(np.asarray(area, dtype=np.float64))
    glacier_km2 = float(area.sum())
    out["glaciers"] = int(owner.size)
    out["glacier_km2"] = round(glacier_km2, 3)
    out["core_km2_per_glacier_km2"] = round(core_km2 / glacier_km2, 3) if glacier_km2 else None
    per: dict[str, dict[str, Any]] = {}
    ptile, preg = pair_regions
    for code in sorted(set(np.asarray(region, dtype=str).tolist())):
        m = region == code
        per[code or "unknown"] = {
            "glaciers": int(m.sum()),
            "glacier_km2": round(float(area[m].sum()), 3),
            "owning_tiles": int(np.unique(owner[m]).size),
            "tiles": int(np.unique(ptile[preg == code]).size),
        }
    out["per_region"] = per
    return out


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short human-readable report of a plan summary (printed by the CLI, written beside it)."""
    g = summary.get("grid", {})
    lines = [
        "# Tile plan",
        "",
        f"- tiles: **{summary['tiles']}** in {summary['zones']} projection zones "
        f"({summary['clipped_tiles']} clipped at a zone border)",
        f"- grid: {g.get('tile_size_px')} px x {g.get('resolution')} m, halo "
        f"{g.get('halo_px')} px, buffer {g.get('buffer_m')} m",
        f"- glaciers: {summary.get('glaciers', 0)} covering {summary.get('glacier_km2', 0):,.1f} "
        "km²",
        f"- processed: {summary['core_km2']:,.1f} km² of tile cores "
        f"({summary['read_km2']:,.1f} km² read with halos)",
    ]
    if summary.get("core_km2_per_glacier_km2"):
        lines.append(f"- km² processed per glacier km²: {summary['core_km2_per_glacier_km2']}")
    per = summary.get("per_region") or {}
    if per:
        lines += ["", "| region | glaciers | glacier km² | owning tiles | tiles reached |",
                  "|---|---:|---:|---:|---:|"]
        for code, r in per.items():
            lines.append(f"| {code} | {r['glaciers']} | {r['glacier_km2']:,.1f} | "
                         f"{r['owning_tiles']} | {r['tiles']} |")
    return "\n".join(lines) + "\n"

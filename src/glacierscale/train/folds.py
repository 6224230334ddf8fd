"""Spatial cross-validation folds: whole tiles (or whole regions) per fold, never random pixels.

Neighbouring pixels are nearly copies of each other, so a random pixel split measures how well a
model interpolates between its own training pixels, not how it maps a valley it has never seen.
Following the regional cross-validation of Diaconu et al. (2023) and Maslov et al. (2024), every
tile belongs to one fold; folds are contiguous bands of tile columns (or rows, along the longer
side of the area), balanced by how many labelled pixels they hold, so each fold is a compact area
predicted by a model that never trained on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from glacierscale.core.tiles import TileSpec


def _stripes(keys: Sequence[int], weight: Mapping[int, float], k: int) -> dict[int, int]:
    """Contiguous groups of sorted ``keys`` with near-equal total weight, one per fold."""
    order = sorted(set(keys))
    if len(order) < k:
        raise ValueError(f"{k} spatial folds need at least {k} distinct tile columns or rows; the "
                         f"area has {len(order)}: use fewer folds or smaller tiles")
    w = np.array([max(weight.get(c, 0.0), 0.0) for c in order], dtype=np.float64)
    # A small floor keeps empty columns from collapsing folds when all weight sits in one place.
    w = w + max(w.sum(), 1.0) * 1e-3 / len(order)
    cum = np.cumsum(w) - w / 2.0  # centre of each column on the cumulative axis
    fold = np.minimum((cum / w.sum() * k).astype(int), k - 1)
    # Every fold must get at least one column: reassign along the order when one came out empty.
    for f in range(k):
        if not (fold == f).any():
            fold = _force_nonempty(fold, k)
            break
    return {c: int(f) for c, f in zip(order, fold, strict=True)}


def _force_nonempty(fold: np.ndarray, k: int) -> np.ndarray:
    n = len(fold)
    # Fall back to equal counts of columns per fold (still contiguous).
    return np.minimum((np.arange(n) * k) // n, k - 1)


def spatial_folds(tiles: Sequence[TileSpec], k: int,
                  weights: Mapping[str, float] | None = None,
                  regions: Mapping[str, str] | None = None) -> dict[str, int]:
    """Fold index (0..k-1) of every tile id.

    ``weights``: labelled (or glacier) pixels per tile id, to balance the folds. ``regions``:
    optional region name per tile id (e.g. an RGI O2 region); when given, whole regions are
    assigned to folds (largest first, each to the currently lightest fold), which is the regional
    cross-validation of the literature. Without regions, folds are stripes of tile columns (or
    rows, whichever spans more tiles).
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if not tiles:
        raise ValueError("no tiles to split into folds")
    ids = [t.tile_id for t in tiles]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate tile ids in the fold split")
    wt = {t.tile_id: float((weights or {}).get(t.tile_id, 0.0)) for t in tiles}
    if regions is not None:
        return _by_region(ids, wt, regions, k)
    cols = {t.col for t in tiles}
    rows = {t.row for t in tiles}
    along_cols = len(cols) >= len(rows)
    key = {t.tile_id: (t.col if along_cols else t.row) for t in tiles}
    per_key: dict[int, float] = {}
    for tid, c in key.items():
        per_key[c] = per_key.get(c, 0.0) + wt[tid]
    stripe = _stripes(list(key.values()), per_key, k)
    return {tid: stripe[c] for tid, c in key.items()}


def _by_region(ids: Sequence[str], wt: Mapping[str, float], regions: Mapping[str, str],
               k: int) -> dict[str, int]:
    missing = [t for t in ids if t not in regions]
    if missing:
        raise ValueError(f"tiles {missing[:5]} have no region; give every tile a region")
    totals: dict[str, float] = {}
    for t in ids:
        totals[regions[t]] = totals.get(regions[t], 0.0) + wt[t]
    if len(totals) < k:
        raise ValueError(f"{k} regional folds need at least {k} regions, got {len(totals)}")
    load = [0.0] * k
    assign: dict[str, int] = {}
    # Largest region first to the lightest fold (greedy balancing); ties broken by name.
    for name, w in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
        f = int(np.argmin(load))
        assign[name] = f
        load[f] += w
    return {t: assign[regions[t]] for t in ids}


def fold_members(folds: Mapping[str, int], k: int) -> list[list[str]]:
    """Tile ids per fold, in fold order (each sorted)."""
    out: list[list[str]] = [[] for _ in range(k)]
    for tid, f in folds.items():
        out[f].append(tid)
    return [sorted(m) for m in out]

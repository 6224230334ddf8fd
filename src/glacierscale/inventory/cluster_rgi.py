"""RGI identity and area change on a Dask cluster, equal to the single-process ``attach_rgi``.

A predicted glacier's rows depend only on the reference outlines it touches (within a metre),
and a reference outline's disjoint form only on the outlines it overlaps. So the driver builds
the graph of those relations (predicted to reference: within a metre; reference to reference:
intersecting), takes its connected components, and packs them by RGI region into tasks of about
``POLYGONS_PER_TASK`` polygons; each task runs the steps of ``attach_rgi`` on its components.
What needs every glacier stays on the driver and is small: the equal-area CRS (from the
inventory's bounds), the duplicate-id check, the sampling step of divide splits (a median of
areas: with divide lines, a first round of tasks measures the cut glaciers), and the region of a
new glacier (its nearest reference outline of all, from the outlines the tasks made disjoint).

Indices handed to a task keep the global order and every tree query is sorted, so each union
and each split sees its inputs in the single-process order. The one difference: with divide
lines a task unions only the lines near its glaciers, so a cut can differ from the
single-process cut in the last bits of a vertex (areas agree far within 1e-6).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from glacierscale.inventory.cluster_merge import components, pack
from glacierscale.inventory.rgi import (
    _TOUCH_M,
    _disjoint,
    attach_rgi,
    attach_rows,
    cut_all,
    divide_step,
    empty_result,
    prepare,
    reference_ids,
    region_of_new,
    result_frame,
    union_lines,
)

#: Predicted plus reference polygons per task.
POLYGONS_PER_TASK = 3000


def _region_labels(ref: gpd.GeoDataFrame) -> np.ndarray:
    """RGI O1 region of each reference glacier, for grouping work only (column, else id)."""
    for c in ("o1region", "O1Region"):
        if c in ref.columns:
            return ref[c].astype(str).str.zfill(2).to_numpy()
    return reference_ids(ref).str.extract(r"-(\d{2})[.-]", expand=False).fillna("").to_numpy()


def _bins(labels: np.ndarray, n_p: int, region: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Nodes (predicted 0..n_p-1, then reference) of whole components, packed by region."""
    comp_region = np.full(len(labels), "", dtype=object)
    is_ref = np.arange(len(labels)) >= n_p
    comp_region[labels[is_ref]] = region  # a component's region: that of one of its outlines
    key = comp_region[labels].astype(str)
    order = np.lexsort((np.arange(len(labels)), labels, key))
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    groups = np.split(order, cuts)
    return [np.sort(np.concatenate(bn)) for bn in pack(groups, n_bins, POLYGONS_PER_TASK)]


def _cut_areas(P: np.ndarray, lines: list[BaseGeometry]) -> np.ndarray:
    """Areas of predicted glaciers split along the divide lines (first round with divides)."""
    return shapely.area(cut_all(P, union_lines(lines)) if lines else P)


def _attach_bin(inv: pd.DataFrame, P: np.ndarray, R: np.ndarray, ref: pd.DataFrame,
                lines: list[BaseGeometry] | None, step: float, date_pred: date | None,
                date_ref: date | None
                ) -> tuple[list[dict[str, object]], list[BaseGeometry], np.ndarray]:
    """``attach_rgi``'s steps for some components: rows, new glaciers, disjoint outlines."""
    R = _disjoint(R) if len(R) else np.array([])
    if lines is not None:
        P = cut_all(P, union_lines(lines))
    rows, new = attach_rows(inv, P, shapely.area(P), R, ref, step, date_pred=date_pred,
                            date_ref=date_ref)
    return rows, new, R


def _near_lines(lines: list[BaseGeometry], P: np.ndarray) -> list[BaseGeometry]:
    """The divide lines that reach some of ``P`` (in their original order)."""
    if not lines or not len(P):
        return []
    hit = shapely.STRtree(np.asarray(lines, dtype=object)).query(P, predicate="intersects")[1]
    return [lines[i] for i in np.unique(hit)]


def attach_rgi_on_cluster(client: Any, inventory: gpd.GeoDataFrame,
                          reference: gpd.GeoDataFrame, *, date_pred: date | None,
                          date_ref: date | None, intersects: gpd.GeoDataFrame | None = None,
                          divide_extend_m: float = 200.0) -> gpd.GeoDataFrame:
    """``attach_rgi`` with its per-glacier work on the cluster of ``client``: the same rows."""
    prep = prepare(inventory, reference, intersects, divide_extend_m)
    if prep is None:
        return empty_result()
    if not len(prep.ref):  # every glacier is new, with no region: nothing worth spreading
        return attach_rgi(inventory, reference, date_pred=date_pred, date_ref=date_ref,
                          intersects=intersects, divide_extend_m=divide_extend_m)
    P, R = prep.P, prep.R
    n_p, n_r = len(P), len(R)
    pr_p, pr_r = shapely.STRtree(R).query(P, predicate="dwithin", distance=_TOUCH_M)
    rr_a, rr_b = shapely.STRtree(R).query(R, predicate="intersects")
    a = np.concatenate([pr_p, rr_a + n_p])
    b = np.concatenate([pr_r + n_p, rr_b + n_p])
    labels = components(n_p + n_r, a, b)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    bins = _bins(labels, n_p, _region_labels(prep.ref), 2 * n_workers)
    attrs = pd.DataFrame(prep.inv.drop(columns="geometry"))
    ref_attrs = pd.DataFrame(prep.ref.drop(columns="geometry"))
    parts = [(bn[bn < n_p], bn[bn >= n_p] - n_p) for bn in bins]
    lines = [None if prep.lines is None else _near_lines(prep.lines, P[k]) for k, _ in parts]
    if prep.lines is None:
        step = divide_step(shapely.area(P))
    else:
        areas = np.zeros(n_p)
        got = client.gather([client.submit(_cut_areas, P[k], ln, pure=False)
                             for (k, _), ln in zip(parts, lines, strict=True)])
        for (k, _), ar in zip(parts, got, strict=True):
            areas[k] = ar
        step = divide_step(areas)
    futures = [client.submit(_attach_bin, attrs.iloc[k].reset_index(drop=True), P[k], R[i],
                             ref_attrs.iloc[i].reset_index(drop=True), ln, step, date_pred,
                             date_ref, pure=False)
               for (k, i), ln in zip(parts, lines, strict=True)]
    new_rows: list[dict[str, object]] = []
    new_geoms: list[BaseGeometry] = []
    ref_rows: list[dict[str, object]] = []
    R_disjoint = np.empty(n_r, dtype=object)
    for (_, i), (rows, new, rd) in zip(parts, client.gather(futures), strict=True):
        new_rows += rows[:len(new)]
        new_geoms += new
        ref_rows += rows[len(new):]
        R_disjoint[i] = rd
    # A new glacier belongs to the region of its nearest reference glacier, of all of them.
    region_of_new(new_rows, new_geoms, R_disjoint, prep.ref)
    return result_frame(new_rows + ref_rows, prep.ea)

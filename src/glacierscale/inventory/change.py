"""Per-glacier area change between two epochs mapped by the same model, with its uncertainty.

Glaciers are matched as DL4GAM does: a glacier's area at each date is the ice mapped *inside its
reference outline*, so both dates share the outline's ice divides (overlapping outlines are made
disjoint first-come, as the inventory does) and a tributary that detaches still counts for its
glacier. Ice outside every outline is reported apart, per tile.

Areas are counted on pixels, on the tiles' own grid (both epochs share it, see
:func:`~glacierscale.inventory.change_epoch.check_comparable`), and *only where both epochs saw
the ground*: a pixel that is cloud or no data in either epoch counts for neither. The share of the
outline seen in both epochs is reported; a glacier seen under ``min_seen`` is flagged and left
out of the regional sums instead of being compared on a fraction of itself. Each pixel is owned
by one tile core (:func:`~glacierscale.core.grid.core_mask`), so a glacier across a UTM zone
border is counted once, from both zones' tiles, in ground km².

Uncertainty comes from the mapping, as in DL4GAM: each epoch's area at the lower and upper bound
of the probability (``p - u`` and ``p + u`` against the threshold, ``u`` the per-pixel spread of
the model's members where it has them, else the inventory's fixed margin), half their difference
being the epoch's error. The two epochs' errors are independent (other scenes, often another
sensor), so they add in quadrature for a glacier's change; across the glaciers of a region they
are correlated (one model and threshold, scenes shared by neighbours: a bias moves every glacier
the same way), so they add linearly. The independent-glacier figure is reported beside it.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import logging
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.features import rasterize
from rasterio.io import MemoryFile

from glacierscale.core.grid import core_mask, footprints
from glacierscale.core.tiles import TileSpec, cells_covering
from glacierscale.core.zones import areal_scale, to_lonlat, zones_touching
from glacierscale.inventory.change_epoch import (
    ChangeRefusedError,
    TileRecord,
    check_comparable,
    open_epoch,
)
from glacierscale.inventory.change_table import (
    COLUMNS,
    COMBINATION,
    glacier_table,
    outside_table,
    region_table,
)
from glacierscale.inventory.change_table import C as _C
from glacierscale.inventory.merge import glims_like_id
from glacierscale.inventory.outlines import read_outlines
from glacierscale.inventory.rgi import has_rgi_ids, reference_ids, rgi_region
from glacierscale.inventory.vectorize import DEFAULT_PROB_MARGIN
from glacierscale.io import Store, redact_url, write_geoparquet

log = logging.getLogger(__name__)

#: Default share of an outline that both epochs must have seen for the glacier to be compared.
MIN_SEEN = 0.9
_NODATA = 255


@dataclass
class ChangeResult:
    """What ``compare`` produced: tables, plots and the settings, for files, report and UI."""

    epochs: tuple[dict[str, Any], dict[str, Any]]
    glaciers: gpd.GeoDataFrame
    regions: pd.DataFrame
    outside: pd.DataFrame
    settings: dict[str, Any]
    plots: dict[str, bytes] = field(default_factory=dict)
    plot_urls: dict[str, str] = field(default_factory=dict)  # region -> written PNG
    written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (epochs, settings, regional rows, files), as ``change.json``."""
        rows = json.loads(self.regions.to_json(orient="records", double_precision=10))
        return {"epochs": list(self.epochs), "settings": self.settings,
                "errors_combined": COMBINATION, "regions": rows,
                "glaciers": len(self.glaciers),
                "flagged": int((~self.glaciers["compared"]).sum()) if len(self.glaciers) else 0,
                "written": [redact_url(w) for w in self.written]}

    def markdown(self) -> str:
        """A report section: epochs and sensors, the regional table, how errors combine."""
        from glacierscale.inventory.change_plot import change_markdown

        return change_markdown(self)

    def table_rows(self) -> list[dict[str, Any]]:
        """Regional rows as plain dicts (what a Prefect table artifact takes)."""
        rows: list[dict[str, Any]] = json.loads(
            self.regions.to_json(orient="records", double_precision=6))
        return rows


def glacier_outlines(path: str) -> gpd.GeoDataFrame:
    """Reference outlines (any CRS) -> EPSG:4326 with ``glacier_id``, ``name``, ``region``.

    RGI outlines keep their RGI ids and O1 regions; other outlines (a hand-drawn glacier) get a
    GLIMS-like id from their position and region "unknown".
    """
    ref = read_outlines(path)
    ref = ref[ref.geometry.notna() & ~ref.geometry.is_empty].to_crs(4326).reset_index(drop=True)
    ref["geometry"] = ref.geometry.make_valid()
    rgi = has_rgi_ids(ref)
    if rgi:
        ids = reference_ids(ref)
    else:
        pts = ref.geometry.representative_point()
        ids = pd.Series([glims_like_id(p.x, p.y) for p in pts], index=ref.index)
    if ids.duplicated().any():
        raise ValueError(f"the outlines {path!r} repeat glacier ids (e.g. "
                         f"{ids[ids.duplicated()].iloc[0]!r}); dissolve them by id first")
    names = ref.get("Name", ref.get("glac_name", pd.Series([None] * len(ref), index=ref.index)))
    regions = ([rgi_region(i, row) for i, (_, row) in zip(ids, ref.iterrows(), strict=True)]
               if rgi else ["unknown"] * len(ref))
    return gpd.GeoDataFrame(
        {"glacier_id": ids.to_numpy(), "name": [None if n is None or str(n) in ("", "nan", "None")
                                                 else str(n) for n in names],
         "region": regions}, geometry=ref.geometry.to_numpy(), crs="EPSG:4326")


def _tile_geoms(outlines: gpd.GeoDataFrame, present: Sequence[str], size_m: float
                ) -> tuple[np.ndarray, dict[str, list[tuple[int, Any]]]]:
    """Outlines that touch the mapped area, and per grid tile the projected outlines it holds.

    Every tile an outline touches is listed, mapped or not, so that the parts of a glacier no
    epoch mapped still count in its outline (and lower its seen share).
    """
    parts: list[np.ndarray] = []
    for epsg in sorted({int(t.split("_")[0]) for t in present}):
        cells = [TileSpec.from_id(t) for t in present if int(t.split("_")[0]) == epsg]
        parts.append(footprints(epsg, [c.col for c in cells], [c.row for c in cells], size_m))
    geoms = outlines.geometry.to_numpy()
    hit = np.unique(shapely.STRtree(geoms).query(np.concatenate(parts),
                                                 predicate="intersects")[1])
    per_zone: dict[int, list[int]] = {}
    for i in hit.tolist():
        for z in zones_touching(tuple(shapely.bounds(geoms[i]))):
            per_zone.setdefault(z, []).append(i)
    tiles: dict[str, list[tuple[int, Any]]] = {t: [] for t in present}
    for epsg, idx in per_zone.items():
        proj = gpd.GeoSeries(geoms[idx], crs=4326).to_crs(epsg).to_numpy()
        for i, g in zip(idx, proj, strict=True):
            if g is None or g.is_empty or not np.isfinite(shapely.bounds(g)).all():
                continue  # far outside this zone: the projection cannot hold it
            for col, row in cells_covering(epsg, tuple(shapely.bounds(g)), size_m):
                tiles.setdefault(TileSpec(epsg, col, row).tile_id, []).append((i, g))
    return hit, tiles


def _read(store: Store, key: str, shape: tuple[int, int]) -> np.ndarray:
    with MemoryFile(store.read_bytes(key)) as mem, mem.open() as ds:
        arr = ds.read(1)
    if arr.shape != shape:
        raise ChangeRefusedError(f"{redact_url(store.url(key))} has shape {arr.shape}, not the "
                                 f"tile core {shape}: the output is damaged or not a tile core")
    return arr


@dataclass(frozen=True)
class _Side:
    """What a tile task needs of one epoch: where its outputs are and the tile's record."""

    url: str
    storage_options: dict[str, Any] | None
    record: TileRecord | None


def _epoch_pixels(side: _Side, shape: tuple[int, int], thr: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """seen, ice, sure (lower bound) and maybe (upper bound) pixels of one epoch in one tile."""
    rec = side.record
    mask_key = rec.asset("mask") if rec is not None else None
    if rec is None or mask_key is None:
        no = np.zeros(shape, bool)
        return no, no, no, no
    store = Store(side.url, side.storage_options)
    mask = _read(store, mask_key, shape)
    seen = mask != _NODATA
    ice = mask == 1
    prob_key = rec.asset("prob")
    if prob_key is None:  # no probability: the mask's call, without a band
        return seen, ice, ice, ice
    raw = _read(store, prob_key, shape)
    p = np.where(raw == _NODATA, np.nan, raw.astype("float32") / 100.0)
    unc_key = rec.asset("uncertainty")
    margin: np.ndarray | float = DEFAULT_PROB_MARGIN
    if unc_key is not None:
        margin = np.nan_to_num(_read(store, unc_key, shape).astype("float32"),
                               nan=DEFAULT_PROB_MARGIN)
    with np.errstate(invalid="ignore"):
        sure = ice & (p - margin >= thr)
        maybe = seen & (ice | (p + margin >= thr))
    return seen, ice, sure, maybe


def tile_sums(tile: TileSpec, glaciers: Sequence[tuple[int, Any]], a: _Side, b: _Side,
              thr: float) -> tuple[np.ndarray, np.ndarray]:
    """(glacier indices, sums) of one tile: a row of :data:`COLUMNS` per glacier, in ground km².

    ``glaciers`` are (index, outline in the tile CRS); row 0 of ``sums`` is the ice outside
    every outline. A plain function of small values, so any executor can run it.
    """
    n = tile.size_px
    shape = (n, n)
    idx = np.array([i for i, _ in glaciers], dtype=np.int64)
    labels = np.zeros(shape, np.int32)
    if len(glaciers):
        # Drawn last-to-first, so where outlines overlap the first one keeps the pixel: the
        # inventory makes reference outlines disjoint the same way.
        labels = rasterize(((g, k + 1) for k, (_, g) in reversed(list(enumerate(glaciers)))),
                           out_shape=shape, transform=tile.core_transform, fill=0,
                           dtype="int32")
    owned = core_mask(tile)
    seen_a, ice_a, lo_a, hi_a = _epoch_pixels(a, shape, thr)
    seen_b, ice_b, lo_b, hi_b = _epoch_pixels(b, shape, thr)
    seen_a &= owned
    seen_b &= owned
    both = seen_a & seen_b
    parts = {"owned": owned, "seen_a": seen_a, "seen_b": seen_b, "both": both,
             "ice_a": both & ice_a, "lo_a": both & lo_a, "hi_a": both & hi_a,
             "ice_b": both & ice_b, "lo_b": both & lo_b, "hi_b": both & hi_b}
    m = len(glaciers) + 1
    sums = np.stack([np.bincount(labels[parts[c]], minlength=m) for c in COLUMNS], axis=1)
    # Ground area of a pixel at the tile centre: UTM distorts areas by < 0.2 % and varies by
    # far less across one tile; polar stereographic by up to ~6 %.
    minx, miny, maxx, maxy = tile.core_bounds
    lon, lat = to_lonlat(tile.epsg).transform((minx + maxx) / 2, (miny + maxy) / 2)
    px_km2 = tile.resolution ** 2 / float(areal_scale(tile.epsg, lon, lat)[0]) / 1e6
    return idx, sums.astype("float64") * px_km2


def _outside_region(tid: str, idx: np.ndarray, sums: np.ndarray, ref: gpd.GeoDataFrame,
                    tree: shapely.STRtree) -> str:
    """Region of a tile's outside ice: of the outline owning most of the tile, else the nearest
    outline (as the inventory places a new glacier in its nearest neighbour's region)."""
    if len(idx) and sums[1:, _C["owned"]].max() > 0:
        return str(ref["region"].iloc[int(idx[np.argmax(sums[1:, _C["owned"]])])])
    tile = TileSpec.from_id(tid)
    x, y = np.mean(np.asarray(tile.core_bounds).reshape(2, 2), axis=0)
    lon, lat = to_lonlat(tile.epsg).transform(x, y)
    nearest = tree.nearest(shapely.Point(lon, lat))
    return str(ref["region"].iloc[int(nearest)]) if nearest is not None else "unknown"


def compare(a_url: str, b_url: str, *, outlines: str | None = None, out: str | None = None,
            min_seen: float = MIN_SEEN, storage_options: dict[str, Any] | None = None,
            executor: Executor | None = None) -> ChangeResult:
    """Area change per glacier and per region between the outputs at ``a_url`` and ``b_url``.

    ``outlines`` are the reference glacier outlines (default: the reference the run recorded).
    Epochs are put in date order. With ``out`` the results are written there: ``glaciers.parquet``
    (GeoParquet, EPSG:4326, outline geometry), ``regions.csv``, ``outside.csv``, ``change.md``,
    ``change.json`` and ``plots/region_<region>.png``. Tiles are counted on ``executor`` (e.g.
    a Dask client's ``get_executor()``; default: a local thread pool). Raises
    :class:`ChangeRefusedError` for outputs that cannot be compared.
    """
    if not 0.0 <= min_seen <= 1.0:
        raise ValueError(f"min_seen must lie in 0..1, got {min_seen}")
    a, b = open_epoch(a_url, storage_options), open_epoch(b_url, storage_options)
    check_comparable(a, b)
    if a.day and b.day and b.day < a.day:
        log.info("epochs put in date order: %s (%s) before %s (%s)", b.name, b.day, a.name, a.day)
        a, b = b, a
    source = outlines or a.config.get("reference") or b.config.get("reference")
    if not source:
        raise ChangeRefusedError("no glacier outlines: neither run recorded a reference; pass "
                                 "the RGI outlines (--outlines) that define the glaciers")
    ref = glacier_outlines(str(source))
    present = sorted(set(a.tiles) | set(b.tiles))
    hit, per_tile = _tile_geoms(ref, present, a.tile_size_px * a.resolution)
    order = sorted(per_tile)
    tiles = [TileSpec.from_id(t, a.tile_size_px, a.resolution, a.halo_px) for t in order]
    sides_a = [_Side(a.url, storage_options, a.tiles.get(t)) for t in order]
    sides_b = [_Side(b.url, storage_options, b.tiles.get(t)) for t in order]
    totals = np.zeros((len(ref), len(COLUMNS)))
    best = np.zeros(len(ref))
    best_tile = np.full(len(ref), "", dtype=object)
    outside = []
    tree = shapely.STRtree(ref.geometry.to_numpy())
    # Decoding and counting release the GIL; object stores like parallel reads.
    with contextlib.ExitStack() as stack:
        pool = executor or stack.enter_context(ThreadPoolExecutor(max_workers=8))
        results = pool.map(tile_sums, tiles, [per_tile[t] for t in order], sides_a, sides_b,
                           [a.threshold] * len(order))
        for tid, (idx, sums) in zip(order, results, strict=True):
            if len(idx):
                totals[idx] += sums[1:]  # a glacier appears once per tile: no repeated index
                better = sums[1:, _C["both"]] > best[idx]
                best[idx[better]] = sums[1:, _C["both"]][better]
                best_tile[idx[better]] = tid
            if tid in a.tiles or tid in b.tiles:
                outside.append((tid, _outside_region(tid, idx, sums, ref, tree), sums[0]))
    keep = hit[totals[hit, _C["owned"]] > 0]  # an outline smaller than a pixel has no pixel
    glaciers = glacier_table(ref.iloc[keep], totals[keep], best_tile[keep], a, b, min_seen)
    out_tab = outside_table(outside, a, b)
    regions = region_table(glaciers, out_tab)
    settings = {"min_seen": min_seen, "threshold": a.threshold,
                "outlines": redact_url(str(source)), "grid": {"tile_size_px": a.tile_size_px,
                                                             "resolution_m": a.resolution},
                "model": sorted(a.models), "weights_sha256": sorted(a.weights_hashes),
                "uncertainty": "ensemble spread" if any(
                    t.asset("uncertainty") for t in a.tiles.values())
                else f"fixed probability margin ±{DEFAULT_PROB_MARGIN:g}"}
    result = ChangeResult((a.summary(), b.summary()), glaciers, regions, out_tab, settings)
    from glacierscale.inventory.change_plot import region_plots

    result.plots = region_plots(result)
    if out:
        write_change(result, out, storage_options)
    log.info("change %s -> %s: %d glaciers (%d flagged)", a.name, b.name, len(glaciers),
             int((~glaciers["compared"]).sum()) if len(glaciers) else 0)
    return result


def write_change(result: ChangeResult, out: str,
                 storage_options: dict[str, Any] | None = None) -> list[str]:
    """Write a :class:`ChangeResult` under ``out``; returns the URLs written."""
    store = Store(out, storage_options)
    written = [write_geoparquet(store, "glaciers.parquet", result.glaciers)]
    for key, frame in (("regions.csv", result.regions), ("outside.csv", result.outside)):
        buf = _io.StringIO()
        frame.to_csv(buf, index=False, float_format="%.6g")
        written.append(store.write_bytes_atomic(key, buf.getvalue().encode()))
    for region, png in sorted(result.plots.items()):
        result.plot_urls[region] = store.write_bytes_atomic(f"plots/region_{region}.png", png)
        written.append(result.plot_urls[region])
    written.append(store.write_bytes_atomic("change.md", result.markdown().encode()))
    result.written = written
    summary = result.to_dict()
    summary["written"].append(store.url("change.json"))
    written.append(store.write_bytes_atomic("change.json", json.dumps(summary, indent=1).encode()))
    return written

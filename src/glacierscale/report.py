"""The run's human-readable outputs: evaluation against a reference, report.md and a quicklook.

Also the one grouping of tile failures by cause (:func:`failure_groups`), which the report and
the CLI both show: a thousand tiles failing for one reason read as one line, not a thousand.
Everything rendered here goes through the one redaction.
"""

from __future__ import annotations

import io as _io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glacierscale import __version__
from glacierscale.config import RunConfig
from glacierscale.core.redact import redact
from glacierscale.inventory import evaluate
from glacierscale.inventory.build import union_footprints
from glacierscale.io import Store, gdal_env_for
from glacierscale.models import domain_warning

log = logging.getLogger(__name__)

_MAX_QUICKLOOK_TILES = 64


def run_footprint(store: Store, tile_ids: Sequence[str]) -> Any:
    """Union (lon/lat) of the valid-data footprints recorded in the tiles' STAC items."""
    return union_footprints(json.loads(store.read_bytes(f"tiles/{tid}/item.json")).get("geometry")
                            for tid in tile_ids)


def evaluate_run(store: Store, tile_ids: Sequence[str], inventory: Any, reference: Any,
                 cfg: RunConfig) -> dict[str, float] | None:
    """IoU, precision, recall, ... of the inventory against the reference over the valid area."""
    import geopandas as gpd

    footprint = run_footprint(store, tile_ids)
    if footprint is None or footprint.is_empty:
        return None
    crs = f"EPSG:{tile_ids[0].split('_')[0]}"
    valid = gpd.GeoSeries([footprint], crs="EPSG:4326").to_crs(crs).iloc[0]
    pred = inventory.to_crs(crs) if len(inventory) else inventory.set_crs(crs, allow_override=True)
    return evaluate(pred, reference.to_crs(crs), valid, crs=crs, resolution=cfg.grid.resolution)


def quicklook_png(store: Store, tile_ids: Sequence[str], inventory: Any, reference: Any,
                  cfg: RunConfig) -> bytes | None:
    """PNG of the probability mosaic with the inventory (and reference) outlines over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    if not tile_ids:
        return None
    epsgs = {t.split("_")[0] for t in tile_ids}
    crs = f"EPSG:{next(iter(epsgs))}" if len(epsgs) == 1 else "EPSG:4326"
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    extent: list[tuple[float, float, float, float]] = []
    if len(epsgs) == 1 and len(tile_ids) <= _MAX_QUICKLOOK_TILES:
        with rasterio.Env(**gdal_env_for(cfg.out)):
            for tid in tile_ids:
                url = store.url(f"tiles/{tid}/glacier_prob.tif")
                with rasterio.open(url) as ds:
                    step = max(1, ds.width // 256)
                    arr = ds.read(1, out_shape=(ds.height // step, ds.width // step))
                    b = ds.bounds
                data = np.ma.masked_equal(arr, 255)
                rows, cols = np.nonzero(~np.ma.getmaskarray(data))
                if rows.size:
                    # zoom to the valid data, not to the (mostly empty) tile squares
                    px = (b.right - b.left) / arr.shape[1]
                    extent.append((b.left + cols.min() * px, b.top - (rows.max() + 1) * px,
                                   b.left + (cols.max() + 1) * px, b.top - rows.min() * px))
                im = ax.imshow(data, extent=(b.left, b.right, b.bottom, b.top), cmap="Blues",
                               vmin=0, vmax=100, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7, label="glacier probability (%)")
    if len(inventory):
        inventory.to_crs(crs).boundary.plot(ax=ax, color="crimson", linewidth=0.8)
    if reference is not None:
        reference.to_crs(crs).boundary.plot(ax=ax, color="gold", linewidth=1.0, linestyle="--")
    if extent:
        x0, y0 = min(e[0] for e in extent), min(e[1] for e in extent)
        x1, y1 = max(e[2] for e in extent), max(e[3] for e in extent)
        pad = 0.03 * max(x1 - x0, y1 - y0)
        ax.set_xlim(x0 - pad, x1 + pad)
        ax.set_ylim(y0 - pad, y1 + pad)
    ax.set_title(f"glacierscale {__version__}: {redact(cfg.model)} — inventory (red), reference "
                 "(gold)", fontsize=9)
    ax.set_xlabel(crs)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# A URL, or a path of two or more parts, inside a failure reason: the asset it names.
_ASSET = re.compile(r"(?:\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+|(?<![\w.])/(?:[^\s'\"<>/]+/)+"
                    r"[^\s'\"<>]*)")
_TILE_ID = re.compile(r"\b\d{4,5}_\d{4}_\d{4}\b")


@dataclass(frozen=True)
class FailureGroup:
    """Tiles that failed for one cause: the cause, and (tile id, asset or "") per tile."""

    cause: str
    tiles: tuple[tuple[str, str], ...]


def failure_cause(reason: str) -> tuple[str, str]:
    """(cause, asset) of a tile's failure reason: the asset URL or path it names, and the reason
    with that asset and tile ids replaced, so tiles failing alike share one cause."""
    reason = " ".join(redact(reason).split())
    found = _ASSET.search(reason)
    asset = found.group(0).rstrip(".,;:)]}'\"") if found else ""
    cause = _ASSET.sub("<asset>", reason)
    cause = _TILE_ID.sub("<tile>", cause)
    return cause or "unknown cause", asset


def failure_groups(records: Sequence[Mapping[str, Any]]) -> list[FailureGroup]:
    """The failed tiles of a manifest grouped by cause, the most frequent cause first."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for r in records:
        if r.get("status") != "failed":
            continue
        cause, asset = failure_cause(str(r.get("reason", "")))
        groups.setdefault(cause, []).append((str(r["tile_id"]), asset))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [FailureGroup(cause, tuple(tiles)) for cause, tiles in ordered]


def render_report(cfg: RunConfig, records: Sequence[dict[str, Any]], timings: dict[str, float],
                  evaluation: dict[str, float] | None, n_glaciers: int, glacier_km2: float,
                  quicklook: str | None, other_tiles: int = 0) -> str:
    """Markdown report: what ran, per-stage time, tile outcomes, evaluation (redacted).

    ``other_tiles`` counts finished tiles of other runs in the same output, which this run's
    inventory leaves out.
    """
    counts: dict[str, int] = {}
    stage: dict[str, float] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        for k, v in r["seconds"].items():
            stage[k] = stage.get(k, 0.0) + v
    lines = [
        "# glacierscale run report", "",
        f"- version: {__version__}", f"- model: `{cfg.model}`", f"- AOI: `{cfg.aoi}`",
        f"- catalog: `{cfg.catalog}`", f"- window: {cfg.start} .. {cfg.end}",
        f"- grid: {cfg.grid.tile_size_px} px tiles at {cfg.grid.resolution:g} m, "
        f"halo {cfg.grid.halo_px} px", f"- config token: `{cfg.token()}`",
        f"- glaciers in inventory: {n_glaciers} ({glacier_km2:.2f} km²), from this run's "
        f"{counts.get('done', 0) + counts.get('skipped', 0)} finished tile(s)",
    ]
    if other_tiles:
        lines.append(f"- other tiles in this output (another area, model or settings), left out "
                     f"of this inventory: {other_tiles}; `glacierscale merge --out ...` merges "
                     "every tile")
    lines += [
        "",
        "## Tiles", "", "| status | tiles |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(counts.items())], "",
        "## Time per stage", "", "| stage | seconds |", "|---|---|",
        *[f"| {k} (sum over tiles) | {v:.2f} |" for k, v in stage.items()],
        *[f"| {k} | {v:.2f} |" for k, v in timings.items()], "",
    ]
    unmasked = [r["tile_id"] for r in records if r.get("cloud_masked") is False]
    if unmasked:
        lines += ["## Clouds", "",
                  f"{len(unmasked)} tile(s) were loaded from items without a cloud mask asset "
                  "(no SCL, QA_PIXEL or Fmask): clouds there are not masked, and bright cloud can "
                  "be mapped as ice. Tiles: " + ", ".join(unmasked[:20])
                  + (" ..." if len(unmasked) > 20 else ""), ""]
    domain = domain_warning(cfg.model, [r.get("out_of_domain", ()) for r in records
                                        if r["status"] in ("done", "skipped")])
    if domain:
        lines += ["## Model domain", "", domain + " (the model card says where it was trained).",
                  ""]
    groups = failure_groups(records)
    if groups:
        lines += ["## Failed tiles, by cause", "", "| tiles | cause | examples (tile: asset) |",
                  "|---:|---|---|"]
        for g in groups[:20]:
            examples = "; ".join(f"{t}: {a}" if a else t for t, a in g.tiles[:3])
            lines.append(f"| {len(g.tiles)} | {_cell(g.cause)} | {_cell(examples)} |")
        lines.append("")
    nodata = [r for r in records if r["status"] == "no-data"]
    if nodata:
        lines += ["## Tiles without data", "", "| tile | reason |", "|---|---|"]
        lines += [f"| {r['tile_id']} | {_cell(str(r['reason']))} |" for r in nodata[:50]]
        lines.append("")
    if evaluation is not None:
        lines += ["## Evaluation against the reference outlines", "",
                  f"Reference: `{cfg.reference}` (over the valid-data area of the run).", "",
                  "| metric | value |", "|---|---|",
                  *[f"| {k} | {v:.4f} |" for k, v in evaluation.items()], "",
                  "recall_in_reference is the share of reference ice mapped as ice; "
                  "fp_fraction_ring the share of a ring just outside the reference mapped as "
                  "ice (reference inventories are often incomplete, so read IoU with both).", ""]
    if quicklook:
        lines += ["## Quicklook", "", f"![quicklook]({quicklook})", ""]
    return redact("\n".join(lines))


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def evaluate_inventory(inventory: str, reference: str, *, aoi: str | None = None,
                       resolution: float = 10.0) -> dict[str, float]:
    """Evaluate an inventory file (or a run's output root) against reference outlines.

    The valid area is ``aoi`` (a W,S,E,N box or a polygon file) or, for a glacierscale run, the
    union of its tiles' valid-data footprints; evaluating outside it would count missing imagery
    as missed glaciers.
    """
    import geopandas as gpd
    from shapely.geometry import box

    from glacierscale.core.tiles import local_utm_epsg
    from glacierscale.inventory import read_outlines
    from glacierscale.io import read_geoparquet

    root, key = (inventory, "inventory/glaciers.parquet")
    if inventory.endswith(".parquet"):
        root, _, name = inventory.rstrip("/").rpartition("/")
        key = name
        if root.endswith("/inventory") or root == "inventory":
            root, key = root[: -len("inventory")].rstrip("/") or ".", f"inventory/{name}"
    store = Store(root)
    pred = read_geoparquet(store, key)
    ref = read_outlines(reference)
    if aoi is None:
        tile_ids = sorted({k.split("/")[1] for k in store.list("tiles") if k.endswith("item.json")})
        footprint = run_footprint(store, tile_ids) if tile_ids else None
        if footprint is None:
            raise ValueError(f"{inventory} is not inside a glacierscale run output (no "
                             "tiles/*/item.json beside it): pass --aoi W,S,E,N or a polygon file")
        area = gpd.GeoSeries([footprint], crs="EPSG:4326")
    elif aoi.count(",") == 3:
        w, s, e, n = (float(v) for v in aoi.split(","))
        area = gpd.GeoSeries([box(w, s, e, n)], crs="EPSG:4326")
    else:
        area = gpd.GeoSeries([read_outlines(aoi).to_crs(4326).union_all()], crs="EPSG:4326")
    c = area.iloc[0].centroid
    crs = f"EPSG:{local_utm_epsg(c.x, c.y)}"
    valid = area.to_crs(crs).iloc[0]
    return evaluate(pred.to_crs(crs), ref.to_crs(crs), valid, crs=crs, resolution=resolution)

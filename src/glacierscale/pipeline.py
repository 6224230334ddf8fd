"""The life of a tile, in one readable place: search -> load -> infer -> write -> vectorize.

``process_tile`` is a plain function of a frozen tile and a frozen config, so any executor can run
it (Dask workers, a thread pool, a test). It never raises for a problem that belongs to one tile:
the tile gets a status and a reason in the run manifest, and the run goes on. Outputs are written
with atomic puts and the tile's STAC item last, so a tile is complete or absent, never partial.
No Prefect here: orchestration wraps these functions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import Transformer

from glacierscale import __version__
from glacierscale.catalog import open_catalog, season_dates, select_scenes
from glacierscale.config import RunConfig
from glacierscale.core.grid import core_mask
from glacierscale.core.tiles import TileSpec
from glacierscale.infer import predict_tile
from glacierscale.inventory import vectorize_tile
from glacierscale.io import Store, write_cog, write_geoparquet
from glacierscale.load import DEM_BANDS, MissingBandError, configure_cloud_reads, load_tile
from glacierscale.models import GlacierModel, load_model
from glacierscale.plan import plan_tiles

log = logging.getLogger(__name__)

#: Output names under ``tiles/<tile_id>/``: the contract users' scripts rely on.
PROB, MASK, UNCERTAINTY, OUTLINES, ITEM = (
    "glacier_prob.tif", "glacier_mask.tif", "glacier_uncertainty.tif", "outlines.parquet",
    "item.json")
NODATA_U8 = 255
#: Per-tile problems that become a "failed" status instead of stopping the run. Anything else
#: (a bug) is recorded too, with its type, so one bad tile never loses the others' work.
_TILE_ERRORS: tuple[type[BaseException], ...] = (Exception,)


@dataclass(frozen=True)
class TileResult:
    """What happened to one tile; one record of the run manifest."""

    tile_id: str
    status: str  # "done" | "no-data" | "failed" | "skipped" (valid outputs already existed)
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    glacier_km2: float = 0.0
    item_ids: tuple[str, ...] = ()
    cloud_masked: bool | None = None  # None: not loaded (skipped, no scenes)

    def to_dict(self) -> dict[str, Any]:
        return {"tile_id": self.tile_id, "status": self.status, "reason": self.reason,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "glacier_km2": round(self.glacier_km2, 4), "item_ids": list(self.item_ids),
                "cloud_masked": self.cloud_masked}


def tile_key(tile: TileSpec, name: str) -> str:
    """Key of one output of a tile, relative to the run's output root."""
    return f"tiles/{tile.tile_id}/{name}"


def plan(cfg: RunConfig) -> list[TileSpec]:
    """The tiles of a run: the grid cells covering ``cfg.aoi`` (a bbox or outlines)."""
    return list(plan_tiles(cfg.aoi, cfg.grid).tiles)


@lru_cache(maxsize=4)
def _model(name: str) -> GlacierModel:
    # One model instance per worker process: loading weights per tile would dominate small tiles.
    return load_model(name)


def tile_done(tile: TileSpec, cfg: RunConfig) -> bool:
    """True when the tile's outputs exist and were made by this configuration (resume)."""
    store = Store(cfg.out)
    key = tile_key(tile, ITEM)
    if not store.exists(key):
        return False
    try:
        record = json.loads(store.read_bytes(key))
    except (ValueError, OSError):
        return False
    props = record.get("properties", {})
    if props.get("glacierscale:config_token") != cfg.token():
        return False
    return all(store.exists(tile_key(tile, n)) for n in (PROB, MASK, OUTLINES))


@contextmanager
def _stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def tile_bbox_lonlat(tile: TileSpec) -> tuple[float, float, float, float]:
    """Lon/lat box of the tile with its halo (densified edges, so curved edges are inside)."""
    minx, miny, maxx, maxy = tile.bounds
    t = np.linspace(0.0, 1.0, 21)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full_like(t, maxx),
                         maxx - (maxx - minx) * t, np.full_like(t, minx)])
    ys = np.concatenate([np.full_like(t, miny), miny + (maxy - miny) * t,
                         np.full_like(t, maxy), maxy - (maxy - miny) * t])
    lon, lat = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return (float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat)))


def process_tile(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """Map one tile end to end; per-tile problems become a status, never an exception."""
    seconds: dict[str, float] = {}
    try:
        if tile_done(tile, cfg):
            return TileResult(tile.tile_id, "skipped", "valid outputs already exist")
        return _process(tile, cfg, seconds)
    except MissingBandError as exc:
        return TileResult(tile.tile_id, "failed", str(exc), seconds)
    except _TILE_ERRORS as exc:
        log.exception("tile %s failed", tile.tile_id)
        return TileResult(tile.tile_id, "failed", f"{type(exc).__name__}: {exc}", seconds)


def _process(tile: TileSpec, cfg: RunConfig, seconds: dict[str, float]) -> TileResult:
    model = _model(cfg.model)
    bands = tuple(model.card.bands)
    with _stage(seconds, "search"):
        source = open_catalog(cfg.catalog)
        bbox = tile_bbox_lonlat(tile)
        start, end = _date_window(cfg, bbox)
        found = source.search(bbox, start, end, cfg.collections)
        selection = select_scenes(found, bbox=bbox, start=start, end=end,
                                  max_cloud_cover=cfg.max_cloud_cover,
                                  max_scenes=cfg.max_scenes)
        optical = list(selection.items)
        needs_dem = any(b in DEM_BANDS for b in bands)
        dem = source.search(bbox, None, None, cfg.dem_collections) if needs_dem else []
    if not optical:
        return TileResult(tile.tile_id, "no-data",
                          f"no usable scenes in {start}..{end} in collections "
                          f"{list(cfg.collections) or 'all'} ({len(found)} found, cloud cover "
                          f"<= {cfg.max_cloud_cover:g}%)", seconds)
    with _stage(seconds, "load"):
        configure_cloud_reads()
        # Threads, not the distributed client: this already runs inside a Dask task, and the
        # tile's chunks are small enough that the worker's own threads read them best.
        ds = load_tile(tile, bands, optical, dem).compute(scheduler="threads")
        image = np.stack([ds[b].values.astype("float32", copy=False) for b in bands])
        item_ids = tuple(ds.attrs.get("item_ids", [i.id for i in optical]))
        cloud_masked = bool(ds.attrs.get("cloud_masked", False))
        dates = [i.datetime for i in optical if i.datetime is not None]
        notes: dict[str, Any] = {
            "selection": selection.report(), "cloud_masked": cloud_masked,
            "datetime": max(dates).strftime("%Y-%m-%dT%H:%M:%SZ") if dates else None}
    core = (slice(None), *tile.core_slice)
    if not np.isfinite(image[core]).all(axis=0).any():
        return TileResult(tile.tile_id, "no-data", "no valid pixels in the tile core", seconds,
                          item_ids=item_ids)
    with _stage(seconds, "infer"):
        pred = predict_tile(model, image, cfg.infer)
    prob = pred.prob[tile.core_slice]
    # Along a UTM zone border the neighbouring zone's tile owns part of this square: leave it
    # nodata here so no ground is mapped (and counted) twice.
    valid = np.isfinite(prob) & core_mask(tile)
    prob_u8 = np.where(valid, np.round(np.nan_to_num(prob) * 100.0), NODATA_U8).astype("uint8")
    mask = np.where(valid, (np.nan_to_num(prob) >= cfg.infer.threshold), NODATA_U8)
    mask = mask.astype("uint8")
    store = Store(cfg.out)
    tags = _provenance(cfg, model, item_ids)
    unc = None if pred.uncertainty is None else pred.uncertainty[tile.core_slice]
    with _stage(seconds, "write"):
        def cog(name: str, data: np.ndarray, nodata: float, description: str) -> None:
            write_cog(store, tile_key(tile, name), data, transform=tile.core_transform,
                      crs=tile.crs, nodata=nodata, tags=tags, descriptions=[description])

        cog(PROB, prob_u8, NODATA_U8, "glacier probability (percent)")
        cog(MASK, mask, NODATA_U8, "glacier mask (1 glacier, 0 not glacier)")
        if unc is not None:
            cog(UNCERTAINTY, unc.astype("float32"), np.nan,
                "glacier probability standard deviation")
    with _stage(seconds, "vectorize"):
        polys = vectorize_tile(mask, np.where(valid, prob, np.nan).astype("float32"),
                               transform=tile.core_transform, crs=tile.crs,
                               tile_id=tile.tile_id, uncertainty=unc,
                               min_area_m2=max(5000.0, 50 * cfg.grid.resolution**2))
        write_geoparquet(store, tile_key(tile, OUTLINES), polys)
        glacier_km2 = float(polys.geometry.area.sum() / 1e6) if len(polys) else 0.0
    with _stage(seconds, "write"):
        record = _tile_record(tile, cfg, tags, valid, item_ids, unc is not None, notes)
        store.write_bytes_atomic(tile_key(tile, ITEM), json.dumps(record, indent=1).encode())
    return TileResult(tile.tile_id, "done", "", seconds, glacier_km2, item_ids, cloud_masked)


def _date_window(cfg: RunConfig, bbox: tuple[float, float, float, float]
                 ) -> tuple[date | None, date | None]:
    """The run's dates, or the end-of-melt-season window of the tile's latitude and year."""
    if cfg.start or cfg.end:
        return cfg.start, cfg.end
    lat = 0.5 * (bbox[1] + bbox[3])
    year = cfg.year or date.today().year - 1
    return season_dates(lat, year)


def _provenance(cfg: RunConfig, model: GlacierModel, item_ids: Sequence[str]) -> dict[str, str]:
    card = model.card
    return {
        "glacierscale_version": __version__,
        "model": card.name,
        "model_weights_sha256": getattr(card, "weights_hash", "") or "none",
        "config_token": cfg.token(),
        "input_items": ",".join(item_ids),
    }


def _tile_record(tile: TileSpec, cfg: RunConfig, tags: dict[str, str], valid: np.ndarray,
                 item_ids: Sequence[str], has_unc: bool, notes: dict[str, Any]
                 ) -> dict[str, Any]:
    """STAC item of a tile's outputs; its geometry is the footprint of valid data (lon/lat)."""
    footprint = _valid_footprint(valid, tile)
    assets = {"probability": PROB, "mask": MASK} | ({"uncertainty": UNCERTAINTY} if has_unc else {})
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": tile.tile_id,
        "collection": "glacierscale-outputs",
        "geometry": footprint["geometry"], "bbox": footprint["bbox"],
        "properties": {
            # the latest input acquisition: what the outputs show the glacier as
            "datetime": notes["datetime"],
            "proj:code": tile.crs, "proj:shape": [tile.size_px, tile.size_px],
            "proj:transform": list(tile.core_transform)[:6],
            "glacierscale:config_token": tags["config_token"],
            "glacierscale:model": tags["model"],
            "glacierscale:version": tags["glacierscale_version"],
            "glacierscale:input_items": list(item_ids),
            "glacierscale:cloud_masked": notes["cloud_masked"],
            "glacierscale:scene_selection": notes["selection"],
        },
        "assets": {k: {"href": f"./{v}", "type": "image/tiff; application=geotiff; "
                       "profile=cloud-optimized", "roles": ["data"]} for k, v in assets.items()}
        | {"outlines": {"href": f"./{OUTLINES}", "type": "application/vnd.apache.parquet",
                        "roles": ["data"]}},
        "links": [],
    }


def _valid_footprint(valid: np.ndarray, tile: TileSpec) -> dict[str, Any]:
    """GeoJSON footprint (lon/lat) of the valid pixels of a tile core, simplified to ~2 pixels."""
    from rasterio.features import shapes
    from shapely.geometry import mapping, shape
    from shapely.ops import transform as shp_transform
    from shapely.ops import unary_union

    parts = [shape(g) for g, v in shapes(valid.astype("uint8"), mask=valid,
                                         transform=tile.core_transform) if v == 1]
    geom = unary_union(parts).simplify(2 * tile.resolution)
    to_ll = Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True)
    geom_ll = shp_transform(to_ll.transform, geom)
    return {"geometry": mapping(geom_ll), "bbox": [round(v, 7) for v in geom_ll.bounds]}


TileFn = Callable[[TileSpec, RunConfig], TileResult]


@dataclass
class RunSummary:
    """What a finished run produced; the CLI prints it and orchestration publishes it."""

    out: str
    manifest: list[dict[str, Any]]
    report_md: str
    quicklook_png: bytes | None
    evaluation: dict[str, float] | None
    glaciers: int
    glacier_km2: float

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.manifest:
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out


def finalize(cfg: RunConfig, results: Sequence[TileResult],
             timings: dict[str, float]) -> RunSummary:
    """Merge the tiles' outlines into the inventory, then write manifest, report and quicklook.

    Reads what the tiles wrote (not what the workers returned), so it also merges tiles finished by
    an earlier, interrupted run.
    """
    from glacierscale.inventory import attach_rgi, has_rgi_ids, merge_tiles, read_outlines
    from glacierscale.io import read_geoparquet
    from glacierscale.report import evaluate_run, quicklook_png, render_report

    store = Store(cfg.out)
    finished = [r for r in results if r.status in ("done", "skipped")]
    t0 = time.perf_counter()
    frames = [read_geoparquet(store, f"tiles/{r.tile_id}/{OUTLINES}") for r in finished]
    inventory = merge_tiles(frames)
    reference = read_outlines(cfg.reference) if cfg.reference else None
    if reference is not None and len(inventory) and has_rgi_ids(reference):
        inventory = attach_rgi(inventory, reference, date_pred=cfg.end or cfg.start,
                               date_ref=None)
    write_geoparquet(store, "inventory/glaciers.parquet", inventory)
    timings = dict(timings) | {"merge": time.perf_counter() - t0}
    records = [r.to_dict() for r in results]
    evaluation = None
    if reference is not None:
        t1 = time.perf_counter()
        evaluation = evaluate_run(store, [r.tile_id for r in finished], inventory, reference, cfg)
        timings["evaluate"] = time.perf_counter() - t1
    manifest = {
        "glacierscale_version": __version__,
        "config": cfg.model_dump(mode="json"),
        "config_token": cfg.token(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "tiles": records,
    }
    store.write_bytes_atomic("manifest.json", json.dumps(manifest, indent=1).encode())
    png = quicklook_png(store, [r.tile_id for r in finished], inventory, reference, cfg)
    if png is not None:
        store.write_bytes_atomic("quicklook.png", png)
    km2 = float(inventory["area_km2"].sum()) if len(inventory) else 0.0
    report = render_report(cfg, records, timings, evaluation, len(inventory), km2,
                           quicklook="quicklook.png" if png is not None else None)
    store.write_bytes_atomic("report.md", report.encode())
    return RunSummary(cfg.out, records, report, png, evaluation, len(inventory), km2)

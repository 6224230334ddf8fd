"""The life of a tile, in one readable place: search -> load -> infer -> write -> vectorize.

The run around the tiles (plan, resolve, merge, report) is :mod:`glacierscale.run`.

``process_tile`` is a plain function of a frozen tile and a frozen config, so any executor can run
it (Dask workers, a thread pool, a test). A problem that belongs to one tile becomes its status
and a one-line reason in the run manifest, and the run goes on; the only exception it lets out is
a transient fault (:mod:`glacierscale.core.faults`) that outlived the retries where it happened,
so the caller's tile-level retry can take the tile again. Outputs are written
with atomic puts and the tile's STAC item last, so a tile is complete or absent, never partial.
No Prefect here: orchestration wraps these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from glacierscale import __version__
from glacierscale.catalog import open_catalog, season_dates, select_scenes
from glacierscale.config import RunConfig
from glacierscale.core import faults
from glacierscale.core.grid import core_mask, tile_bbox_lonlat
from glacierscale.core.redact import redact
from glacierscale.core.tiles import TileSpec
from glacierscale.infer import predict_tile
from glacierscale.infer.worker import worker_model
from glacierscale.inventory import vectorize_tile
from glacierscale.io import Provenance, Store, tile_complete, write_tile_outputs
from glacierscale.io.outputs import encode_mask
from glacierscale.load import DEM_BANDS, MissingBandError, configure_cloud_reads, load_tile
from glacierscale.models import GlacierModel, check_tile

log = logging.getLogger(__name__)



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
    #: why the tile lies outside its model's training domain; empty: inside (or not mapped)
    out_of_domain: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"tile_id": self.tile_id, "status": self.status, "reason": self.reason,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "glacier_km2": round(self.glacier_km2, 4), "item_ids": list(self.item_ids),
                "cloud_masked": self.cloud_masked, "out_of_domain": list(self.out_of_domain)}


def cached_model(name: str) -> GlacierModel:
    """The process's one instance of model ``name``: the one a worker's
    :class:`~glacierscale.infer.worker.ModelPlugin` loaded and prepared at its start, else loaded
    here once (loading weights per tile would dominate small tiles)."""
    return worker_model(name)[0]


def _provenance(cfg: RunConfig, model: GlacierModel, item_ids: Sequence[str]) -> Provenance:
    return Provenance(input_ids=tuple(item_ids), model=model.card.name,
                      weights_hash=getattr(model.card, "weights_hash", "") or "none",
                      version=__version__, run_id=cfg.run_id, config_token=cfg.token())


@contextmanager
def _stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def process_tile(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """Map one tile end to end; per-tile problems become a status, never an exception."""
    seconds: dict[str, float] = {}
    try:
        return _process(tile, cfg, seconds)
    except MissingBandError as exc:
        return TileResult(tile.tile_id, "failed", str(exc), seconds)
    except Exception as exc:
        reason = redact(faults.describe(exc))
        if faults.is_transient(exc):
            # It outlived the retries where it happened (search, read, write): the caller's
            # tile-level retry (``orchestrate.batches.run_tile``) takes the tile again.
            log.warning("tile %s: %s", tile.tile_id, reason)
            raise
        # One line per tile (the CLI groups them by cause at the end); the traceback of what no
        # retry loop judged (a bug, not a known bad input) goes to the debug log only.
        log.info("tile %s failed: %s", tile.tile_id, reason)
        log.debug("tile %s traceback", tile.tile_id, exc_info=faults.fault_info(exc) is None)
        return TileResult(tile.tile_id, "failed", reason, seconds)


def _process(tile: TileSpec, cfg: RunConfig, seconds: dict[str, float]) -> TileResult:
    # The worker's prepared model in the run's runtime (device, precision, layout: chosen once
    # per run, see run.fix_runtime; threads: the worker's share of the cores)
    model, runtime = worker_model(cfg.model, cfg.infer, cfg.infer.runtime or None)
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
    store = Store(cfg.out)
    provenance = _provenance(cfg, model, [i.id for i in optical])
    outside = _out_of_domain(model, bbox, optical, cfg.grid.resolution)
    if tile_complete(store, tile.tile_id, provenance.token(tile.tile_id)):
        # same tile, same input scenes, same model and settings: the outputs stand
        return TileResult(tile.tile_id, "skipped", "valid outputs already exist", seconds,
                          out_of_domain=outside)
    with _stage(seconds, "load"):
        configure_cloud_reads()
        # Threads, not the distributed client: this already runs inside a Dask task, and the
        # tile's chunks are small enough that the worker's own threads read them best.
        ds = load_tile(tile, bands, optical, dem).compute(scheduler="threads")
        image = np.stack([ds[b].values.astype("float32", copy=False) for b in bands])
        cloud_masked = bool(ds.attrs.get("cloud_masked", False))
    core = (slice(None), *tile.core_slice)
    if not np.isfinite(image[core]).all(axis=0).any():
        return TileResult(tile.tile_id, "no-data", "no valid pixels in the tile core", seconds,
                          item_ids=provenance.input_ids, cloud_masked=cloud_masked)
    with _stage(seconds, "infer"):
        pred = predict_tile(model, image, cfg.infer, runtime=runtime)
    # Along a UTM zone border the neighbouring zone's tile owns part of this square: leave it
    # nodata here so no ground is mapped (and counted) twice.
    prob = np.where(core_mask(tile), pred.prob[tile.core_slice], np.nan).astype("float32")
    unc = None if pred.uncertainty is None else pred.uncertainty[tile.core_slice]
    mask = encode_mask(prob, cfg.infer.threshold)
    with _stage(seconds, "vectorize"):
        polys = vectorize_tile(mask, prob, transform=tile.core_transform, crs=tile.crs,
                               tile_id=tile.tile_id, uncertainty=unc,
                               min_area_m2=max(5000.0, 50 * cfg.grid.resolution**2))
        glacier_km2 = float(polys.geometry.area.sum() / 1e6) if len(polys) else 0.0
    dates = sorted(i.datetime for i in optical if i.datetime is not None)
    with _stage(seconds, "write"):
        write_tile_outputs(
            store, tile, prob, provenance=provenance, uncertainty=unc, mask=mask, outlines=polys,
            threshold=cfg.infer.threshold, when=dates[0] if dates else datetime.now(UTC),
            end=dates[-1] if len(dates) > 1 else None,
            properties={"glacierscale:cloud_masked": cloud_masked,
                        "glacierscale:scene_selection": selection.report()})
    return TileResult(tile.tile_id, "done", "", seconds, glacier_km2, provenance.input_ids,
                      cloud_masked, outside)


def _out_of_domain(model: GlacierModel, bbox: tuple[float, float, float, float],
                   items: Sequence[Any], resolution_m: float) -> tuple[str, ...]:
    """Why the tile lies outside the model's training domain (empty: inside): the run counts
    such tiles and warns once, since nothing measured vouches for the model there."""
    check = check_tile(model.card, bbox,
                       collections=[i.collection_id for i in items if i.collection_id],
                       platforms=[str(i.properties["platform"]) for i in items
                                  if i.properties.get("platform")],
                       resolution_m=resolution_m,
                       dates=[i.datetime.date() for i in items if i.datetime is not None])
    return check.reasons


def _date_window(cfg: RunConfig, bbox: tuple[float, float, float, float]
                 ) -> tuple[date | None, date | None]:
    """The run's dates, or the end-of-melt-season window of the tile's latitude and year."""
    if cfg.start or cfg.end:
        return cfg.start, cfg.end
    lat = 0.5 * (bbox[1] + bbox[3])
    year = cfg.year or date.today().year - 1
    return season_dates(lat, year)


#: What executors call for each tile: ``process_tile`` itself, or a stand-in with its signature.
TileFn = Callable[[TileSpec, RunConfig], TileResult]

"""The life of a run around its tiles: plan, resolve the config, then merge and report.

A run is: ``resolve_config`` once where it starts (the model decides the pixel size), ``plan``
the tiles, have any executor call :func:`glacierscale.pipeline.process_tile` on each, then
``finalize`` the outputs the tiles wrote into the inventory, manifest, report and quicklook.
No Prefect here: :mod:`glacierscale.orchestrate` wraps these functions in flows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from glacierscale import __version__
from glacierscale.config import RunConfig
from glacierscale.core.tiles import TileSpec
from glacierscale.io import Store
from glacierscale.pipeline import TileResult, cached_model
from glacierscale.plan import plan_tiles


def plan(cfg: RunConfig) -> list[TileSpec]:
    """The tiles of a run: the grid cells covering ``cfg.aoi`` (a bbox or outlines)."""
    return list(plan_tiles(cfg.aoi, cfg.grid).tiles)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """The run's config with the defaults its model decides: the grid resolution of its card.

    Call once where a run starts, before planning: every tile, the config token (resume) and the
    manifest then agree on one pixel size. Loads the model (cached for this process), so an
    unknown model name fails here, before any tile is planned.
    """
    return cfg.with_model_resolution(cached_model(cfg.model).card.resolution_m)


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
    from glacierscale.inventory import has_rgi_ids, read_outlines, rebuild_inventory
    from glacierscale.io import read_geoparquet
    from glacierscale.report import evaluate_run, quicklook_png, render_report

    store = Store(cfg.out)
    finished = [r.tile_id for r in results if r.status in ("done", "skipped")]
    reference = read_outlines(cfg.reference) if cfg.reference else None
    timings = dict(timings)
    inventory = None
    if finished:
        t0 = time.perf_counter()
        # RGI identity and area change need RGI outlines; any other reference (a local outline,
        # as in the demo) is still used for the evaluation below.
        rgi = cfg.reference if reference is not None and has_rgi_ids(reference) else None
        rebuild_inventory(cfg.out, reference=rgi, date_pred=cfg.end)
        inventory = read_geoparquet(store, "inventory/glaciers.parquet")
        timings["merge"] = time.perf_counter() - t0
    records = [r.to_dict() for r in results]
    evaluation = None
    if reference is not None and inventory is not None:
        t1 = time.perf_counter()
        evaluation = evaluate_run(store, finished, inventory, reference, cfg)
        timings["evaluate"] = time.perf_counter() - t1
    manifest = {
        "glacierscale_version": __version__,
        "run_id": cfg.run_id,
        "config": cfg.model_dump(mode="json"),
        "config_token": cfg.token(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "tiles": records,
    }
    store.write_bytes_atomic("manifest.json", json.dumps(manifest, indent=1).encode())
    png = None
    if inventory is not None:
        png = quicklook_png(store, finished, inventory, reference, cfg)
        if png is not None:
            store.write_bytes_atomic("quicklook.png", png)
    n = len(inventory) if inventory is not None else 0
    km2 = float(inventory["area_km2"].sum()) if inventory is not None and n else 0.0
    report = render_report(cfg, records, timings, evaluation, n, km2,
                           quicklook="quicklook.png" if png is not None else None)
    store.write_bytes_atomic("report.md", report.encode())
    return RunSummary(cfg.out, records, report, png, evaluation, n, km2)

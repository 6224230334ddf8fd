"""The life of a run around its tiles: check, plan, resolve the config, then merge and report.

A run is: :func:`check` once where it starts (the preflight of every input; the model decides the
pixel size), ``plan`` the tiles, have any executor call :func:`glacierscale.pipeline.process_tile`
on each, then ``finalize`` the outputs the tiles wrote into the inventory, manifest, report and
quicklook. No Prefect here: :mod:`glacierscale.orchestrate` wraps these functions in flows.

A run's outputs hold this run's tiles only: tiles another run left in the same output (another
area, model or settings) are counted in the report but never merged; ``glacierscale merge``
rebuilds an inventory from every tile when asked. Everything written or returned goes through the
one redaction (:mod:`glacierscale.core.redact`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from glacierscale import __version__
from glacierscale.config import RunConfig
from glacierscale.core.redact import redact, redact_obj
from glacierscale.core.tiles import TileSpec
from glacierscale.infer.runtime import RuntimeChoice
from glacierscale.infer.worker import choose_run_runtime
from glacierscale.io import Store
from glacierscale.models import domain_warning
from glacierscale.pipeline import TileResult, cached_model
from glacierscale.plan import plan_tiles
from glacierscale.preflight import Preflight, preflight

log = logging.getLogger(__name__)

#: Where a run records the runtime it measured, so that its resume uses the same one.
RUNTIME_KEY = "runtime.json"
#: Seconds the runtime probe may take (see :func:`glacierscale.infer.probe.select_runtime`).
PROBE_BUDGET_S = 3.0


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


def fix_runtime(cfg: RunConfig, client: Any | None = None) -> RunConfig:
    """The run's config with its runtime (device, precision, layout) pinned, once per run.

    - ``cfg.infer.runtime`` given: kept, nothing measured.
    - The output records a runtime for these settings (``runtime.json``, written by an earlier,
      interrupted run of the same command): reused, so the resume's config token is the first
      run's and its finished tiles are skipped, whatever a new probe would say.
    - Otherwise measured with the run's model on one worker of ``client`` (where the tiles run:
      its device and threads), or in this process without one, and recorded before any tile.

    Every tile then runs with the one choice, whose token is part of the config token and whose
    measurements (windows/s per candidate, reduced-precision accuracy) are in the record.
    """
    if cfg.infer.runtime:
        return cfg
    store = Store(cfg.out)
    key = cfg.token()  # the unpinned settings: another model or grid measures anew
    choice: RuntimeChoice | None = None
    try:
        record = json.loads(store.read_bytes(RUNTIME_KEY))
        if record.get("config_token") == key:
            choice = RuntimeChoice.from_dict(record["runtime"])
            how = "recorded by an earlier run of these settings"
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # An unreadable record is no record: measure again and replace it.
        log.warning("ignoring %s (%s): the runtime is measured again", RUNTIME_KEY,
                    type(exc).__name__)
    if choice is None:
        if client is not None:
            # pure=False: a fresh measurement, never a result Dask cached from another run
            choice = client.submit(choose_run_runtime, cfg.model, cfg.infer,
                                   budget_s=PROBE_BUDGET_S, pure=False).result()
        else:
            choice = choose_run_runtime(cfg.model, cfg.infer, budget_s=PROBE_BUDGET_S)
        store.write_bytes_atomic(RUNTIME_KEY, json.dumps(
            {"config_token": key, "model": redact(cfg.model), "runtime": choice.to_dict()},
            indent=1).encode())
        how = "measured: " + ", ".join(f"{k} {v:.1f}" for k, v in dict(
            choice.evidence.get("probe_windows_per_s", {})).items()) + " windows/s"
    log.info("runtime %s (%s)", choice.token(), how)
    return cfg.model_copy(update={"infer": cfg.infer.model_copy(
        update={"runtime": choice.token()})})


def check(cfg: RunConfig, *, inputs: bool = True,
          storage_options: dict[str, Any] | None = None) -> Preflight:
    """The preflight of a run (:func:`glacierscale.preflight.preflight`) with this process's model
    cache, so the model it loads is the one the run then uses.

    ``inputs=False`` checks the AOI and the output only: for a tile function other than the
    pipeline, which does not read the run's catalog or model.
    """
    return preflight(cfg, model_loader=cached_model, storage_options=storage_options,
                     inputs=inputs)


class ProgressListener(Protocol):
    """Told of a run's progress: how many tiles it planned, then each tile as it finishes."""

    def planned(self, n_tiles: int) -> None:
        """The run will process ``n_tiles`` tiles."""

    def tile_done(self, result: TileResult) -> None:
        """One tile finished (any status); called once per tile, from any thread."""


def redacted(result: TileResult) -> TileResult:
    """``result`` with its reason redacted: how tile results leave the workers."""
    clean = redact(result.reason)
    return result if clean == result.reason else dataclasses.replace(result, reason=clean)


@dataclass
class RunSummary:
    """What a finished run produced; the CLI prints it and orchestration publishes it.

    ``other_tiles`` counts finished tiles in the output that belong to other runs (another area,
    model or settings): ignored by this run's inventory and report.
    """

    out: str
    manifest: list[dict[str, Any]]
    report_md: str
    quicklook_png: bytes | None
    evaluation: dict[str, float] | None
    glaciers: int
    glacier_km2: float
    other_tiles: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.manifest:
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out


def finalize(cfg: RunConfig, results: Sequence[TileResult],
             timings: dict[str, float], *, client: Any | None = None) -> RunSummary:
    """Merge this run's tiles into the inventory, then write manifest, report and quicklook.

    With a Dask ``client`` (the run's cluster, kept up for this) the merge runs on that cluster;
    without one, in this process. The inventory is the same either way, row for row.

    Reads what the tiles wrote (not what the workers returned), so tiles finished by an earlier,
    interrupted run of the same plan and settings count (they come back as ``skipped``); tiles of
    other runs in the same output are left out and counted. Outputs that can be written are
    written whatever failed, and every text in them is redacted.
    """
    from glacierscale.inventory import has_rgi_ids, read_outlines, rebuild_inventory
    from glacierscale.inventory.build import INVENTORY_KEY, finished_tiles
    from glacierscale.io import read_geoparquet
    from glacierscale.report import evaluate_run, quicklook_png, render_report

    store = Store(cfg.out)
    results = [redacted(r) for r in results]
    warning = domain_warning(cfg.model, [r.out_of_domain for r in results
                                         if r.status in ("done", "skipped")])
    if warning:
        log.warning("%s", warning)  # once per run; the report repeats it
    finished = [r.tile_id for r in results if r.status in ("done", "skipped")]
    ours = {r.tile_id for r in results}
    other_tiles = sum(1 for t in finished_tiles(store) if t not in ours)
    reference = read_outlines(cfg.reference) if cfg.reference else None
    timings = dict(timings)
    t0 = time.perf_counter()
    # RGI identity and area change need RGI outlines; any other reference (a local outline,
    # as in the demo) is still used for the evaluation below.
    rgi = cfg.reference if finished and reference is not None and has_rgi_ids(reference) \
        else None
    # Written even when no tile finished: an inventory left by another run must not pass for
    # this one's (that run's tiles stay, and `glacierscale merge` rebuilds from them).
    merged = rebuild_inventory(cfg.out, reference=rgi, date_pred=cfg.end, tile_ids=finished,
                               client=client)
    inventory = read_geoparquet(store, INVENTORY_KEY)
    timings["merge"] = time.perf_counter() - t0
    records = [r.to_dict() for r in results]
    evaluation = None
    if reference is not None and finished:
        t1 = time.perf_counter()
        evaluation = evaluate_run(store, finished, inventory, reference, cfg)
        timings["evaluate"] = time.perf_counter() - t1
    manifest = redact_obj({
        "glacierscale_version": __version__,
        "run_id": cfg.run_id,
        "config": cfg.model_dump(mode="json"),
        "config_token": cfg.token(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "other_tiles_ignored": other_tiles,
        "inventory_merged_by": merged["merged_by"],
        "tiles": records,
    })
    store.write_bytes_atomic("manifest.json", json.dumps(manifest, indent=1).encode())
    png = quicklook_png(store, finished, inventory, reference, cfg) if finished else None
    if png is not None:
        store.write_bytes_atomic("quicklook.png", png)
    else:
        store.delete("quicklook.png")  # another run's picture must not pass for this one's
    n = len(inventory)
    km2 = float(inventory["area_km2"].sum()) if n else 0.0
    report = render_report(cfg, manifest["tiles"], timings, evaluation, n, km2,
                           quicklook="quicklook.png" if png is not None else None,
                           other_tiles=other_tiles)
    store.write_bytes_atomic("report.md", report.encode())
    # Temporary objects of writers killed in this run or an interrupted earlier one: a dead
    # writer's at once, anyone's once older than any write lasts (live uploads are kept).
    try:
        store.clean_tmp()
    except Exception as exc:  # a leftover is hidden from listings: it must not fail the run
        log.warning("could not remove temporary objects: %s", redact(str(exc)))
    return RunSummary(redact(cfg.out), manifest["tiles"], report, png, evaluation, n, km2,
                      other_tiles)


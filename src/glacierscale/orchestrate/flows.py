"""Prefect flows: plan -> a subflow per region -> tasks over batches of tiles -> merge -> report.

Prefect tracks *batches* (``cfg.tiles_per_task`` tiles, ~100): a global run of 30,000 tiles is a
few hundred task runs, which a self-hosted server handles easily, where one task run per tile would
not. Inside each batch task, plain Dask (``client.map``) schedules one task per tile over the whole
cluster, so the cluster stays busy while Prefect sees coarse, restartable units.

The merge runs on the same cluster, kept up for it: ``merge_task`` gets the scheduler's address
and :func:`glacierscale.run.finalize` merges there (the inventory equals a one-process merge).

Resume is per tile: ``process_tile`` skips tiles whose outputs exist and validate, so restarting a
crashed or cancelled run with the same parameters only does what is missing.

Two task runners, one cluster. ``threads`` (default): batch tasks run on threads of the flow
process and submit their tiles to the Dask cluster; the workers never talk to Prefect (measured
cheapest, ~2 ms per tile on top of Dask here). ``dask``: prefect-dask's ``DaskTaskRunner`` on the
same scheduler runs the batch tasks on the workers themselves (~0.3 s more per Prefect task).

``run(cfg)`` needs no server: without ``PREFECT_API_URL`` it starts one temporary local API for the
run and hands its address to the Dask workers, instead of every worker process starting its own.

Fail fast, keep secrets: the flow starts with the preflight (:mod:`glacierscale.preflight`); a
problem there fails the flow run at once, before any task, with the preflight's message as its
state message. ``run(cfg)`` runs the preflight before any Prefect server starts and hands the flow
its checked config by reference (``config_ref``), so URLs with credentials in them never become
flow or subflow parameters stored by the Prefect API; what the flow does pass is redacted, and so
are tile results, logs and artifacts.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import date
from typing import Any, Literal

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect_dask import DaskTaskRunner

from glacierscale.cluster import (
    ClusterSpec,
    make_cluster,
    resolve,
    tile_resources,
)
from glacierscale.config import RunConfig
from glacierscale.core import faults
from glacierscale.core.footprint import looks_like_bbox, parse_bbox
from glacierscale.core.redact import install_log_redaction, redact, redact_obj
from glacierscale.core.tiles import TileSpec
from glacierscale.orchestrate.api import prefect_api
from glacierscale.orchestrate.artifacts import RegionProgress, publish_run
from glacierscale.orchestrate.batches import (
    WORKER_PRELOAD,
    Batch,
    close_clients,
    config_from_parameters,
    dask_client,
    early_cluster,
    group_by_region,
    make_batches,
    plan_regions,
    resolve_tile_fn,
    run_tile,
    tile_of,
    worker_plugins,
)
from glacierscale.orchestrate.epochs import run_epochs
from glacierscale.pipeline import TileFn, TileResult, process_tile
from glacierscale.preflight import Preflight, PreflightError
from glacierscale.run import (
    ProgressListener,
    RunSummary,
    check,
    finalize,
    fix_runtime,
    redacted,
)

log = logging.getLogger(__name__)

Runner = Literal["dask", "threads"]
#: Regions processed at once; each region's batches already spread over the whole cluster.
PARALLEL_REGIONS = 4


#: Checked configs of runs started in this process, by reference: the flow and its subflows take
#: the reference as a parameter instead of a config whose URLs may hold credentials.
_HELD: dict[str, RunConfig] = {}


@contextmanager
def _held(cfg: RunConfig) -> Iterator[str]:
    ref = uuid.uuid4().hex
    _HELD[ref] = cfg
    try:
        yield ref
    finally:
        _HELD.pop(ref, None)


def _shown(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its free-text fields redacted: what a flow parameter may show of it."""
    fields = ("aoi", "catalog", "out", "model", "reference", "scheduler", "run_id")
    return cfg.model_copy(update={f: redact(v) for f in fields
                                  if isinstance(v := getattr(cfg, f), str)})


class _Progress:
    """A run's progress listener, told of each tile once whichever path reports it."""

    def __init__(self, listener: ProgressListener) -> None:
        self.listener = listener
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def tiles(self, results: Sequence[TileResult]) -> None:
        with self._lock:  # batches finish on several threads
            for r in results:
                if r.tile_id not in self._seen:
                    self._seen.add(r.tile_id)
                    self.listener.tile_done(r)


_progress: _Progress | None = None  # of the run this process started (the CLI's), if asked


@contextmanager
def _listening(listener: ProgressListener | None) -> Iterator[None]:
    global _progress
    _progress = _Progress(listener) if listener is not None else None
    try:
        yield
    finally:
        _progress = None


# --------------------------------------------------------------------------- Prefect tasks


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:
        # Lost scheduler/worker connections and KilledWorker are transient (a tile that killed
        # its workers is worth one more try on a fresh batch); a cancel is not: the run stops.
        return faults.is_transient(exc)
    return False


@task(name="process-tiles", retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=10),
      retry_jitter_factor=0.5, retry_condition_fn=_retry_transient, cache_policy=NO_CACHE,
      persist_result=False)
def process_batch(batch: Batch, cfg: RunConfig, tile_fn: TileFn, address: str,
                  resources: dict[str, float] | None = None) -> list[TileResult]:
    """Process a batch of tiles as plain Dask tasks (one per tile) on the cluster."""
    keys = [f"tile-{t}-{uuid.uuid4().hex[:8]}" for t in batch.tile_ids]
    with dask_client(address) as client:
        futures = client.map(run_tile, batch.tile_ids, cfg=cfg, tile_fn=tile_fn, key=keys,
                             pure=False, resources=resources)
        progress = _progress  # set in the process of a CLI run (threads runner)
        if progress is not None:  # tell it of each tile as it lands, in any order
            landed: queue.Queue[Any] = queue.Queue()
            for fut in futures:
                fut.add_done_callback(landed.put)
            for _ in futures:
                fut = _next(landed)
                if fut.status == "finished":
                    progress.tiles([redacted(fut.result())])
        results: list[TileResult] = client.gather(futures)
    return [redacted(r) for r in results]


@task(name="plan-tiles", cache_policy=NO_CACHE, persist_result=False)
def plan_task(cfg: RunConfig, regions: Sequence[str],
              bbox: tuple[float, float, float, float] | None) -> dict[str, list[str]]:
    """Plan the tile grid and group it by region."""
    return plan_regions(cfg, regions, bbox)


@task(name="merge-inventory", cache_policy=NO_CACHE, persist_result=False)
def merge_task(cfg: RunConfig, results: list[TileResult], timings: dict[str, float],
               address: str | None = None) -> RunSummary:
    """Merge the tiles' outlines into the inventory; write manifest, report and quicklook.

    With the ``address`` of the run's Dask scheduler the merge runs on that cluster
    (:mod:`glacierscale.inventory.cluster_merge`); without one, in this process.
    """
    if address is None:
        return finalize(cfg, results, timings)
    with dask_client(address) as client:
        return finalize(cfg, results, timings, client=client)


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def report_task(summary: RunSummary, per_region: dict[str, list[TileResult]],
                timings: dict[str, float], title: str) -> None:
    """Publish the run summary, totals, failures and quicklook as Prefect artifacts."""
    publish_run(summary, per_region, timings, title)


# --------------------------------------------------------------------------- flows


def _region_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    n = len(p["tile_ids"])
    return f"region {p['region']}: {n} tile{'' if n == 1 else 's'}"


@flow(name="region-inventory", flow_run_name=_region_run_name, validate_parameters=False,
      persist_result=False)
def region_inventory(region: str, tile_ids: list[str], cfg: RunConfig, tile_fn: TileFn,
                     address: str, resources: dict[str, float] | None = None,
                     config_ref: str | None = None) -> list[TileResult]:
    """One region: its batches as Prefect tasks, progress published as they finish.

    ``cfg`` may be shown redacted; ``config_ref`` then names the real one held by this process.
    """
    cfg = _HELD.get(config_ref or "", cfg)
    batches = make_batches(region, tile_ids, cfg.tiles_per_task)
    progress = RegionProgress(region, len(tile_ids), len(batches))
    futures = [process_batch.with_options(task_run_name=f"tiles {b.label}").submit(
        b, cfg, tile_fn, address, resources) for b in batches]
    finished: queue.Queue[Any] = queue.Queue()
    for fut in futures:
        fut.add_done_callback(finished.put)
    try:
        for _ in futures:
            done = _next(finished).result()
            progress.update(done)
            if _progress is not None:  # batches that ran on Dask workers report here
                _progress.tiles(done)
    except BaseException:
        # Cancelled or failed: close this process's Dask clients so batch tasks waiting on
        # threads return now (their finished tiles are stored; a rerun resumes from them).
        close_clients()
        raise
    progress.publish(final=True)
    return progress.results


def _next(q: queue.Queue[Any]) -> Any:
    """Block for the next item, waking every second: a cancelled run's stop request (delivered to
    the main thread between bytecodes) then takes effect at once instead of after a batch."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            continue


def _task_runner(kind: Runner, address: str, n_batches: int) -> Any:
    if kind == "dask":
        return DaskTaskRunner(address=address)
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=max(1, min(32, n_batches)))
    raise ValueError(f"task_runner {kind!r}: use 'dask' or 'threads'")


def _global_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    where = p.get("outlines") or (f"bbox {p['bbox']}" if p.get("bbox") else "tiles")
    regions = f" regions {','.join(p['regions'])}" if p.get("regions") else ""
    dates = f" {p.get('start') or '…'}..{p.get('end') or '…'}" if p.get("start") or p.get(
        "end") else ""
    return redact(f"inventory {where}{regions}{dates} {p.get('model', '')}".strip())


@flow(name="global-inventory", flow_run_name=_global_run_name, persist_result=False)
def global_inventory(
    out: str,
    catalog: str,
    outlines: str | None = None,
    bbox: str | None = None,
    regions: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    sensors: list[str] | None = None,
    model: str = "band-ratio",
    cluster: ClusterSpec | dict[str, Any] | None = None,
    tiles_per_task: int = 100,
    reference: str | None = None,
    settings: dict[str, Any] | None = None,
    task_runner: Runner = "threads",
    tile_fn: str | TileFn | None = None,
    tile_ids: list[str] | None = None,
    config_ref: str | None = None,
    epochs: list[str] | None = None,
) -> Any:
    """Map glaciers over outlines (optionally some RGI ``regions``) or a ``bbox``.

    ``sensors`` are STAC collection ids; ``cluster`` a ``ClusterSpec`` (default: local processes
    or ``settings['scheduler']``); ``tiles_per_task`` tiles make one Prefect task. With outlines
    *and* a bbox, the bbox selects glaciers from the outlines. ``tile_ids`` replaces planning.
    ``config_ref`` is set by ``run()`` only: the checked config it holds in this process.
    ``epochs`` (years or ``YYYY-MM-DD..YYYY-MM-DD`` windows) maps each under ``out/epochs/`` as
    a subflow run and compares consecutive ones (``out/change/``).

    Starts with the preflight: a problem fails the flow run before any task, with the
    preflight's one-line message as the state message. The model's card decides an unset
    resolution, as in the CLI.
    """
    if epochs:
        params = {k: v for k, v in locals().items() if k != "epochs"}
        return run_epochs(global_inventory, params, epochs)
    install_log_redaction()
    held = _HELD.get(config_ref or "")
    if held is not None:
        cfg = held  # checked by run() in this process before Prefect started
    else:
        try:
            cfg = config_from_parameters(out=out, catalog=catalog, outlines=outlines, bbox=bbox,
                                         start=start, end=end, sensors=sensors, model=model,
                                         tiles_per_task=tiles_per_task, reference=reference,
                                         settings=settings)
            # A tile function of its own reads neither the run's catalog nor its model.
            checked = check(cfg, inputs=tile_fn is None)
        except PreflightError as exc:
            get_run_logger().error("preflight: %s", exc.message)
            return Failed(message=exc.message, data=exc)
        cfg = checked.cfg
        for note in checked.notes:
            get_run_logger().warning("note: %s", note)
    spec = (ClusterSpec.model_validate(cluster) if isinstance(cluster, dict)
            else cluster or ClusterSpec.from_run_config(cfg))
    fn = resolve_tile_fn(tile_fn)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if tile_ids is not None:
        groups = group_by_region([tile_of(t, cfg) for t in tile_ids])
    else:

        filt = parse_bbox(bbox) if (outlines and bbox) else None
        groups = plan_task(cfg, tuple(regions or ()), filt)
    timings["plan"] = time.perf_counter() - t0
    n_tiles = sum(len(v) for v in groups.values())
    if _progress is not None:
        _progress.listener.planned(n_tiles)
    get_run_logger().info("%d tiles in %d region(s): %s", n_tiles, len(groups),
             ", ".join(f"{k} ({len(v)})" for k, v in groups.items()))
    spec = resolve(spec)
    plugins = worker_plugins(cfg, fn)
    # One cluster for the tiles and the merge: it stays up until the inventory is merged.
    with make_cluster(spec, plugins=plugins, preload=WORKER_PRELOAD) as (_cluster, address):
        try:
            if fn is process_tile:  # measured on a worker, where the tiles will run
                t1 = time.perf_counter()
                with dask_client(address) as client:
                    cfg = fix_runtime(cfg, client)
                timings["runtime"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            per_region = _process_regions(groups, cfg, fn, address, tile_resources(spec),
                                          task_runner)
            timings["tiles"] = time.perf_counter() - t1
            results = [r for rs in per_region.values() for r in rs]
            t2 = time.perf_counter()
            summary = merge_task(cfg, results, timings, address)
            timings["merge"] = time.perf_counter() - t2
        finally:
            close_clients()
    title = f"glacierscale inventory: {n_tiles} tiles, {summary.glaciers} glaciers"
    report_task(summary, per_region, timings, title)
    return {"out": summary.out, "tiles": n_tiles, "counts": summary.counts(),
            "glaciers": summary.glaciers, "glacier_km2": summary.glacier_km2,
            "summary": summary}


def _process_regions(groups: dict[str, list[str]], cfg: RunConfig, fn: TileFn, address: str,
                     resources: dict[str, float] | None, runner: Runner
                     ) -> dict[str, list[TileResult]]:
    """Run the region subflows on the cluster at ``address``, a few regions at a time."""
    with _held(cfg) as ref:
        def one(region: str) -> list[TileResult]:
            ids = groups[region]
            n_batches = -(-len(ids) // cfg.tiles_per_task)
            sub = region_inventory.with_options(
                task_runner=_task_runner(runner, address, n_batches))
            with tags(f"region-{region}"):
                return sub(region=region, tile_ids=ids, cfg=_shown(cfg), tile_fn=fn,
                           address=address, resources=resources, config_ref=ref)

        try:
            if len(groups) == 1:
                return {r: one(r) for r in groups}
            # Subflows run in threads with a copy of this flow's context, so each becomes a child
            # run of this flow; a few at a time keep the cluster busy across region boundaries.
            with ThreadPoolExecutor(max_workers=min(PARALLEL_REGIONS, len(groups))) as pool:
                futs = {r: pool.submit(contextvars.copy_context().run, one, r) for r in groups}
                while not all(f.done() for f in futs.values()):
                    wait(list(futs.values()), timeout=1.0)  # stay responsive to cancellation
                return {r: f.result() for r, f in futs.items()}
        finally:
            close_clients()


# --------------------------------------------------------------------------- entry point


def run(cfg: RunConfig, *, tile_fn: TileFn | None = None, tiles: Sequence[TileSpec] | None = None,
        cluster: ClusterSpec | None = None, task_runner: Runner = "threads",
        regions: Sequence[str] = (), checked: Preflight | None = None,
        progress: ProgressListener | None = None) -> RunSummary:
    """Run the global-inventory flow for ``cfg`` and return its summary.

    Works with no Prefect server (a temporary local API is started for the run) and against
    ``PREFECT_API_URL`` when set. ``tile_fn`` defaults to ``pipeline.process_tile``; ``tiles``
    replaces planning; ``cluster`` defaults to ``cfg.scheduler`` or local worker processes.

    The preflight runs first, before any server or cluster starts (``checked`` passes one the
    caller already ran); a problem raises :class:`~glacierscale.preflight.PreflightError`.
    A local cluster then starts while the temporary server does (``batches.early_cluster``).
    ``progress`` is told of the plan and of each tile as it finishes.
    """
    install_log_redaction()
    if checked is None:
        # Given tiles were planned already, so the model's card must not change their grid.
        checked = check(cfg, inputs=tile_fn is None and tiles is None)
    cfg = checked.cfg
    if tiles is not None:
        g = cfg.grid
        odd = [t.tile_id for t in tiles
               if (t.size_px, t.resolution, t.halo_px) != (g.tile_size_px, g.resolution, g.halo_px)]
        if odd:
            raise ValueError(f"tiles {odd[:3]} do not match cfg.grid ({g}); plan them with the "
                             "run's GridConfig")
    is_bbox = looks_like_bbox(cfg.aoi)
    shown = _shown(cfg)
    settings = redact_obj(cfg.model_dump(mode="json", exclude={
        "out", "catalog", "aoi", "start", "end", "model", "tiles_per_task", "reference",
        "collections"}))
    with early_cluster(cfg, cluster, tile_fn, task_runner) as early, prefect_api(), \
            tags("glacierscale"), _held(cfg) as ref, _listening(progress):
        state: Any = global_inventory(
            out=shown.out, catalog=shown.catalog, outlines=None if is_bbox else shown.aoi,
            bbox=shown.aoi if is_bbox else None, regions=list(regions) or None, start=cfg.start,
            end=cfg.end, sensors=list(cfg.collections) or None, model=shown.model,
            cluster=early.result() if isinstance(early, Future) else early,
            tiles_per_task=cfg.tiles_per_task, reference=shown.reference,
            settings=settings, task_runner=task_runner, tile_fn=tile_fn,
            tile_ids=[t.tile_id for t in tiles] if tiles is not None else None, config_ref=ref)
    summary: RunSummary = state["summary"]
    return summary

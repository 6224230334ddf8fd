"""Plain helpers of the flows (no Prefect here): the config from flow parameters, batches,
regions, tile functions, Dask clients, the workers' plugins and a run's early-started cluster.

Kept apart from :mod:`glacierscale.orchestrate.flows` so the flow module reads as the flow.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from threading import Lock
from typing import Any

from glacierscale.cluster import ClusterSpec, WorkerLogging, make_cluster, resolve
from glacierscale.config import ConfigError, RunConfig, parse_run_config
from glacierscale.core import faults
from glacierscale.core.redact import redact
from glacierscale.core.tiles import TileSpec
from glacierscale.infer.worker import ModelPlugin
from glacierscale.pipeline import TileFn, TileResult, process_tile
from glacierscale.preflight import PreflightError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """A Prefect task's worth of tiles of one region."""

    region: str
    index: int
    tile_ids: tuple[str, ...]

    @property
    def label(self) -> str:
        n = len(self.tile_ids)
        return f"{self.region} #{self.index} ({n} tile{'' if n == 1 else 's'})"


def make_batches(region: str, tile_ids: Sequence[str], size: int) -> list[Batch]:
    """Cut a region's tiles into batches of at most ``size`` tiles, in plan order."""
    if size < 1:
        raise ValueError("tiles_per_task must be >= 1 (about 100 keeps Prefect task runs few)")
    return [Batch(region, i // size, tuple(tile_ids[i:i + size]))
            for i in range(0, len(tile_ids), size)]


def tile_of(tile_id: str, cfg: RunConfig) -> TileSpec:
    """The tile of an id, on the run's grid."""
    g = cfg.grid
    return TileSpec.from_id(tile_id, g.tile_size_px, g.resolution, g.halo_px)


def group_by_region(tiles: Sequence[TileSpec], regions: Sequence[str] | None = None
                    ) -> dict[str, list[str]]:
    """Tile ids per region label, in first-seen order.

    ``regions[i]`` labels ``tiles[i]`` (an RGI O1 code from the plan); tiles without one are
    grouped by projection (``zone-32611``), which keeps each group geographically compact.
    """
    out: dict[str, list[str]] = {}
    for i, t in enumerate(tiles):
        label = (regions[i] if regions is not None else "") or f"zone-{t.epsg}"
        out.setdefault(label, []).append(t.tile_id)
    return out


def plan_regions(cfg: RunConfig, regions: Sequence[str] = (),
                 bbox: tuple[float, float, float, float] | None = None) -> dict[str, list[str]]:
    """Plan the run's tiles and group them by the RGI region owning most glacier area in each."""
    from glacierscale.plan import plan_tiles

    plan = plan_tiles(cfg.aoi, cfg.grid, regions=tuple(regions), bbox=bbox)
    labels: list[str] = [""] * len(plan.tiles)
    if plan.glaciers is not None and len(plan.glaciers):
        g = plan.glaciers
        area = g.groupby(["tile_id", "o1region"])["area_km2"].sum().reset_index()
        best = area.sort_values(["tile_id", "area_km2"], ascending=[True, False])
        owner = dict(best.drop_duplicates("tile_id")[["tile_id", "o1region"]].itertuples(
            index=False, name=None))
        reach = dict(zip(plan.frame["tile_id"], plan.frame["regions"], strict=True))
        labels = [str(owner.get(t.tile_id) or reach.get(t.tile_id, "").split(",")[0])
                  for t in plan.tiles]
    return group_by_region(plan.tiles, labels)


def resolve_tile_fn(tile_fn: TileFn | str | None) -> TileFn:
    """The tile function: a callable, a ``"module:function"`` path, or the real pipeline."""
    if tile_fn is None:
        return process_tile
    if callable(tile_fn):
        return tile_fn
    module, _, name = tile_fn.partition(":")
    if not module or not name:
        raise ValueError(f"tile_fn {tile_fn!r}: expected 'package.module:function'")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"tile_fn {tile_fn!r} is not callable")
    return fn  # type: ignore[no-any-return]


def run_tile(tile_id: str, cfg: RunConfig, tile_fn: TileFn) -> TileResult:
    """One tile on a Dask worker: the tile again when a transient fault outlived the retries
    where it happened (fault settings ``tile``); recorded as failed if it still fails."""
    tile = tile_of(tile_id, cfg)
    try:
        return faults.retry_call(lambda: tile_fn(tile, cfg), site="tile", what=tile_id)
    except Exception as exc:  # a tile's failure must not lose the batch's other tiles
        reason = redact(faults.describe(exc))
        log.info("tile %s failed: %s", tile_id, reason)
        log.debug("tile %s traceback", tile_id, exc_info=True)
        return TileResult(tile_id, "failed", reason)


_clients: dict[str, Any] = {}
_clients_lock = Lock()


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A Dask client for work inside a Prefect task.

    On a Dask worker (DaskTaskRunner) this is ``worker_client``, which secedes the worker thread
    while the batch waits for its tiles (without that, batches holding every worker thread would
    wait forever for tile tasks that cannot start). Elsewhere one client per scheduler is shared.
    """
    from distributed import Client, get_worker, worker_client

    try:
        get_worker()
    except ValueError:
        with _clients_lock:
            client = _clients.get(address)
            if client is None or client.status not in ("running", "connecting"):
                client = _clients[address] = Client(address, set_as_default=False)
        yield client
        return
    with worker_client() as client:
        yield client


def close_clients() -> None:
    """Close the clients ``dask_client`` opened outside Dask workers."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def config_from_parameters(*, out: str, catalog: str, outlines: str | None, bbox: str | None,
                           start: date | None, end: date | None, sensors: Sequence[str] | None,
                           model: str, tiles_per_task: int, reference: str | None,
                           settings: dict[str, Any] | None) -> RunConfig:
    """A ``RunConfig`` from flow parameters; ``settings`` carries any other RunConfig field.

    Raises :class:`~glacierscale.preflight.PreflightError` naming the parameter at fault.
    """
    if not outlines and not bbox:
        raise PreflightError("give outlines=PATH_OR_URL (RGI outlines) or bbox='W,S,E,N' "
                             "(degrees)", "aoi")
    data: dict[str, Any] = dict(settings or {})
    data.update({"out": out, "catalog": catalog, "aoi": outlines or bbox, "start": start,
                 "end": end, "model": model, "tiles_per_task": tiles_per_task,
                 "reference": reference})
    if sensors:
        data["collections"] = tuple(sensors)
    try:
        return parse_run_config(data, source="flow parameters", cli=False)
    except ConfigError as exc:
        raise PreflightError(str(exc), "config") from exc


#: What a worker imports as it starts: the tile function and everything a tile uses (~1.5 s of
#: imports its first tile would otherwise wait for, after the cluster was handed out).
WORKER_PRELOAD = (__name__,)


def worker_plugins(cfg: RunConfig, fn: TileFn) -> list[Any]:
    """The Dask worker plugins of a run: workers log like the CLI, and the real pipeline's
    workers load and prepare the run's model once, at their start, with their share of the cores
    (a tile function of its own brings its own model, if any). Registered with the cluster, so
    their setup runs while the workers start rather than before the first tile."""
    plugins: list[Any] = [WorkerLogging(logging.getLogger("glacierscale").isEnabledFor(
        logging.DEBUG))]
    if fn is process_tile:
        plugins.append(ModelPlugin(cfg.model, cfg.infer, runtime=cfg.infer.runtime or None))
    return plugins


@contextmanager
def early_cluster(cfg: RunConfig, cluster: ClusterSpec | None, tile_fn: TileFn | None,
                   task_runner: str) -> Iterator[ClusterSpec | Future[ClusterSpec] | None]:
    """A run's local cluster, started in a thread while the Prefect API comes up.

    Both take seconds (the temporary server its imports and database, each worker its imports
    and the run's model) on different cores; started one after the other, a laptop run waits
    for their sum. Yields a future of the cluster's address spec, which the flow connects to
    (its plugins, registered here, are idempotent there), and stops the cluster after the flow.
    Only for a local CPU cluster with the threads task runner, whose workers never talk to
    Prefect (Prefect tasks on Dask workers need the API's address before the workers start).
    Anything else yields ``cluster`` unchanged, for the flow to start.
    """
    spec = resolve(cluster or ClusterSpec.from_run_config(cfg))
    if spec.kind != "local" or task_runner != "threads":
        yield cluster
        return
    fn = resolve_tile_fn(tile_fn)
    with ExitStack() as stack, ThreadPoolExecutor(1, thread_name_prefix="cluster") as pool:

        def start() -> ClusterSpec:
            _, address = stack.enter_context(make_cluster(
                spec, plugins=worker_plugins(cfg, fn), preload=WORKER_PRELOAD))
            return ClusterSpec(kind="address", address=address)

        started = pool.submit(contextvars.copy_context().run, start)
        try:
            yield started
        finally:
            wait([started])  # the stack closes a cluster that finished starting meanwhile

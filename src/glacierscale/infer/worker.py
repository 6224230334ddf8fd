"""One prepared model per Dask worker process, pinned to the worker's GPU under dask-cuda.

:func:`glacierscale.cluster.make_cluster` registers :class:`ModelPlugin` on the scheduler, so
every worker (present and future) loads the run's model once at start, prepares it for the run's
:class:`~glacierscale.infer.runtime.RuntimeChoice` (device, memory layout, precision, weights on
the device) and limits torch, MKL and GDAL to the worker's share of the cores; tasks fetch the
model and runtime with :func:`worker_model` and hand them to
:func:`glacierscale.infer.predict_tiles`. Outside a plugin-equipped worker :func:`worker_model`
loads and prepares the model in the process, once, so the same task code runs in a plain local
session.

dask-cuda starts one worker per GPU and rotates ``CUDA_VISIBLE_DEVICES`` so that each worker's own
GPU is ``cuda:0``; the plugin then runs on ``cuda:0`` and logs which physical GPU that is. Without
dask-cuda (several GPUs visible to every worker) workers spread over the GPUs by worker name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import WorkerPlugin

from glacierscale.config import InferConfig
from glacierscale.infer.prepared import prepare
from glacierscale.infer.probe import select_runtime
from glacierscale.infer.runtime import (
    Runtime,
    RuntimeChoice,
    activate,
    cpu_threads,
    probe_capabilities,
    resolve_runtime,
    set_cpu_threads,
)
from glacierscale.models import GlacierModel, load_model

log = logging.getLogger("glacierscale.infer")


@dataclass(frozen=True)
class _Held:
    model: GlacierModel
    rt: Runtime
    choice: RuntimeChoice | None
    #: the thread that prepared it (on a Dask worker, one of those that run its tasks)
    thread: str = ""


_MODELS: dict[str, _Held] = {}
_LOCK = threading.Lock()


def worker_threads(nthreads: int | None, cores: int | None = None) -> int:
    """CPU threads per task so that Dask threads x torch threads fill, not oversubscribe, the
    cores this process may use (``cores``: default the process's CPU threads, see
    :func:`glacierscale.infer.runtime.cpu_threads`)."""
    cores = cores or probe_capabilities().cpu_threads
    return max(cores // max(nthreads or 1, 1), 1)


def gpu_for(worker_name: object, cfg: InferConfig, gpus: int, visible: str | None) -> InferConfig:
    """The settings a worker runs with: under dask-cuda (``CUDA_VISIBLE_DEVICES`` set per worker)
    or with one GPU, ``cfg`` unchanged; with several GPUs shared by every worker and an unpinned
    ``cfg.device`` (auto/cuda), GPU ``index(worker_name) % gpus``."""
    if gpus <= 1 or visible or cfg.device.strip().lower() not in ("auto", "cuda"):
        return cfg
    name = str(worker_name)
    index = int(name) if name.isdigit() else zlib.crc32(name.encode())
    return cfg.model_copy(update={"device": f"cuda:{index % gpus}"})


def _as_choice(runtime: RuntimeChoice | str | None) -> RuntimeChoice | None:
    return RuntimeChoice.parse(runtime) if isinstance(runtime, str) else runtime


def _hold(name: str, cfg: InferConfig, choice: RuntimeChoice | None,
          model: GlacierModel | None = None) -> _Held:
    """Load (unless given) and prepare ``name`` for ``choice`` (or the static choice of ``cfg``)
    on this process's device and threads."""
    rt = choice.runtime(cfg) if choice is not None else resolve_runtime(cfg)
    model = model if model is not None else load_model(name)
    prep = prepare(model, rt, cfg.window_px, cfg.blend)
    activate(prep.rt)
    return _Held(model, prep.rt, choice, threading.current_thread().name)


class ModelPlugin(WorkerPlugin):
    """Load ``model`` (registry name or card URL) once per worker and prepare it for the run.

    Args:
        model: registry name or card path/URL, as for :func:`glacierscale.models.load_model`.
        cfg: inference settings (device, window, blend; precision when ``runtime`` is None).
        runtime: the run's :class:`RuntimeChoice` (or its token); None: the static choice of
            ``cfg`` for this machine.
        threads: CPU threads per task; None: the worker's cores divided by its Dask threads.
    """

    def __init__(self, model: str, cfg: InferConfig | None = None, *,
                 runtime: RuntimeChoice | str | None = None, threads: int | None = None) -> None:
        self.model = model
        self.cfg = cfg or InferConfig.model_validate({})
        self.runtime = _as_choice(runtime)
        self.threads = threads
        # Named by everything its setup depends on, and idempotent: registering the same plugin
        # again (a run that started its cluster before handing it to the flow) is a no-op on
        # the scheduler, while other settings register a plugin of their own.
        digest = zlib.crc32(repr((model, self.cfg.model_dump(mode="json"),
                                  self.runtime.token() if self.runtime else None,
                                  threads)).encode())
        self.name = f"glacierscale-model-{model}-{digest:08x}"

    idempotent = True

    def setup(self, worker: Any) -> Awaitable[None] | None:
        # On a Dask worker the model is loaded and prepared in the thread pool that runs its
        # tasks, not in the worker's event-loop thread: torch's OpenMP threads belong to the
        # thread that starts them, and a second team idling beside the tasks' one slowed every
        # forward pass by ~40% on a 2-core machine (37 against 27 ms per 128 px tile).
        executor = getattr(worker, "executors", {}).get("default")
        if executor is None:
            self._setup(worker)
            return None

        async def in_pool() -> None:
            await asyncio.get_running_loop().run_in_executor(executor, self._setup, worker)

        return in_pool()

    def _setup(self, worker: Any) -> None:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        nthreads = getattr(getattr(worker, "state", None), "nthreads", None)
        threads = self.threads or worker_threads(nthreads)
        cfg = gpu_for(getattr(worker, "name", 0), self.cfg, probe_capabilities().cuda_devices,
                      gpus)
        with _LOCK:
            set_cpu_threads(threads)
            before = _MODELS.get(self.model)  # e.g. loaded by the run's runtime probe
            held = _hold(self.model, cfg, self.runtime, before.model if before else None)
            _MODELS[self.model] = held
        where = held.rt.describe()
        if held.rt.is_cuda and gpus:
            where += f" (physical GPU {gpus.split(',')[0]})"
        log.info("worker %s prepared model %s on %s", getattr(worker, "address", "?"),
                 held.model.card.tag, where)

    def teardown(self, worker: Any) -> None:
        with _LOCK:
            _MODELS.pop(self.model, None)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass


def worker_model(model: str, cfg: InferConfig | None = None,
                 runtime: RuntimeChoice | str | None = None) -> tuple[GlacierModel, Runtime]:
    """The process's prepared instance of ``model`` and its runtime.

    Prepared by :class:`ModelPlugin` at worker start, or here, once, when no plugin did. A
    ``runtime`` other than the one it was prepared for re-prepares the same instance (a run
    always passes its own, so this happens at most once per run and worker); the one it runs
    already (e.g. the run measured the machine's static choice) keeps it as it is.
    """
    choice = _as_choice(runtime)
    with _LOCK:
        held = _MODELS.get(model)
        if held is None or (choice is not None and held.rt.choice() != choice):
            held = _hold(model, cfg or InferConfig.model_validate({}), choice,
                         held.model if held is not None else None)
            _MODELS[model] = held
        return held.model, held.rt


def choose_run_runtime(model: str, cfg: InferConfig, *, budget_s: float = 3.0,
                       sample: np.ndarray | None = None,
                       threads: int | None = None) -> RuntimeChoice:
    """Measure the runtime of a run on this machine (see
    :func:`glacierscale.infer.probe.select_runtime`) with the process's instance of ``model``.

    Call it once per run where the tiles will run: in the driver for a local CPU run, or as a task
    on one worker (``client.submit(choose_run_runtime, ...)``) when workers have GPUs the driver
    lacks. ``threads`` defaults to this process's CPU threads.
    """
    instance, _ = worker_model(model, cfg)
    return select_runtime(instance, cfg, budget_s=budget_s, sample=sample,
                          threads=threads or cpu_threads())

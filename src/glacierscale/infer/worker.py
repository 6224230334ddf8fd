"""One model instance per Dask worker process, pinned to the worker's GPU under dask-cuda.

Register :class:`ModelPlugin` on a client and every worker (present and future) loads the model
once at start; tasks fetch it with :func:`worker_model`. Outside a plugin-equipped worker
:func:`worker_model` loads and caches the model in the process, so the same task code runs in a
plain local session.

dask-cuda starts one worker per GPU and rotates ``CUDA_VISIBLE_DEVICES`` so that each worker's own
GPU is ``cuda:0``; the plugin then runs on ``cuda:0`` and logs which physical GPU that is. Without
dask-cuda (several GPUs visible to every worker) workers spread over the GPUs by worker name.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from typing import Any

import torch
from distributed import WorkerPlugin

from glacierscale.config import InferConfig
from glacierscale.infer.runtime import (
    Runtime,
    activate,
    probe_capabilities,
    resolve_runtime,
    set_cpu_threads,
)
from glacierscale.models import GlacierModel, load_model

log = logging.getLogger("glacierscale.infer")

_MODELS: dict[str, tuple[GlacierModel, Runtime]] = {}
_LOCK = threading.Lock()


def _worker_threads(nthreads: int | None) -> int:
    """Torch CPU threads per task so that Dask threads x torch threads fill, not oversubscribe,
    the cores this process may use."""
    cores = probe_capabilities().cpu_threads
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


def _load(name: str, cfg: InferConfig, threads: int | None) -> tuple[GlacierModel, Runtime]:
    rt = resolve_runtime(cfg, threads=threads)
    model = load_model(name)
    if isinstance(model, torch.nn.Module):
        model.to(rt.torch_device)
    activate(rt)
    return model, rt


class ModelPlugin(WorkerPlugin):
    """Load ``model`` (registry name or card URL) once per worker, on its GPU when it has one.

    Args:
        model: registry name or card path/URL, as for :func:`glacierscale.models.load_model`.
        cfg: inference settings whose ``device``/``precision`` choose the runtime.
    """

    def __init__(self, model: str, cfg: InferConfig | None = None) -> None:
        self.model = model
        self.cfg = cfg or InferConfig.model_validate({})
        self.name = f"glacierscale-model-{model}"

    def setup(self, worker: Any) -> None:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        threads = _worker_threads(getattr(getattr(worker, "state", None), "nthreads", None))
        cfg = gpu_for(getattr(worker, "name", 0), self.cfg, probe_capabilities().cuda_devices,
                      gpus)
        with _LOCK:
            set_cpu_threads(threads)
            model, rt = _load(self.model, cfg, threads)
            _MODELS[self.model] = (model, rt)
        where = rt.describe()
        if rt.is_cuda and gpus:
            where += f" (physical GPU {gpus.split(',')[0]})"
        log.info("worker %s loaded model %s on %s", getattr(worker, "address", "?"),
                 model.card.tag, where)

    def teardown(self, worker: Any) -> None:
        with _LOCK:
            _MODELS.pop(self.model, None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def worker_model(model: str, cfg: InferConfig | None = None) -> tuple[GlacierModel, Runtime]:
    """The process's instance of ``model`` and its runtime (loaded by :class:`ModelPlugin`, or
    now, once, when no plugin loaded it)."""
    with _LOCK:
        hit = _MODELS.get(model)
        if hit is None:
            hit = _load(model, cfg or InferConfig.model_validate({}), None)
            _MODELS[model] = hit
        return hit


def loaded_models() -> list[str]:
    """Names of the models this process holds."""
    with _LOCK:
        return sorted(_MODELS)

"""One prepared model per Dask worker process: registered with the cluster, loaded and prepared
once, tasks reuse it, and its threads are the worker's share of the cores."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from distributed import Client

from glacierscale.cluster import ClusterSpec, make_cluster, task_threads
from glacierscale.config import InferConfig
from glacierscale.infer import RuntimeChoice, predict_tile, predict_tiles
from glacierscale.infer.worker import (
    ModelPlugin,
    choose_run_runtime,
    worker_model,
    worker_threads,
)
from glacierscale.models import load_model

pytestmark = pytest.mark.integration

CFG = InferConfig(window_px=32)
CHOICE = "cpu/fp32/channels_last"


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.05, 0.5, (2, 48, 48)).astype(np.float32)


def _task(seeds: list[int]) -> dict[str, object]:
    """What a tile batch does on a worker: the held model, the run's runtime, many tiles."""
    from glacierscale.infer.prepared import prepare

    model, rt = worker_model("band-ratio", CFG, CHOICE)
    preds = dict(predict_tiles(model, ((s, _img(s)) for s in seeds), CFG, runtime=rt))
    return {"pid": os.getpid(), "model": id(model), "prepared": id(prepare(model, rt, 32,
                                                                             "gaussian")),
            "loaded": _loaded(), "rt": rt, "torch_threads": torch.get_num_threads(),
            "env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "GDAL_NUM_THREADS")},
            "probs": {s: p.prob for s, p in preds.items()}}


def test_cluster_registers_the_plugin_and_tasks_share_one_prepared_model() -> None:
    spec = ClusterSpec(n_workers=1, threads_per_worker=2, dashboard_address=None)
    plugin = ModelPlugin("band-ratio", CFG.model_copy(update={"device": "cuda"}),
                         runtime=CHOICE, threads=task_threads(spec))
    with make_cluster(spec, plugins=[plugin]) as (_, address), Client(address) as client:
        results = client.gather(client.map(_task, [[0, 1], [2], [3, 4]], pure=False))
    assert len({r["pid"] for r in results}) == 1 and os.getpid() != results[0]["pid"]
    assert len({r["model"] for r in results}) == 1, "one model instance served every task"
    assert len({r["prepared"] for r in results}) == 1, "prepared once, at worker start"
    assert all(r["loaded"] == ["band-ratio"] for r in results)
    rt = results[0]["rt"]
    assert rt.choice() == RuntimeChoice.parse(CHOICE) and rt.device == "cpu"  # type: ignore[attr-defined]
    # Two Dask threads on this worker share its cores: each task gets cores // 2 torch threads.
    assert results[0]["torch_threads"] == task_threads(spec)
    local = load_model("band-ratio")
    for r in results:
        for seed, prob in r["probs"].items():  # type: ignore[attr-defined]
            np.testing.assert_array_equal(prob, predict_tile(local, _img(seed), CFG).prob)


def _loaded() -> list[str]:
    """Names of the models this process holds."""
    from glacierscale.infer import worker

    return sorted(worker._MODELS)


def _preparing_threads() -> dict[str, str]:
    from glacierscale.infer import worker

    return {name: held.thread for name, held in worker._MODELS.items()}


def test_a_worker_prepares_its_model_in_the_threads_that_run_its_tasks() -> None:
    """Not in the event-loop thread: torch's OpenMP threads belong to the thread that starts
    them, and a second team idling beside the tasks' one slows every forward pass."""
    spec = ClusterSpec(n_workers=1, threads_per_worker=1, dashboard_address=None)
    plugin = ModelPlugin("band-ratio", CFG, runtime=CHOICE)
    with make_cluster(spec, plugins=[plugin]) as (_, address), Client(address) as client:
        (threads,) = client.run(_preparing_threads).values()
        task_thread = client.submit(lambda: threading.current_thread().name, pure=False).result()
    assert threads == {"band-ratio": task_thread}
    assert task_thread != "MainThread"


def test_local_workers_never_oversubscribe_the_cores() -> None:
    """As many single-threaded workers as cores: one torch/BLAS/GDAL thread each."""
    cores = len(os.sched_getaffinity(0))
    spec = ClusterSpec(n_workers=cores, threads_per_worker=1, dashboard_address=None)
    with make_cluster(spec, plugins=[ModelPlugin("band-ratio", CFG, runtime=CHOICE)]) \
            as (_, address), Client(address) as client:
        info = client.run(lambda: (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"),
                                   os.environ.get("GDAL_NUM_THREADS")))
    assert len(info) == cores and set(info.values()) == {(1, "1", "1")}


def test_worker_model_without_a_plugin_loads_prepares_and_caches_in_process() -> None:
    a, rt = worker_model("ndsi")
    b, rt2 = worker_model("ndsi")
    assert a is b and rt == rt2 and rt.device in ("cpu", "cuda:0") and "ndsi" in _loaded()
    c, rt3 = worker_model("ndsi", runtime="cpu/fp32/nchw")
    assert c is a and not rt3.channels_last, "another runtime re-prepares the same instance"


def test_the_run_runtime_is_measured_once_with_the_held_model() -> None:
    choice = choose_run_runtime("band-ratio", CFG, budget_s=0.2, threads=1)
    assert choice.device == "cpu" and choice.precision == "fp32"
    assert choice.evidence["threads"] == 1
    model, rt = worker_model("band-ratio", CFG, choice)
    assert rt.choice() == choice and model is worker_model("band-ratio")[0]


def test_threads_per_task_share_the_cores() -> None:
    assert worker_threads(2, cores=8) == 4 and worker_threads(16, cores=8) == 1
    assert worker_threads(None, cores=3) == 3


def test_workers_spread_over_shared_gpus_but_respect_dask_cuda_pinning() -> None:
    from glacierscale.infer.worker import gpu_for

    cfg = InferConfig()
    assert gpu_for(3, cfg, 4, None).device == "cuda:3"
    assert gpu_for("5", cfg, 4, "").device == "cuda:1"
    named = gpu_for("tcp://10.0.0.1:4242", cfg, 2, None).device
    assert named in ("cuda:0", "cuda:1") and named == gpu_for("tcp://10.0.0.1:4242", cfg, 2,
                                                               None).device
    assert gpu_for(3, cfg, 4, "2").device == "auto", "dask-cuda already pinned this worker"
    assert gpu_for(3, cfg, 1, None).device == "auto"
    assert gpu_for(3, InferConfig(device="cpu"), 4, None).device == "cpu"

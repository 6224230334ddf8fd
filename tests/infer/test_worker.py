"""One model per Dask worker process: the plugin loads it once; tasks reuse it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from distributed import Client, LocalCluster

from glacierscale.config import InferConfig
from glacierscale.infer import predict_tile
from glacierscale.infer.worker import ModelPlugin, loaded_models, worker_model
from glacierscale.models import load_model

pytestmark = pytest.mark.integration


def _task(seed: int) -> tuple[int, int, list[str], str, np.ndarray]:
    model, rt = worker_model("band-ratio")
    img = np.random.default_rng(seed).uniform(0.05, 0.5, (2, 48, 48)).astype(np.float32)
    pred = predict_tile(model, img, InferConfig(window_px=32), runtime=rt)
    return os.getpid(), id(model), loaded_models(), rt.device, pred.prob


def test_plugin_loads_once_per_worker_and_tasks_share_it() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0",
                      ) as cluster, Client(cluster) as client:
        client.register_plugin(ModelPlugin("band-ratio", InferConfig(device="cuda")))
        results = client.gather(client.map(_task, [0, 1, 2], pure=False))
    pids = {r[0] for r in results}
    assert len(pids) == 1 and os.getpid() not in pids, "ran in the worker process"
    assert len({r[1] for r in results}) == 1, "one model instance served every task"
    assert all(r[2] == ["band-ratio"] for r in results)
    assert all(r[3] == "cpu" for r in results), "no GPU here: the plugin fell back to CPU"
    local = load_model("band-ratio")
    for seed, r in zip([0, 1, 2], results, strict=True):
        img = np.random.default_rng(seed).uniform(0.05, 0.5, (2, 48, 48)).astype(np.float32)
        expected = predict_tile(local, img, InferConfig(window_px=32)).prob
        np.testing.assert_array_equal(r[4], expected)


def test_worker_model_without_a_plugin_loads_and_caches_in_process() -> None:
    a, rt = worker_model("ndsi")
    b, _ = worker_model("ndsi")
    assert a is b and rt.device in ("cpu", "cuda:0") and "ndsi" in loaded_models()


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

"""The cluster factory: specs, GPU fallback, resource annotations, real local clusters."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from pydantic import ValidationError

from glacierscale.cluster import (
    GPU_RESOURCE,
    ClusterSpec,
    gpu_count,
    local_kwargs,
    make_cluster,
    resolve,
    task_threads,
    tile_resources,
    worker_resources,
)
from glacierscale.config import RunConfig


def test_spec_errors_name_the_fix() -> None:
    with pytest.raises(ValidationError, match="address='tcp://HOST:8786'"):
        ClusterSpec(kind="address")
    with pytest.raises(ValidationError, match="only used with kind='address'"):
        ClusterSpec(kind="local", address="tcp://127.0.0.1:8786")
    with pytest.raises(ValidationError):
        ClusterSpec(kind="local", n_wrokers=2)  # type: ignore[call-arg]


def test_from_run_config_uses_the_scheduler_or_local_workers() -> None:
    cfg = RunConfig(aoi="0,0,1,1", catalog="c", workers=3, threads_per_worker=2)
    spec = ClusterSpec.from_run_config(cfg)
    assert (spec.kind, spec.n_workers, spec.threads_per_worker) == ("local", 3, 2)
    remote = ClusterSpec.from_run_config(cfg.model_copy(update={"scheduler": "tcp://h:8786"}))
    assert (remote.kind, remote.address) == ("address", "tcp://h:8786")
    assert resolve(ClusterSpec(kind="auto", address="tcp://h:8786")).kind == "address"


def test_gpu_count_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_count() == 0


@pytest.mark.skipif(gpu_count() > 0, reason="this machine has a GPU: the fallback is not taken")
def test_cuda_without_gpu_falls_back_to_cpu_with_one_clear_line(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="glacierscale.cluster"):
        spec = resolve(ClusterSpec(kind="cuda", n_workers=1))
    assert spec.kind == "local"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "using a CPU LocalCluster" in lines[0], lines
    caplog.clear()
    assert resolve(ClusterSpec(kind="auto")).kind == "local"
    assert not caplog.records, "auto on a CPU machine is not worth a warning"


def test_gpu_resources_only_on_gpu_workers() -> None:
    assert worker_resources(ClusterSpec()) is None and tile_resources(ClusterSpec()) is None
    gpu = ClusterSpec(kind="kubernetes", worker_gpus=1, tiles_per_gpu=3)
    assert worker_resources(gpu) == {GPU_RESOURCE: 3.0}
    assert tile_resources(gpu) == {GPU_RESOURCE: 1.0}
    kw = local_kwargs(ClusterSpec(n_workers=2, threads_per_worker=2))
    assert kw["n_workers"] == 2 and kw["host"] == "127.0.0.1" and "resources" not in kw
    assert "host" not in local_kwargs(ClusterSpec(processes=False))


_LOAD = {"running": 0, "peak": 0}
_LOCK = threading.Lock()


def _gpu_tile(i: int) -> int:
    # Module-level, so an in-process (thread) cluster runs it by reference with shared counters.
    with _LOCK:
        _LOAD["running"] += 1
        _LOAD["peak"] = max(_LOAD["peak"], _LOAD["running"])
    time.sleep(0.05)
    with _LOCK:
        _LOAD["running"] -= 1
    return i


def test_annotated_tiles_land_on_gpu_workers_at_most_tiles_per_gpu_at_once() -> None:
    """A thread cluster whose workers advertise GPU=2: annotated tasks never exceed 2 at once."""
    from distributed import Client

    spec = ClusterSpec(kind="local", n_workers=1, threads_per_worker=4, processes=False,
                       worker_gpus=1, tiles_per_gpu=2, dashboard_address=None)
    _LOAD.update(running=0, peak=0)
    with make_cluster(spec) as (cluster, address), Client(address) as client:
        assert cluster is not None
        info = client.scheduler_info()["workers"]
        assert [w["resources"] for w in info.values()] == [{GPU_RESOURCE: 2.0}]
        futs = client.map(_gpu_tile, range(12), resources=tile_resources(spec), pure=False)
        assert client.gather(futs) == list(range(12))
        gpu_peak = _LOAD["peak"]
        # the same worker's other threads stay free for tasks that ask for no GPU
        _LOAD["peak"] = 0
        free = client.map(_gpu_tile, range(12, 16), pure=False)
        assert client.gather(free) == list(range(12, 16))
    assert gpu_peak == 2, f"{gpu_peak} model-bound tiles ran at once on one GPU"
    assert _LOAD["peak"] > 2, "tasks without the GPU resource also use the other threads"


def test_address_kind_starts_nothing() -> None:
    with make_cluster(ClusterSpec(kind="address", address="tcp://127.0.0.1:1")) as (c, addr):
        assert c is None and addr == "tcp://127.0.0.1:1"


def test_tasks_share_the_cores_instead_of_multiplying_them() -> None:
    cores = len(os.sched_getaffinity(0))
    assert task_threads(ClusterSpec(n_workers=1, threads_per_worker=1)) == cores
    assert task_threads(ClusterSpec(n_workers=cores, threads_per_worker=1)) == 1
    assert task_threads(ClusterSpec(n_workers=4 * cores, threads_per_worker=2)) == 1
    assert task_threads(ClusterSpec(kind="kubernetes", worker_cpu="8", threads_per_worker=2)) == 4
    assert task_threads(ClusterSpec(kind="kubernetes", worker_cpu="500m")) == 1
    assert task_threads(ClusterSpec(kind="address", address="tcp://h:1")) is None
    env = local_kwargs(ClusterSpec(n_workers=1, env={"OMP_NUM_THREADS": "3"}))["env"]
    assert env["GDAL_NUM_THREADS"] == env["GLACIERSCALE_TORCH_THREADS"] == str(cores)
    assert env["OMP_NUM_THREADS"] == "3", "an explicit worker environment wins"
    assert "env" not in local_kwargs(ClusterSpec(processes=False)), "threads share one process"


def test_a_plugin_that_cannot_set_up_fails_the_cluster_start() -> None:
    from glacierscale.infer.worker import ModelPlugin

    spec = ClusterSpec(n_workers=1, processes=False, dashboard_address=None)
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"), \
            make_cluster(spec, plugins=[ModelPlugin("no-such-model")]):
        pass

"""A run's local cluster starts while the Prefect API comes up, and the flow connects to it.

The workers come up holding the run's plugins and the tile function's modules, and without
Prefect (they never talk to it); the flow's own registration of the same plugins is a no-op.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future
from typing import Any

import pytest
from distributed import Client

from glacierscale.cluster import ClusterSpec, register_plugins
from glacierscale.config import RunConfig
from glacierscale.orchestrate.batches import early_cluster, worker_plugins
from glacierscale.pipeline import process_tile

pytestmark = pytest.mark.integration


def _cfg(**kw: Any) -> RunConfig:
    return RunConfig.model_validate({"aoi": "0,0,1,1", "catalog": "x", "out": "y",
                                     "model": "band-ratio", "workers": 1,
                                     "threads_per_worker": 1, **kw})


def _worker_state(dask_worker: Any) -> dict[str, Any]:
    from glacierscale.infer.worker import worker_model

    model, _ = worker_model("band-ratio")
    return {"pid": os.getpid(), "model": id(model), "plugins": sorted(dask_worker.plugins),
            "prefect": "prefect" in sys.modules,
            "preloaded": "glacierscale.orchestrate.batches" in sys.modules}


def test_a_run_starts_its_local_cluster_early_and_the_flow_reuses_its_plugins() -> None:
    cfg = _cfg()
    with early_cluster(cfg, None, None, "threads") as early:
        assert isinstance(early, Future)
        spec = early.result(timeout=120)
        assert spec.kind == "address" and spec.address
        with Client(spec.address) as client:
            before = client.run(_worker_state)
            # What the flow does with the address it is given: register the run's plugins.
            register_plugins(spec.address, worker_plugins(cfg, process_tile))
            after = client.run(_worker_state)
    (state,) = before.values()
    assert state["pid"] != os.getpid()
    assert not state["prefect"], "a worker imported Prefect"
    assert state["preloaded"], "the tile function's modules were not preloaded"
    assert any(p.startswith("glacierscale-model-band-ratio-") for p in state["plugins"])
    assert any(p.startswith("glacierscale-logging-") for p in state["plugins"])
    assert after == before, "registering the same plugins again prepared the model again"
    with pytest.raises(OSError), Client(spec.address, timeout="2s"):
        pass  # stopped with the run


def test_other_settings_register_a_plugin_of_their_own() -> None:
    a, b = (worker_plugins(_cfg(infer={"window_px": w}), process_tile)[-1] for w in (256, 512))
    assert a.name != b.name and a.idempotent and b.idempotent


@pytest.mark.parametrize(("cluster", "runner"), [
    (ClusterSpec(kind="address", address="tcp://127.0.0.1:1"), "threads"),
    (None, "dask"),  # Prefect tasks on the workers need the API's address before they start
])
def test_other_clusters_and_runners_start_in_the_flow(cluster: ClusterSpec | None,
                                                       runner: str) -> None:
    with early_cluster(_cfg(), cluster, None, runner) as early:
        assert early is cluster

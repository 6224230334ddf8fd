"""Deployments run by a real Prefect worker, a real Dask cluster over TCP, cancel and resume,
and the Prefect UI in headless Chromium. Every service is started here on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from tests.deploy.tilefns import journal_counts

from glacierscale.cluster import ClusterSpec
from glacierscale.config import GridConfig, RunConfig
from glacierscale.io import Store, tile_complete
from glacierscale.testing.stack import (
    DaskTCP,
    PrefectServer,
    chromium_binaries,
    start_deployment,
    wait_final,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYNTH = "tests.deploy.tilefns:synthetic_tile"
ATHABASCA = "-117.32,52.156,-117.232,52.21"
#: 64 px tiles at 30 m: the Athabasca box becomes 16 small tiles, quick to write.
SMALL = {"grid": {"tile_size_px": 64, "resolution": 30.0, "halo_px": 0}}
SCREENSHOTS = Path(os.environ.get("GLACIERSCALE_SCREENSHOT_DIR", "")) if os.environ.get(
    "GLACIERSCALE_SCREENSHOT_DIR") else None


def artifacts_of(flow_run_ids: list[UUID]) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids)))


def child_runs(parent: UUID) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))


def manifest_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in json.loads((out / "manifest.json").read_text())["tiles"]:
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    return counts


@pytest.fixture(scope="module")
def athabasca_run(deployed: PrefectServer, shared_data: Path, sample_cache: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The real pipeline on the Athabasca sample, run by the worker from the `global` deployment
    with its model, `default` (30 m from its card: the sample box is one tile)."""
    from glacierscale.demo.sample import athabasca_sample

    sample = athabasca_sample(shared_data, sample_cache)
    out = tmp_path_factory.mktemp("athabasca") / "out"
    params = {"bbox": ",".join(f"{v:g}" for v in sample.bbox), "outlines": None,
              "catalog": sample.catalog, "start": sample.start.isoformat(),
              "end": sample.end.isoformat(), "sensors": list(sample.collections),
              "reference": sample.reference, "out": str(out), "tiles_per_task": 2,
              # prefect-dask's DaskTaskRunner here (the deployments default to threads)
              "task_runner": "dask", "cluster": {"kind": "local", "n_workers": 2}}
    fr = wait_final(start_deployment("global-inventory/global", params), 300)
    return fr, out


def test_deployment_runs_the_real_pipeline_with_artifacts(athabasca_run: tuple[Any, Path]
                                                          ) -> None:
    fr, out = athabasca_run
    assert fr.state.is_completed(), fr.state
    assert fr.name.startswith("inventory bbox -117.32,52.156"), fr.name
    counts = manifest_counts(out)
    assert counts.get("done", 0) >= 1 and "failed" not in counts, counts
    assert (out / "inventory" / "glaciers.parquet").is_file()
    subflows = child_runs(fr.id)
    assert [s.name for s in subflows] == ["region zone-32611: 1 tile"], [s.name for s in subflows]
    assert "region-zone-32611" in subflows[0].tags
    keys = {a.key for a in artifacts_of([fr.id, subflows[0].id]) if a.key}
    assert {"glacierscale-run-summary", "glacierscale-run-totals", "glacierscale-quicklook",
            "region-zone-32611-progress", "region-zone-32611-progress-bar"} <= keys, keys


def test_prefect_ui_shows_the_run_tasks_and_artifacts(athabasca_run: tuple[Any, Path],
                                                      deployed: PrefectServer,
                                                      tmp_path: Path) -> None:
    bins = chromium_binaries()
    if bins is None:
        pytest.skip("Debian chromium + chromium-driver not installed (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    fr, _ = athabasca_run
    opts = webdriver.ChromeOptions()
    opts.binary_location = bins[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1600,1300"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(bins[1]))
    shots = SCREENSHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(f"{deployed.url}/runs/flow-run/{fr.id}")
        body = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731

        def open_tab(tab_id: str) -> None:
            tabs = [e for e in driver.find_elements(By.CSS_SELECTOR, f"li.p-tab#{tab_id}")
                    if e.is_displayed()]
            assert tabs, f"no {tab_id} tab on the flow run page"
            tabs[0].click()

        wait_for(lambda: fr.name in body() and "Completed" in body() and "Task run" in body(),
                 60, "the run page")
        time.sleep(2)  # the run graph is drawn on a canvas after the text appears
        driver.save_screenshot(str(shots / "flow-run.png"))
        open_tab("subflow-runs")
        wait_for(lambda: "region zone-32611: 1 tile" in body(), 30, "the region subflow")
        open_tab("artifacts")
        wait_for(lambda: "glacierscale-run-summary" in body(), 30, "the artifacts tab")
        driver.save_screenshot(str(shots / "flow-run-artifacts.png"))
        assert "glacierscale-quicklook" in body()
        # The region subflow: its batch tasks and the region's progress artifacts.
        (sub,) = child_runs(fr.id)
        driver.get(f"{deployed.url}/runs/flow-run/{sub.id}")
        wait_for(lambda: sub.name in body() and "Completed" in body(), 60, "the subflow page")
        open_tab("task-runs")
        wait_for(lambda: "tiles zone-32611 #0 (1 tile)" in body(), 30, "the batch task run")
        driver.save_screenshot(str(shots / "region-subflow-tasks.png"))
        open_tab("artifacts")
        wait_for(lambda: "region-zone-32611-progress" in body(), 30, "the region's artifacts")
    finally:
        driver.quit()
    for name in ("flow-run.png", "flow-run-artifacts.png", "region-subflow-tasks.png"):
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cancel_then_resume_processes_only_missing_tiles(deployed: PrefectServer,
                                                         tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.states import Cancelling

    out = tmp_path / "out"
    params = {"bbox": ATHABASCA, "outlines": None, "catalog": "unused", "out": str(out),
              "tiles_per_task": 4, "tile_fn": SYNTH, "settings": SMALL,
              # one worker thread: no process to start (twice), and one tile at a time leaves
              # plenty of the run to cancel (16 tiles x 2 s) however slow the machine is
              "cluster": {"kind": "local", "n_workers": 1, "processes": False}}
    store = Store(str(out))
    first = start_deployment("global-inventory/global", params,
                             env={"GLACIERSCALE_TEST_TILE_SLEEP": "2.0"})
    wait_for(lambda: sum(c.get("done", 0) for c in journal_counts(store).values()) >= 2
             if out.exists() else False, 180, "the first tiles of the run")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(first, Cancelling(), force=True)
    fr1 = wait_final(first, 90)
    assert fr1.state.is_cancelled(), fr1.state
    # Let tiles already in flight on worker processes land, then count what exists.
    previous: list[Any] = [None]

    def settled() -> bool:
        now = journal_counts(store)
        same = now == previous[0]
        previous[0] = now
        return same

    wait_for(settled, 30, "outputs to settle", every=2.0)
    ids = [p.name for p in (out / "tiles").iterdir()] if (out / "tiles").exists() else []
    tiles = 16
    done_before = sum(tile_complete(store, t) for t in ids)
    assert 0 < done_before < tiles, f"cancel came too late or too early: {done_before} done"
    assert not (out / "manifest.json").exists(), "a cancelled run must not publish a manifest"

    # Same parameters; only the test's slow-down knob (not a parameter) is dropped.
    second = wait_final(start_deployment("global-inventory/global", params), 180)
    assert second.state.is_completed(), second.state
    counts = manifest_counts(out)
    assert counts == {"done": tiles - done_before, "skipped": done_before}, counts
    journal = journal_counts(store)
    assert len(journal) == tiles
    assert all(c.get("done", 0) <= 1 for c in journal.values()), journal
    assert sum(c.get("done", 0) for c in journal.values()) == tiles - sum(
        1 for c in journal.values() if c.get("done", 0) == 0)


def test_same_deployment_on_a_tcp_dask_cluster_survives_sigkill_of_a_worker(
        deployed: PrefectServer, dask_tcp: DaskTCP, shared_data: Path, sample_cache: Path,
        tmp_path: Path) -> None:
    """The Athabasca deployment again, on a scheduler + 2 worker processes over TCP; one worker
    is SIGKILLed as soon as the first tile lands. The run finishes; every tile exactly once."""
    from glacierscale.demo.sample import athabasca_sample

    sample = athabasca_sample(shared_data, sample_cache)
    out = tmp_path / "out"
    params = {"bbox": ",".join(f"{v:g}" for v in sample.bbox), "outlines": None,
              "catalog": sample.catalog, "start": sample.start.isoformat(),
              "end": sample.end.isoformat(), "sensors": list(sample.collections),
              "out": str(out), "tiles_per_task": 2,
              # the band ratio at 10 m: four tiles, so the kill lands mid-run
              "model": "band-ratio",
              "cluster": {"kind": "address", "address": dask_tcp.address}}
    store = Store(str(out))
    victim = dask_tcp.workers[0]
    killed = threading.Event()
    at_kill: list[int] = []

    def landed() -> int:
        return len(list(out.glob("tiles/*/item.json"))) if out.exists() else 0

    def killer() -> None:
        wait_for(landed, 240, "the first tile", every=0.1)
        os.kill(victim.pid, signal.SIGKILL)
        at_kill.append(landed())
        killed.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    fr = wait_final(start_deployment("global-inventory/global", params), 300)
    t.join(5)
    assert fr.state.is_completed(), fr.state
    assert killed.is_set() and victim.wait(5) == -signal.SIGKILL
    assert at_kill[0] < 4, "the worker was killed after every tile had landed: not mid-run"
    tiles = json.loads((out / "manifest.json").read_text())["tiles"]
    ids = [r["tile_id"] for r in tiles]
    assert len(ids) == 4 and len(set(ids)) == 4, "every tile exactly once in the manifest"
    assert {r["status"] for r in tiles} <= {"done", "skipped"}, tiles
    assert all(tile_complete(store, t) for t in ids)
    assert (out / "inventory" / "glaciers.parquet").is_file()


def test_in_process_run_on_tcp_cluster_writes_each_tile_once_despite_sigkill(
        prefect_server: PrefectServer, dask_tcp: DaskTCP, tmp_path: Path) -> None:
    """``run()`` from this process (the CLI's path) on the TCP cluster with the DaskTaskRunner
    (batch tasks themselves on the workers, one of which dies), 16 synthetic tiles whose every
    write is journaled: after a worker is SIGKILLed the run finishes and no tile is ever written
    twice."""
    from glacierscale.orchestrate import run

    out = tmp_path / "out"
    cfg = RunConfig(aoi=ATHABASCA, catalog="unused", out=str(out), tiles_per_task=4,
                    grid=GridConfig(**SMALL["grid"]))
    store = Store(str(out))
    victim = dask_tcp.workers[0]
    killed = threading.Event()
    at_kill: list[int] = []

    def done() -> int:
        return sum(c.get("done", 0) for c in journal_counts(store).values()) if out.exists() else 0

    def killer() -> None:
        wait_for(lambda: done() >= 3, 120, "tiles to start landing")
        os.kill(victim.pid, signal.SIGKILL)
        at_kill.append(done())
        killed.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run(cfg, tile_fn=SYNTH, task_runner="dask",
                  cluster=ClusterSpec(kind="address", address=dask_tcp.address))
    t.join(5)
    assert killed.is_set() and victim.wait(5) == -signal.SIGKILL
    assert at_kill[0] < 16, "the worker was killed after every tile was written: not mid-run"
    ids = [r["tile_id"] for r in summary.manifest]
    assert len(ids) == 16 and len(set(ids)) == 16, "every tile exactly once in the manifest"
    assert {r["status"] for r in summary.manifest} <= {"done", "skipped"}, summary.counts()
    assert all(tile_complete(store, t) for t in ids)
    journal = journal_counts(store)
    # A tile is written at most once even when its worker died mid-run and Dask re-ran it.
    assert all(c.get("done", 0) <= 1 for c in journal.values()), journal

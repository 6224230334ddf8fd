"""Real services for the orchestration tests, all on 127.0.0.1: a Prefect server (SQLite, started
once per session), a process work pool with a real worker, and a Dask scheduler with two worker
processes over TCP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # The tests name their tile functions "tests.deploy.tilefns:..." so that every process
    # (this one, Dask workers, flow runs started by the Prefect worker) imports the same module.
    sys.path.insert(0, str(REPO))

from tests.deploy.services import (  # noqa: E402
    BIN,
    POOL,
    DaskTCP,
    PrefectServer,
    free_port,
    run_cli,
    stop,
    wait_for,
)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free loopback port, with its own PREFECT_HOME (SQLite)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"{url}/api",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    # The UI calls the API at PREFECT_UI_API_URL (default port 4200): point it at this server.
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    server_env["PREFECT_UI_API_URL"] = f"{url}/api"
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env, stdout=log, stderr=subprocess.STDOUT, cwd=home)

    def healthy() -> bool:
        if proc.poll() is not None:
            tail = (home / "server.log").read_text()[-2000:]
            raise RuntimeError(f"prefect server exited: {tail}")
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "the Prefect server to answer /api/health")
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}):
            yield PrefectServer(url, f"{url}/api", env, home)
    finally:
        stop(proc, signal.SIGTERM, 15)
        log.close()


@pytest.fixture(scope="session")
def deployed(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """A process work pool, the deployments of prefect.yaml, and a real worker polling the pool."""
    env = dict(prefect_server.env, PWD=str(REPO),
               GLACIERSCALE_OUTLINES="outlines-set-per-run", GLACIERSCALE_OUT="out-set-per-run")
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                               base_job_template=template), overwrite=True)
    log = (prefect_server.home / "worker.log").open("wb")
    # The worker starts while `prefect deploy` reads prefect.yaml: both take a few seconds.
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
         "--limit", "2"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        run_cli(["prefect", "--no-prompt", "deploy", "--prefect-file", str(REPO / "prefect.yaml"),
                 "--name", "global", "--name", "region"], env, timeout=180)
        yield prefect_server
    finally:
        stop(worker, signal.SIGINT, 15)
        log.close()


@pytest.fixture
def dask_tcp(prefect_server: PrefectServer, tmp_path: Path) -> Iterator[DaskTCP]:
    """``dask scheduler`` and two ``dask worker`` processes (no nanny) over TCP on 127.0.0.1."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(prefect_server.env, GLACIERSCALE_TEST_TILE_SLEEP="0.4")
    logs = [(tmp_path / f"dask-{i}.log").open("wb") for i in range(3)]
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], env=env, stdout=logs[0], stderr=subprocess.STDOUT, cwd=REPO)]
    try:
        for i in (1, 2):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--no-nanny", "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
                env=env, stdout=logs[i], stderr=subprocess.STDOUT, cwd=REPO))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield DaskTCP(address, procs[1:])
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGTERM, 10)
        for f in logs:
            f.close()



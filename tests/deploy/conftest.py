"""Real services for the orchestration tests, all on 127.0.0.1 (from
:mod:`glacierscale.testing.stack`): a Prefect server (SQLite, started once per session), a process
work pool with a real worker, and a Dask scheduler with two worker processes over TCP.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierscale.testing.stack import DaskTCP, PrefectServer, deployed_worker
from glacierscale.testing.stack import dask_tcp as start_dask_tcp
from glacierscale.testing.stack import prefect_server as start_prefect_server

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # The tests name their tile functions "tests.deploy.tilefns:..." so that every process
    # (this one, Dask workers, flow runs started by the Prefect worker) imports the same module.
    sys.path.insert(0, str(REPO))

#: Quick polling, so a test waits seconds for a worker or runner to notice a change.
FAST_POLLING = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "1"}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free loopback port, with its own PREFECT_HOME (SQLite)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with start_prefect_server(tmp_path_factory.mktemp("prefect-home"),
                              env={**FAST_POLLING, "PYTHONPATH": path}) as server, \
            temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server


@pytest.fixture(scope="session")
def deployed(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """A process work pool, the deployments of prefect.yaml, and a real worker polling the pool."""
    with deployed_worker(prefect_server, REPO):
        yield prefect_server


@pytest.fixture
def dask_tcp(prefect_server: PrefectServer, tmp_path: Path) -> Iterator[DaskTCP]:
    """``dask scheduler`` and two ``dask worker`` processes (no nanny: a killed worker stays
    dead) over TCP on 127.0.0.1."""
    env = dict(prefect_server.env, GLACIERSCALE_TEST_TILE_SLEEP="0.4")
    with start_dask_tcp(2, env, tmp_path, nanny=False) as cluster:
        yield cluster

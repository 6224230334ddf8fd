"""A run's temporary Prefect server goes with the run's process, however that ends, and flows
run against it send no heartbeats; a configured server keeps them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = """
import os, sys, time
os.environ.pop("PREFECT_API_URL", None)
import psutil
from prefect.settings import get_current_settings
from glacierscale.orchestrate.api import prefect_api
with prefect_api() as url:
    server = next(p for p in psutil.Process().children()
                  if "prefect.server.api.server:create_app" in " ".join(p.cmdline()))
    print(server.pid, url, get_current_settings().flows.heartbeat_frequency, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for every purpose here
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd is Linux's")
def test_a_killed_run_takes_its_temporary_server_with_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    server = 0
    try:
        line = proc.stdout.readline()
        server = int(line.split()[0])
        assert _alive(server)
        assert line.split()[2] == "None"  # no flow-run heartbeats against it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the temporary Prefect server outlived its killed run"
    finally:
        proc.kill()
        if server and _alive(server):  # a failed test leaves no server behind either
            os.kill(server, signal.SIGKILL)


def test_a_configured_server_keeps_its_flow_run_heartbeats() -> None:
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from glacierscale.orchestrate.api import prefect_api

    before = get_current_settings().flows.heartbeat_frequency
    assert before is not None
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), prefect_api() as url:
        assert url == "http://127.0.0.1:9/api"
        assert get_current_settings().flows.heartbeat_frequency == before

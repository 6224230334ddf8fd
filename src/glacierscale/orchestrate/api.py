"""The Prefect API a run reports to: the configured one, or a temporary server of its own.

The temporary server is the one Prefect's ephemeral mode runs (uvicorn serving
``prefect.server.api.server:create_app`` in a subprocess, UI off), started here without importing
Prefect's server package into the run's process: that import alone is ~1.4 s of CPU, and
:func:`launch_temporary_api` lets the CLI start the server before it imports the flows, so the
two overlap instead of adding up on a laptop.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

#: Ends a process once another has ended: ``python -c WATCHDOG PARENT CHILD``. Blocks on a pidfd
#: of the parent (no polling) and sends SIGTERM to the child when it is gone.
WATCHDOG = """
import os, select, signal, sys
parent, child = int(sys.argv[1]), int(sys.argv[2])
try:
    fd = os.pidfd_open(parent)
    select.select([fd], [], [])
except OSError:  # gone already (or no pidfd): end the child now
    pass
try:
    os.kill(child, signal.SIGTERM)
except ProcessLookupError:
    pass
"""

#: uvicorn's exit status when its port was taken meanwhile (a new port is tried).
_ADDRESS_IN_USE = 3


def _watch(child: int) -> subprocess.Popen[bytes]:
    """A process that ends ``child`` when this one ends, however it ends.

    A killed run (SIGKILL, OOM) runs no ``atexit`` hook: without this its server would outlive
    every killed run.
    """
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(child)],
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporaryServer:
    """A Prefect API server on loopback for the life of this process (one per process)."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._ready = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        """Start the server process; returns at once (:meth:`wait` blocks until it answers)."""
        from prefect.settings import get_current_settings

        spec = find_spec("prefect")
        assert spec is not None and spec.submodule_search_locations
        self.port = _free_port()
        env = {
            **os.environ,
            # The temporary server must not phone home (it would also fail offline, loudly).
            "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get(
                "PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
            **get_current_settings().to_environment_variables(exclude_unset=True),
            # What Prefect's own ephemeral server sets: no UI, ephemeral database handling.
            "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        app_dir = str(Path(next(iter(spec.submodule_search_locations))).parent)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "error", "--lifespan", "on"], env=env)
        if self._watchdog is None:
            atexit.register(self.stop)
        else:
            self._watchdog.kill()
        self._watchdog = _watch(self.process.pid)

    def wait(self, timeout: float) -> str:
        """Block until the server answers its health check; its API URL."""
        import httpx

        if self.process is None:
            self.launch()
        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while not self._ready:
                assert self.process is not None
                code = self.process.poll()
                if code == _ADDRESS_IN_USE:
                    self.launch()
                elif code is not None:
                    raise RuntimeError(f"the temporary Prefect server exited with status {code}"
                                       " before it answered; set PREFECT_API_URL to use a "
                                       "running one")
                elif time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the temporary Prefect server did not answer within "
                                       f"{timeout:.0f} s; set PREFECT_API_URL to use a running "
                                       "one")
                else:
                    with contextlib.suppress(httpx.TransportError):
                        self._ready = client.get(f"{self.api_url}/health").status_code == 200
                    if not self._ready:
                        time.sleep(0.05)
        return self.api_url

    def stop(self) -> None:
        """End the server (and its watchdog)."""
        proc, self.process, self._ready = self.process, None, False
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None


_SERVER = TemporaryServer()


def _configured_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def launch_temporary_api() -> None:
    """Start this process's temporary server now, unless an API is configured or it runs.

    For a caller with other start-up work to do before :func:`prefect_api` (the CLI imports the
    flows meanwhile); :func:`prefect_api` starts it anyway when nobody did.
    """
    if _SERVER.process is None and _configured_url() is None:
        _SERVER.launch()


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API this process reports to: ``PREFECT_API_URL``, else one temporary server.

    Setting the temporary server's address in the environment before a Dask cluster starts
    lets its workers report to it; otherwise each worker process would start its own server.
    The temporary server serves every run of this process and stops with it, killed or not;
    flows run against it send no heartbeats.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    url = _configured_url()
    if url:
        yield url
        return
    # A first start migrates a new SQLite database, which takes long on a busy laptop.
    api_url = _SERVER.wait(max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), 120))
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        # No flow-run heartbeats against a server that lives and dies with this process: they
        # let a long-lived server mark a crashed run, which this one cannot outlive to see, and
        # each flow's exit waits up to a second for its heartbeat thread to wake up and stop.
        with temporary_settings({PREFECT_API_URL: api_url, "flows.heartbeat_frequency": None}):
            yield api_url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous

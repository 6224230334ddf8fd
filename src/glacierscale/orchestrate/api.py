"""The Prefect API a run reports to: the configured one, or a temporary server of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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


#: Watchdogs of this process's temporary servers, by server pid (one each, for the server's life).
_WATCHED: dict[int, subprocess.Popen[bytes]] = {}


def _watch(child: int) -> subprocess.Popen[bytes]:
    """A process that ends ``child`` when this one ends, however it ends.

    A killed run (SIGKILL, OOM) runs no ``atexit`` hook, and Prefect stops its temporary server
    only from one: without this its server would outlive every killed run.
    """
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(child)],
                            stdin=subprocess.DEVNULL, start_new_session=True)


@contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API this process reports to: ``PREFECT_API_URL``, else one temporary server.

    Setting the temporary server's address in the environment before the Dask cluster starts
    lets every worker report to it; otherwise each worker process would start its own server.
    The temporary server stops when the run ends, and with the run's process if that is killed.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    # The temporary server must not phone home (it would also fail offline, loudly).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer()
    # A first start migrates a new SQLite database, which takes long on a busy laptop.
    server.start(timeout=max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), 120))
    pid = server.server_process.pid if server.server_process else None
    if pid is not None and pid not in _WATCHED:
        _WATCHED[pid] = _watch(pid)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous

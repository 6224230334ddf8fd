"""Start real services on 127.0.0.1 for tests and local experiments, and stop them reliably.

Each helper picks a free port, starts the real server as a child process, waits until it answers,
and terminates it on exit: no mocks, nothing left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    # Prefer the interpreter's own environment, so a venv works without being activated.
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install the dev extras (pip install -e .[dev])")
    return found


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers (any HTTP status), or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode} before answering: {out}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def _process(cmd: Sequence[str], health_url: str, env: dict[str, str] | None = None,
             timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        wait_http(health_url, timeout, proc)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@contextmanager
def stac_api(hrefs: Sequence[str | Path]) -> Iterator[str]:
    """A real STAC API (rustac, in-memory) serving the given items/ndjson; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [_bin("rustac"), "serve", "--addr", f"127.0.0.1:{port}", "--create-collections",
           *map(str, hrefs)]
    with _process(cmd, url + "/"):
        yield url


@contextmanager
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto in server mode) on loopback; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], url + "/moto-api/"):
        yield url

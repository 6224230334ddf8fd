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
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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


def _tail(output: IO[bytes] | None, limit: int = 4000) -> str:
    """The last ``limit`` bytes a server wrote to its output file."""
    if output is None:
        return ""
    output.flush()
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - limit))
    return output.read().decode(errors="replace")


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None,
              output: IO[bytes] | None = None) -> None:
    """Poll ``url`` until it answers (any HTTP status), or fail with the server's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering: "
                               f"{_tail(output)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def server_process(cmd: Sequence[str], health_url: str, *, env: dict[str, str] | None = None,
                   timeout: float = 60.0, log: Path | None = None
                   ) -> Iterator[subprocess.Popen]:
    """Run a server ``cmd`` until the block ends, once ``health_url`` answers.

    Its output goes to ``log`` (appended) or a temporary file, never a pipe: nobody reads a pipe
    while tests run, and a server logging each request (moto does) would block once the pipe's
    ~64 KB buffer is full, a few hundred requests into a run.
    """
    with (log.open("ab+") if log is not None else tempfile.TemporaryFile()) as output:
        proc = subprocess.Popen(list(cmd), stdout=output, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            wait_http(health_url, timeout, proc, output)
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


@contextmanager
def stac_api(hrefs: Sequence[str | Path], log: Path | None = None) -> Iterator[str]:
    """A real STAC API (rustac, in-memory) serving the given items/ndjson; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [_bin("rustac"), "serve", "--addr", f"127.0.0.1:{port}", "--create-collections",
           *map(str, hrefs)]
    with server_process(cmd, url + "/", log=log):
        yield url


@contextmanager
def s3_server(log: Path | None = None) -> Iterator[str]:
    """A real S3-compatible server (moto in server mode) on loopback; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                        url + "/moto-api/", log=log):
        yield url


def aws_env(endpoint: str) -> dict[str, str | None]:
    """The standard AWS environment pointing boto3, s3fs and GDAL at a loopback S3 ``endpoint``.

    Test-only keys (moto accepts any); ``None`` marks variables to unset, so a developer's own
    profile or session token never reaches the test server.
    """
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIAGLACIERSCALELOOP",
            "AWS_SECRET_ACCESS_KEY": "glacierscale-loopback-secret-4Kd9", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_PROFILE": None, "AWS_SESSION_TOKEN": None,
            "AWS_ENDPOINT_URL_S3": None}


@contextmanager
def aws_environment(endpoint: str, **extra: str) -> Iterator[dict[str, str | None]]:
    """This process's AWS environment pointed at ``endpoint`` (:func:`aws_env` plus ``extra``)
    within the block, restored after; s3fs forgets filesystems made for another endpoint."""
    env = {**aws_env(endpoint), **extra}
    saved = {k: os.environ.get(k) for k in env}

    def apply(values: dict[str, str | None]) -> None:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            import s3fs
        except ImportError:  # pragma: no cover - s3fs is a dependency
            return
        s3fs.S3FileSystem.clear_instance_cache()

    apply(env)
    try:
        yield env
    finally:
        apply(saved)

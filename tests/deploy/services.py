"""Helpers for the orchestration tests: ports, polling, stopping processes, CLIs, browsers."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "glacierscale-local"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred, timeout: float, what: str, every: float = 0.25):  # type: ignore[no-untyped-def]
    """Poll ``pred`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, grace: float = 10.0) -> None:
    """Stop a process we started: ``sig`` first (Prefect workers honour SIGINT), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class PrefectServer:
    url: str  # http://127.0.0.1:PORT
    api_url: str
    env: dict[str, str]  # environment for subprocesses that talk to this server
    home: Path


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run a CLI from the venv in the repository root; fail with its output if it fails."""
    res = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, cwd=REPO, timeout=timeout,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout


@dataclass
class DaskTCP:
    address: str
    workers: list[subprocess.Popen[bytes]]


def chromium_binaries() -> tuple[str, str] | None:
    """Debian's chromium and chromium-driver, if installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None

"""The deployed stack on one machine, all on 127.0.0.1: Prefect server, worker, Dask over TCP.

What a production deployment runs, as child processes that are started, watched and stopped here:

- :func:`prefect_server`: ``prefect server start`` with its own PREFECT_HOME, on SQLite or (with
  ``database_url``) PostgreSQL (:mod:`glacierscale.testing.postgres`);
- :func:`deployed_worker`: a process work pool, the deployments of ``prefect.yaml`` registered with
  ``prefect deploy`` and a ``prefect worker start`` polling the pool;
- :func:`dask_tcp`: a ``dask scheduler`` and nanny-supervised ``dask worker`` processes;
- helpers to start a deployment run, wait for its final state, find the flow-run process the
  worker spawned (to measure or kill it) and sample its peak memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import psutil

from glacierscale.testing.memory import peak_rss_bytes
from glacierscale.testing.services import free_port

BIN = Path(sys.executable).parent
POOL = "glacierscale-local"
T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, grace: float = 15.0) -> None:
    """Stop a child: ``sig`` first (Prefect workers honour SIGINT), SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class PrefectServer:
    """A running ``prefect server``: its URLs, and the environment clients of it need."""

    url: str
    api_url: str
    env: dict[str, str]
    home: Path
    proc: subprocess.Popen[bytes] | None = None


#: A busy server on PostgreSQL: the defaults (5 s to connect, a pool of 5 + 10) give 500s when
#: a global run's flow submits a few hundred task runs at once on a loaded machine.
SERVER_DATABASE_SETTINGS = {
    "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
}


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(extra or {})
    return env


@contextmanager
def prefect_server(home: Path, database_url: str | None = None,
                   env: Mapping[str, str] | None = None,
                   timeout: float = 180.0) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free loopback port; SQLite in ``home`` unless
    ``database_url`` (e.g. :attr:`Postgres.url`) names another database."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client_env = _clean_env({
        "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"{url}/api", "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "2", **(env or {})})
    server_env = {k: v for k, v in client_env.items() if k != "PREFECT_API_URL"}
    # The UI calls the API at PREFECT_UI_API_URL (default port 4200): point it at this server.
    server_env["PREFECT_UI_API_URL"] = f"{url}/api"
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        for key, value in SERVER_DATABASE_SETTINGS.items():
            server_env.setdefault(key, value)
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=server_env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=home)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("prefect server exited: "
                               + (home / "server.log").read_text()[-2000:])
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout, "the Prefect server to answer /api/health")
        yield PrefectServer(url, f"{url}/api", client_env, home, proc)
    finally:
        stop(proc, signal.SIGTERM, 20)
        log.close()


def run_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path,
            timeout: float = 300.0) -> str:
    """Run a CLI of this environment; fail with its output when it fails."""
    res = subprocess.run([str(BIN / args[0]), *args[1:]], env=dict(env), cwd=cwd,
                         timeout=timeout, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}):\n"
                           f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout


@contextmanager
def deployed_worker(server: PrefectServer, repo: Path, names: Sequence[str] = ("global",
                    "region"), worker_env: Mapping[str, str] | None = None,
                    limit: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    """The deployments ``names`` of ``repo/prefect.yaml`` on a process pool, and a worker.

    ``prefect deploy`` resolves ``{{ $VAR }}`` at deploy time: the working directory is the
    repository, and outlines/out get placeholders that each run overrides.
    """
    env = dict(server.env, PWD=str(repo), GLACIERSCALE_OUTLINES="set-per-run",
               GLACIERSCALE_OUT="set-per-run")
    run_cli(["prefect", "--no-prompt", "work-pool", "create", POOL, "--type", "process",
             "--overwrite"], env, repo)
    log = (server.home / "worker.log").open("ab")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
         "--limit", str(limit)], env={**env, **(worker_env or {})}, cwd=repo, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        args = ["prefect", "--no-prompt", "deploy", "--prefect-file", str(repo / "prefect.yaml")]
        for n in names:
            args += ["--name", n]
        run_cli(args, env, repo)
        yield worker
    finally:
        # Flow-run processes the worker spawned outlive a stopped worker: end them too.
        try:
            runs = psutil.Process(worker.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            runs = []
        stop(worker, signal.SIGINT, 20)
        for child in runs:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                continue
        log.close()


@dataclass
class DaskTCP:
    """A scheduler and its workers over TCP: ``procs`` is the scheduler, then the workers."""

    address: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def workers(self) -> list[subprocess.Popen[bytes]]:
        """The ``dask worker`` processes (the worker itself without a nanny, else its nanny)."""
        return self.procs[1:]

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> pid of the worker process (the nanny's child)."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return dict(client.run(os.getpid))

    def idle(self) -> bool:
        """No task processing or waiting anywhere on the cluster."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            info = client.run_on_scheduler(
                lambda dask_scheduler: sum(len(ws.processing) for ws in
                                           dask_scheduler.workers.values())
                + len(dask_scheduler.unrunnable) + len(dask_scheduler.queued))
            return int(info) == 0


@contextmanager
def dask_tcp(n_workers: int, env: Mapping[str, str], log_dir: Path, nthreads: int = 1,
             memory_limit: str = "3GiB", nanny: bool = True) -> Iterator[DaskTCP]:
    """``dask scheduler`` plus ``n_workers`` ``dask worker`` processes over TCP on 127.0.0.1.

    With ``nanny`` a nanny restarts a worker that dies, as a cluster manager would; without,
    a killed worker stays dead and :attr:`DaskTCP.workers` are the worker processes themselves.
    """
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [(log_dir / f"dask-{i}.log").open("ab") for i in range(n_workers + 1)]
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], env=dict(env), stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        for i in range(1, n_workers + 1):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", str(nthreads),
                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                 "--memory-limit", memory_limit, *([] if nanny else ["--no-nanny"])],
                env=dict(env), stdout=logs[i], stderr=subprocess.STDOUT))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=180)
        yield DaskTCP(address, procs)
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGTERM, 15)
        for f in logs:
            f.close()


# --------------------------------------------------------------------------- deployment runs


def start_deployment(name: str, parameters: dict[str, Any],
                     env: Mapping[str, str] | None = None) -> UUID:
    """Create a run of deployment ``name`` (``flow/deployment``); returns its id at once."""
    from prefect.deployments import run_deployment

    fr: Any = run_deployment(name, parameters=parameters, timeout=0,
                             job_variables={"env": dict(env)} if env else None)
    return UUID(str(fr.id))


def read_flow_run(flow_run_id: UUID) -> Any:
    """The flow run as the API has it now."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def wait_final(flow_run_id: UUID, timeout: float) -> Any:
    """Wait until the flow run is in a final state; returns it."""
    from prefect.exceptions import PrefectHTTPStatusError

    def final() -> Any:
        try:
            fr = read_flow_run(flow_run_id)
        except (PrefectHTTPStatusError, httpx.HTTPError):
            return None  # a busy server's 500 or timeout: ask again
        return fr if fr.state and fr.state.is_final() else None

    return wait_for(final, timeout, f"flow run {flow_run_id} to finish", every=2.0)


def flow_process(worker: subprocess.Popen[bytes], flow_run_id: UUID) -> psutil.Process | None:
    """The process the worker spawned for ``flow_run_id`` (found by its environment)."""
    try:
        children = psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if child.environ().get("PREFECT__FLOW_RUN_ID") == str(flow_run_id):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


class PeakMemory:
    """Samples a process's peak resident memory (``VmHWM``, plus its children's RSS) until it
    exits; ``peak_bytes`` is the highest value seen."""

    def __init__(self, proc: psutil.Process, every_s: float = 0.5) -> None:
        self.proc = proc
        self.every_s = every_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        hwm = peak_rss_bytes(self.proc.pid)
        kids = 0
        for c in self.proc.children(recursive=True):
            try:
                kids += c.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return hwm + kids

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_bytes = max(self.peak_bytes, self._sample())
            except (OSError, psutil.NoSuchProcess):
                return
            self._stop.wait(self.every_s)

    def stop(self) -> int:
        """Stop sampling; returns the peak in bytes."""
        self._stop.set()
        self._thread.join(5)
        return self.peak_bytes


@dataclass
class MeasuredRun:
    """A deployment run that ended: its id, final flow run, state, times and peak memory."""

    id: UUID
    run: Any
    state: str | None
    wall_s: float
    run_s: float | None  # the API's total run time
    peak_rss: int  # bytes, the flow-run process and its children


def run_measured(worker: subprocess.Popen[bytes], deployment: str, params: dict[str, Any],
                 env: Mapping[str, str] | None, timeout: float,
                 while_running: Callable[[UUID, psutil.Process], None] | None = None
                 ) -> MeasuredRun:
    """Run ``deployment`` on ``worker``, sampling its flow process's memory, until it ends.

    ``while_running(run_id, process)`` is called once the flow process is up (e.g. to kill
    things on a schedule); the wait for the final state starts when it returns.
    """
    t0 = time.perf_counter()
    run_id = start_deployment(deployment, params, env)
    proc = wait_for(lambda: flow_process(worker, run_id), 300, "the flow-run process", 0.2)
    peak = PeakMemory(proc)
    if while_running is not None:
        while_running(run_id, proc)
    fr = wait_final(run_id, timeout)
    rss = peak.stop()
    return MeasuredRun(run_id, fr, fr.state.type.value if fr.state else None,
                       time.perf_counter() - t0,
                       fr.total_run_time.total_seconds() if fr.total_run_time else None, rss)


def task_run_count(api_url: str, flow_run_ids: Sequence[UUID] = ()) -> int:
    """Task runs recorded by the server (of these flow runs and their subflows, if given)."""
    body: dict[str, Any] = {}
    if flow_run_ids:
        ids = [str(i) for i in flow_run_ids]
        children = httpx.post(f"{api_url}/flow_runs/filter", json={
            "flow_runs": {"parent_flow_run_id": {"any_": ids}}, "limit": 200}, timeout=60)
        children.raise_for_status()
        ids += [c["id"] for c in children.json()]
        body = {"flow_runs": {"id": {"any_": ids}}}
    r = httpx.post(f"{api_url}/task_runs/count", json=body, timeout=60)
    r.raise_for_status()
    return int(r.json())


def chromium_binaries() -> tuple[str, str] | None:
    """Debian's ``chromium`` and ``chromium-driver``, if installed."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def screenshot(url: str, path: Path, wait_text: Sequence[str] = (), timeout: float = 90.0,
               size: tuple[int, int] = (1600, 1200)) -> Path:
    """A PNG of ``url`` in headless Chromium (Debian's ``chromium`` + ``chromium-driver``),
    taken once the page shows every string of ``wait_text``."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    found = chromium_binaries()
    if found is None:
        raise FileNotFoundError("chromium not installed: apt-get install chromium "
                                "chromium-driver")
    browser, driver_bin = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_bin))
    try:
        driver.get(url)
        wait_for(lambda: all(t in driver.find_element(By.TAG_NAME, "body").text
                             for t in wait_text), timeout, f"{url} to show {list(wait_text)}")
        time.sleep(3)  # the run graph is drawn on a canvas after the text appears
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
    return path

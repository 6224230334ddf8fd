"""One spec, any Dask cluster: local CPU processes, one worker per GPU, an existing scheduler,
Kubernetes (dask-kubernetes operator) or SLURM (dask-jobqueue).

The orchestration asks this module for a cluster and gets back a scheduler address; everything
else (Prefect's DaskTaskRunner, plain ``client.map`` inside a task) connects to that address, so
the same flow runs on a laptop, a GPU node or a thousand-worker cluster without edits.

GPU placement uses Dask *resources*: GPU workers advertise ``GPU=<tiles_per_gpu>`` and tile tasks
that run the model ask for ``GPU=1`` (``tile_resources``). A GPU worker then runs at most
``tiles_per_gpu`` model-bound tiles at once, while its other threads stay free for I/O-heavy work
that asks for no resource.

Each worker holds the run's model once, prepared for the run's runtime: pass
``plugins=[ModelPlugin(...)]`` (``glacierscale.infer.worker``) to :func:`make_cluster`, which
registers them on the scheduler so present and future workers run their setup. CPU threads are
shared out, not multiplied: a task uses :func:`task_threads` cores for torch, BLAS and GDAL, so
workers x Dask threads x those threads never exceed the cores (local worker processes also get
them in their environment before they start, which is what BLAS reads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from distributed.diagnostics.plugin import WorkerPlugin
from pydantic import BaseModel, ConfigDict, Field, model_validator

from glacierscale.config import RunConfig
from glacierscale.core.redact import ConsoleFormatter, install_log_redaction

log = logging.getLogger(__name__)

ClusterKind = Literal["auto", "local", "cuda", "address", "kubernetes", "slurm"]

#: Name of the Dask resource that GPU workers advertise and model-bound tasks request.
GPU_RESOURCE = "GPU"

#: Default images, pinned by tag; docker/ builds them (see docs/deploy.md).
CPU_IMAGE = "ghcr.io/glacierscale/glacierscale-cpu:0.1.0"
CUDA_IMAGE = "ghcr.io/glacierscale/glacierscale-cuda:0.1.0"


class ClusterSpec(BaseModel):
    """Where the tile work runs. ``kind="local"`` (CPU processes on this machine) is the default.

    ``auto`` picks ``cuda`` when GPUs are visible and dask-cuda is installed, else ``local``.
    ``address`` connects to a running scheduler (``tcp://host:8786``); ``kubernetes`` creates a
    ``DaskCluster`` through the dask-kubernetes operator; ``slurm`` submits dask-jobqueue jobs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClusterKind = "local"
    n_workers: int | None = Field(
        None, ge=0,
        description="workers (local, kubernetes); one per GPU if unset (cuda); jobs (slurm)",
    )
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = Field(True, description="local: worker processes (True) or threads")
    memory_limit: str = Field("auto", description="per-worker memory limit, e.g. '8GiB'")
    address: str | None = Field(None, description="scheduler address for kind='address'")
    dashboard_address: str | None = Field(
        ":0", description="local dashboards; ':0' picks a free port, None disables"
    )
    tiles_per_gpu: int = Field(2, ge=1, description="model-bound tiles running at once per GPU")
    worker_gpus: int = Field(0, ge=0, description="GPUs per worker (kubernetes, slurm, address)")
    # Kubernetes (dask-kubernetes operator)
    name: str = Field("glacierscale", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None
    image: str | None = Field(None, description="worker image; pinned CPU/CUDA image if unset")
    worker_cpu: str = "4"
    worker_memory: str = "16Gi"
    env: dict[str, str] = Field(default_factory=dict, description="extra worker environment")
    # SLURM (dask-jobqueue)
    queue: str | None = None
    account: str | None = None
    walltime: str = "04:00:00"
    cores: int = Field(8, ge=1, description="slurm: cores per job")
    memory: str = Field("32GB", description="slurm: memory per job")
    job_extra_directives: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        if self.kind == "address" and not self.address:
            raise ValueError(
                "kind='address' needs address='tcp://HOST:8786' (the running Dask scheduler)"
            )
        if self.address and self.kind not in ("address", "auto"):
            raise ValueError(
                f"address={self.address!r} is only used with kind='address'; drop one of them"
            )
        return self

    @property
    def gpu_workers(self) -> bool:
        """Whether the workers of this cluster carry GPUs (and so advertise the GPU resource)."""
        return self.kind == "cuda" or self.worker_gpus > 0

    @classmethod
    def from_run_config(cls, cfg: RunConfig, **overrides: Any) -> ClusterSpec:
        """The cluster a ``RunConfig`` asks for: its scheduler address, else a local cluster."""
        base: dict[str, Any] = (
            {"kind": "address", "address": cfg.scheduler}
            if cfg.scheduler
            else {"kind": "local", "n_workers": cfg.workers,
                  "threads_per_worker": cfg.threads_per_worker}
        )
        base.update(overrides)
        return cls.model_validate(base)


def gpu_count() -> int:
    """Number of NVIDIA GPUs this process may use (0 when none or when NVML is missing).

    Honours ``CUDA_VISIBLE_DEVICES``. Uses NVML when installed, else the driver's ``/proc`` entries,
    so the answer never needs torch or a CUDA context.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    count = 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # ImportError or NVMLError_LibraryNotFound: no usable driver
        proc = Path("/proc/driver/nvidia/gpus")
        count = len(list(proc.iterdir())) if proc.is_dir() else 0
    if visible is not None and count:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def resolve(spec: ClusterSpec) -> ClusterSpec:
    """Make ``auto`` concrete; fall back from ``cuda`` to a CPU cluster when no GPU is usable."""
    if spec.kind == "address" or (spec.kind == "auto" and spec.address):
        return spec.model_copy(update={"kind": "address"})
    if spec.kind not in ("auto", "cuda"):
        return spec
    gpus = gpu_count()
    try:
        import dask_cuda  # noqa: F401

        have_dask_cuda = True
    except Exception:
        have_dask_cuda = False
    if gpus and have_dask_cuda:
        return spec.model_copy(update={"kind": "cuda"})
    if spec.kind == "cuda":
        # One clear line instead of LocalCUDACluster's NVMLError traceback.
        why = "no GPU is visible" if not gpus else "dask-cuda is not installed (pip install .[gpu])"
        log.warning("cluster kind 'cuda' requested but %s: using a CPU LocalCluster", why)
    return spec.model_copy(update={"kind": "local"})


def worker_resources(spec: ClusterSpec) -> dict[str, float] | None:
    """Resources each worker advertises: ``{"GPU": tiles_per_gpu}`` on GPU workers, else None."""
    return {GPU_RESOURCE: float(spec.tiles_per_gpu)} if spec.gpu_workers else None


def tile_resources(spec: ClusterSpec) -> dict[str, float] | None:
    """Resources a model-bound tile task requests, so it lands on a GPU worker (None on CPU)."""
    return {GPU_RESOURCE: 1.0} if spec.gpu_workers else None


def _local_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_quantity(value: str) -> float:
    """A Kubernetes CPU quantity ("4", "500m") in cores."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def task_threads(spec: ClusterSpec) -> int | None:
    """CPU threads one task of a worker may use (torch, BLAS, GDAL): the worker's cores divided
    by its Dask threads, so that nothing is oversubscribed. None where this side cannot know the
    workers' cores (an existing scheduler): each worker then divides its own cores."""
    tpw = spec.threads_per_worker
    if spec.kind == "local":
        cores = _local_cores()
        workers = spec.n_workers or max(1, cores // tpw)
        return max(1, cores // (workers * tpw))
    if spec.kind == "kubernetes":
        return max(1, int(_cpu_quantity(spec.worker_cpu)) // tpw)
    if spec.kind == "slurm":
        return 1  # one process per job, one Dask thread per core
    return None


def thread_env(threads: int) -> dict[str, str]:
    """Environment that holds a worker process's thread pools to ``threads`` from its start."""
    n = str(threads)
    return {"GLACIERSCALE_TORCH_THREADS": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n, "GDAL_NUM_THREADS": n}


def _resource_args(spec: ClusterSpec) -> list[str]:
    res = worker_resources(spec)
    return ["--resources", ",".join(f"{k}={v:g}" for k, v in res.items())] if res else []


def _worker_args(spec: ClusterSpec) -> list[str]:
    return ["--nthreads", str(spec.threads_per_worker), "--memory-limit", spec.memory_limit,
            *_resource_args(spec)]


def kubernetes_cluster_spec(spec: ClusterSpec) -> dict[str, Any]:
    """The ``DaskCluster`` resource (kubernetes.dask.org/v1) for this spec.

    Written out rather than taken from ``make_cluster_spec`` because that helper gives the
    scheduler the workers' GPU limits too; here only workers ask for ``nvidia.com/gpu``.
    """
    image = spec.image or (CUDA_IMAGE if spec.worker_gpus else CPU_IMAGE)
    limits: dict[str, str] = {"cpu": spec.worker_cpu, "memory": spec.worker_memory}
    if spec.worker_gpus:
        limits["nvidia.com/gpu"] = str(spec.worker_gpus)

    def env() -> list[dict[str, str]]:
        return [{"name": k, "value": v} for k, v in sorted(spec.env.items())]

    worker_cmd = ["dask", "cuda", "worker"] if spec.worker_gpus else ["dask", "worker"]
    worker: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "args": [*worker_cmd, "--name", "$(DASK_WORKER_NAME)", "--dashboard-address", "8788",
                 *_worker_args(spec)],
        "env": env(),
        "resources": {"limits": limits, "requests": {"cpu": spec.worker_cpu,
                                                     "memory": spec.worker_memory}},
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
    }
    scheduler: dict[str, Any] = {
        "name": "scheduler",
        # The scheduler needs no GPU: the CPU image has the same dask/distributed versions.
        "image": spec.image or CPU_IMAGE,
        "args": ["dask", "scheduler", "--host", "0.0.0.0"],
        "env": env(),
        "resources": {"limits": {"cpu": "2", "memory": "8Gi"}},
        "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                           "initialDelaySeconds": 5, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                          "initialDelaySeconds": 15, "periodSeconds": 20},
    }
    worker_pod: dict[str, Any] = {"containers": [worker]}
    if spec.worker_gpus:
        # GPU nodes are usually tainted so that only GPU workloads land on them.
        worker_pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                      "effect": "NoSchedule"}]
    metadata: dict[str, Any] = {"name": spec.name}
    if spec.namespace:
        metadata["namespace"] = spec.namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "idleTimeout": 600,
            "worker": {"replicas": spec.n_workers if spec.n_workers is not None else 2,
                       "spec": worker_pod},
            "scheduler": {
                "spec": {"containers": [scheduler]},
                "service": {
                    "type": "ClusterIP",
                    "selector": {"dask.org/cluster-name": spec.name,
                                 "dask.org/component": "scheduler"},
                    "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786,
                               "targetPort": "tcp-comm"},
                              {"name": "http-dashboard", "protocol": "TCP", "port": 8787,
                               "targetPort": "http-dashboard"}],
                },
            },
        },
    }


def slurm_kwargs(spec: ClusterSpec) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for this spec (one worker per job)."""
    directives = list(spec.job_extra_directives)
    if spec.worker_gpus:
        directives.append(f"--gres=gpu:{spec.worker_gpus}")
    return {
        "cores": spec.cores,
        "processes": 1,
        "memory": spec.memory,
        "queue": spec.queue,
        "account": spec.account,
        "walltime": spec.walltime,
        "job_extra_directives": directives,
        # jobqueue sets threads and memory from cores/memory; only the GPU resource is added.
        "worker_extra_args": _resource_args(spec),
        "job_script_prologue": [f"export {k}={v}" for k, v in sorted(spec.env.items())],
        "name": spec.name,
    }


def local_kwargs(spec: ClusterSpec) -> dict[str, Any]:
    """Keyword arguments of ``distributed.LocalCluster`` (or ``LocalCUDACluster``) for this spec."""
    kw: dict[str, Any] = {
        "threads_per_worker": spec.threads_per_worker,
        "processes": spec.processes,
        "memory_limit": spec.memory_limit,
        "dashboard_address": spec.dashboard_address,
    }
    if spec.n_workers is not None:
        kw["n_workers"] = spec.n_workers
    elif spec.kind == "local":
        kw["n_workers"] = max(1, _local_cores() // spec.threads_per_worker)
    if spec.processes:
        # Loopback only by default; a thread-based LocalCluster refuses a host argument.
        kw["host"] = "127.0.0.1"
        threads = task_threads(spec)
        if threads is not None:
            # Read by the worker process at start (BLAS sizes its pool at import).
            kw["env"] = {**thread_env(threads), **spec.env}
    res = worker_resources(spec)
    if res:
        kw["resources"] = res
    return kw


class WorkerLogging(WorkerPlugin):
    """Workers log like the CLI: redacted, one line per record, tracebacks only when debugging."""

    idempotent = True  # registered again with the same settings: nothing to do

    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self.pid = os.getpid()
        self.name = f"glacierscale-logging-{'debug' if debug else 'quiet'}"

    def setup(self, worker: Any) -> None:
        install_log_redaction()
        if os.getpid() == self.pid:
            return  # threads in the flow's own process already log through its handlers
        logging.captureWarnings(True)  # warnings too pass the redaction
        handler = logging.StreamHandler()
        handler.setFormatter(ConsoleFormatter(self.debug))
        # A worker process is ours to configure: one handler (Prefect's import added its own).
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(logging.DEBUG if self.debug else logging.WARNING)
        if not self.debug:
            # Readers log every failed read; the run reports each failed tile once, by cause.
            for name in ("odc", "rasterio", "distributed.nanny"):
                logging.getLogger(name).setLevel(logging.CRITICAL)


def register_plugins(address: str, plugins: Sequence[Any]) -> None:
    """Register worker plugins on the scheduler at ``address``: every present worker runs their
    setup now (an error there, e.g. an unknown model, is raised here), every future one at start."""
    if not plugins:
        return
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        for plugin in plugins:
            client.register_plugin(plugin)


@contextmanager
def make_cluster(spec: ClusterSpec | None = None, *, plugins: Sequence[Any] = (),
                 preload: Sequence[str] = ()) -> Iterator[tuple[Any | None, str]]:
    """Start (or connect to) the cluster of ``spec``; yield ``(cluster or None, address)``.

    ``plugins`` (Dask worker plugins, e.g. ``glacierscale.infer.worker.ModelPlugin`` holding the
    run's model) are registered before the address is handed out. ``preload`` names modules a
    local CPU worker imports as it starts (Dask's worker preload), so its first task does not
    wait for them. The cluster is closed on exit; for ``kind="address"`` nothing is started or
    stopped.
    """
    spec = resolve(spec or ClusterSpec())
    if spec.kind == "address":
        assert spec.address is not None
        register_plugins(spec.address, plugins)
        yield None, spec.address
        return
    cluster: Any
    if spec.kind == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(**local_kwargs(spec), **_preload(preload))
    elif spec.kind == "cuda":
        from dask_cuda import LocalCUDACluster

        kw = local_kwargs(spec)  # dask-cuda sets up its workers itself: no preload here
        kw.pop("processes", None)  # always one process per GPU
        cluster = LocalCUDACluster(**kw)
    elif spec.kind == "kubernetes":
        try:
            from dask_kubernetes.operator import KubeCluster
        except ImportError as exc:
            raise RuntimeError(
                "cluster kind 'kubernetes' needs dask-kubernetes: pip install 'glacierscale[k8s]'"
            ) from exc
        cluster = KubeCluster(custom_cluster_spec=kubernetes_cluster_spec(spec),
                              namespace=spec.namespace)
    elif spec.kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise RuntimeError(
                "cluster kind 'slurm' needs dask-jobqueue: pip install 'glacierscale[slurm]'"
            ) from exc
        cluster = SLURMCluster(**slurm_kwargs(spec))
        cluster.scale(jobs=spec.n_workers if spec.n_workers is not None else 1)
    else:  # pragma: no cover - resolve() leaves only the kinds above
        raise ValueError(f"unknown cluster kind {spec.kind!r}")
    log.info("Dask cluster %s at %s", type(cluster).__name__, cluster.scheduler_address)
    try:
        register_plugins(cluster.scheduler_address, plugins)
        yield cluster, cluster.scheduler_address
    except BaseException:
        # Cancelled or crashed: stop now rather than wait for running tiles to drain; finished
        # tiles are already stored and a rerun resumes from them.
        _close(cluster, timeout=5)
        raise
    _close(cluster)


def _preload(modules: Sequence[str]) -> dict[str, Any]:
    return {"preload": list(modules)} if modules else {}


def _close(cluster: Any, timeout: float | None = None) -> None:
    """Stop ``cluster``; a stop that outlives its timeout (workers slow to exit on a loaded
    machine) is logged, not raised: by then every result is stored, and the processes go with the
    nanny that owns them."""
    try:
        cluster.close(timeout=timeout) if timeout is not None else cluster.close()
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError since Python 3.11
        log.warning("the Dask cluster did not stop in time (%s); its workers are left to exit",
                    type(exc).__name__)

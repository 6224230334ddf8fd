"""Device, precision and memory layout, chosen from what the machine has.

CUDA: bf16 autocast where the GPU supports it (else fp16), channels_last, pinned host memory and a
prefetching host-to-device pipeline. CPU: channels_last (2.9x faster than NCHW for the U-Net on the
2-core AVX-512 machines this project is developed on) in fp32; bf16 autocast only where the CPU has
AMX tiles, because with AVX512-BF16 alone it measured slower than fp32 channels_last (1.8 vs 2.5
windows/s) and moved probabilities by ~2e-2 on average. An asked-for device or precision the machine
lacks logs one clear line and falls back; it never crashes a run.

:func:`choose_runtime` is a pure function of the request and the machine's :class:`Capabilities`,
so every branch, including the GPU ones, is testable on any machine. A run measures instead
(:func:`glacierscale.infer.probe.select_runtime`) and records its :class:`RuntimeChoice`, the
small serialisable part of a runtime that changes outputs, so that every tile and every worker of
the run, and its resume, use the same one.

CPU threads: a process uses, in this order, what :func:`set_cpu_threads` fixed (a Dask worker's
share of the cores), ``GLACIERSCALE_TORCH_THREADS``, ``OMP_NUM_THREADS`` (what the process was
started with: Dask's worker processes get 1), else every core it may run on (affinity and cgroup
quota). Never more, so worker processes of a local cluster do not oversubscribe the cores.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal, cast

import torch

from glacierscale.config import InferConfig

log = logging.getLogger("glacierscale.infer")

Precision = Literal["fp32", "bf16", "fp16"]
Layout = Literal["channels_last", "nchw"]
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers the engine."""

    cuda_devices: int = 0
    cuda_bf16: bool = False
    cpu_amx_bf16: bool = False
    cpu_avx512_bf16: bool = False
    cpu_threads: int = 1


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cgroup_cpus() -> int | None:
    """Whole CPUs of the cgroup v2 quota (containers, Kubernetes limits), None if unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(int(int(quota) / int(period)), 1)


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return min(cores, quota) if quota else cores


def _cpu_threads() -> int:
    for var in ("GLACIERSCALE_TORCH_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(var, "").strip()
        if env.isdigit() and int(env) > 0:
            return min(int(env), available_cores())
    return available_cores()


@lru_cache(maxsize=1)
def probe_capabilities() -> Capabilities:
    """Probe GPUs and CPU features once per process."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    flags = _cpu_flags()
    # AMX needs both the CPU flag and the kernel's permission; torch asks the kernel for us.
    amx = "amx_bf16" in flags and bool(getattr(torch._C._cpu, "_init_amx", lambda: False)())
    return Capabilities(
        cuda_devices=n,
        cuda_bf16=bool(n and torch.cuda.is_bf16_supported()),
        cpu_amx_bf16=amx,
        cpu_avx512_bf16="avx512_bf16" in flags or amx,
        cpu_threads=_cpu_threads(),
    )


@dataclass(frozen=True)
class Runtime:
    """How the engine runs: device, autocast precision, memory format and host pipeline.

    ``compile`` is False, True (torch.compile with inductor) or a torch.compile backend name.
    ``precision_auto`` records that the precision was chosen by the engine (so an accuracy probe may
    still downgrade it), ``threads`` fixes torch's CPU threads (fixed threads make CPU results
    bit-identical run to run), ``prefetch`` is how many batches a background thread prepares ahead,
    ``device_windows`` sends whole tiles to the device and cuts windows there (the CUDA default;
    the host-window engine reads lazy inputs window by window instead). ``fold_bn`` runs a copy
    of the network with its batch norms folded into the convolutions (see
    :mod:`glacierscale.infer.fold`): the same function, float32 rounding apart.
    """

    device: str = "cpu"
    precision: Precision = "fp32"
    channels_last: bool = True
    compile: bool | str = False
    threads: int | None = None
    pin_memory: bool = False
    prefetch: int = 0
    precision_auto: bool = False
    device_windows: bool = False
    fold_bn: bool = True

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def describe(self) -> str:
        fmt = "channels_last" if self.channels_last else "NCHW"
        extra = ", torch.compile" if self.compile else ""
        extra += ", device-resident tiles" if self.device_windows else ""
        threads = f", {self.threads} threads" if self.threads and not self.is_cuda else ""
        return f"{self.device} {self.precision} {fmt}{extra}{threads}"

    def fp32(self) -> Runtime:
        """The same runtime in full precision."""
        return replace(self, precision="fp32", precision_auto=False)

    @property
    def layout(self) -> Layout:
        return "channels_last" if self.channels_last else "nchw"

    def choice(self) -> RuntimeChoice:
        """The part of this runtime that changes outputs, as a run records it."""
        return RuntimeChoice("cuda" if self.is_cuda else "cpu", self.precision, self.layout)


@dataclass(frozen=True)
class RuntimeChoice:
    """A run's runtime: device kind, precision and memory layout, chosen once per run.

    Small and serialisable (:meth:`token`, :meth:`to_dict`): recorded in the run's config token
    and provenance and handed to every worker, which turns it into a :class:`Runtime` for its own
    device and threads with :meth:`runtime`. ``evidence`` (what the probe measured: windows/s per
    candidate, reduced-precision accuracy) is kept for the record and takes no part in equality.
    """

    device: Literal["cpu", "cuda"] = "cpu"
    precision: Precision = "fp32"
    layout: Layout = "channels_last"
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda") or self.precision not in ("fp32", "bf16", "fp16") \
                or self.layout not in ("channels_last", "nchw"):
            raise ValueError(f"not a runtime choice: {self.device}/{self.precision}/{self.layout}")

    def token(self) -> str:
        """``device/precision/layout``, e.g. ``cpu/fp32/channels_last``."""
        return f"{self.device}/{self.precision}/{self.layout}"

    @classmethod
    def parse(cls, token: str) -> RuntimeChoice:
        """The choice a :meth:`token` names."""
        parts = token.strip().split("/")
        if len(parts) != 3:
            raise ValueError(f"runtime token {token!r} is not device/precision/layout, "
                             "e.g. cpu/fp32/channels_last")
        return cls(cast(Any, parts[0]), cast(Any, parts[1]), cast(Any, parts[2]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the token's three fields, the token and the evidence."""
        return {"device": self.device, "precision": self.precision, "layout": self.layout,
                "token": self.token(), "evidence": dict(self.evidence)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeChoice:
        return cls(data["device"], data["precision"], data["layout"],
                   dict(data.get("evidence") or {}))

    def runtime(self, cfg: InferConfig, *, threads: int | None = None,
                compile: bool | str = False) -> Runtime:
        """This choice as a :class:`Runtime` of this process: ``cfg.device`` picks the GPU index
        (``cuda:N``), threads default to the process's CPU threads. A CUDA choice on a worker
        without a GPU falls back to the CPU in full precision, with one logged line."""
        device = cfg.device if self.device == "cuda" and cfg.device.startswith("cuda") \
            else self.device
        rt, notes = choose_runtime(cfg.model_copy(update={"device": device, "precision": "fp32"}),
                                   probe_capabilities(), compile=compile,
                                   threads=threads or cpu_threads())
        for level, note in notes:
            log_once(level, note)
        precision: Precision = self.precision if rt.is_cuda == (self.device == "cuda") \
            else "fp32"
        rt = replace(rt, precision=precision, channels_last=self.layout == "channels_last",
                     precision_auto=False)
        log_once(logging.INFO, f"inference runtime: {rt.describe()} (run's choice "
                 f"{self.token()})")
        return rt


def choose_runtime(cfg: InferConfig, caps: Capabilities, *, compile: bool | str = False,
                   threads: int | None = None) -> tuple[Runtime, list[tuple[int, str]]]:
    """Pick the runtime for ``cfg`` on a machine with ``caps``; returns it and (level, note) lines
    to log, one per fallback or decision worth knowing."""
    notes: list[tuple[int, str]] = []
    m = _DEVICE_RE.match(cfg.device.strip().lower())
    if m is None:
        raise ValueError(f"device {cfg.device!r} is not understood; use auto, cpu, cuda or cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind in ("cuda", "auto") and caps.cuda_devices > 0:
        idx = int(index) if index is not None else 0
        if idx >= caps.cuda_devices:
            notes.append((logging.WARNING, f"device cuda:{idx} asked for but only "
                          f"{caps.cuda_devices} GPU(s) are visible; using cuda:0"))
            idx = 0
        device = f"cuda:{idx}"
    else:
        if kind == "cuda":
            notes.append((logging.WARNING, f"device {cfg.device!r} asked for but no CUDA GPU is "
                          "visible (torch.cuda.is_available() is False); falling back to CPU"))
        device = "cpu"

    auto = cfg.precision == "auto"
    precision: Precision
    if device.startswith("cuda"):
        if auto:
            precision = "bf16" if caps.cuda_bf16 else "fp16"
        elif cfg.precision == "bf16" and not caps.cuda_bf16:
            notes.append((logging.WARNING, "bf16 asked for but this GPU has no bf16 support; "
                          "using fp16 autocast"))
            precision = "fp16"
        else:
            precision = cfg.precision  # type: ignore[assignment]
        rt = Runtime(device=device, precision=precision, channels_last=True, compile=compile,
                     threads=None, pin_memory=True, prefetch=2, precision_auto=auto,
                     device_windows=True)
        return rt, notes

    if auto:
        precision = "bf16" if caps.cpu_amx_bf16 else "fp32"
    elif cfg.precision == "fp16":
        notes.append((logging.WARNING, "fp16 asked for on CPU, where it is slow and inaccurate; "
                      "using fp32"))
        precision = "fp32"
    elif cfg.precision == "bf16" and not caps.cpu_avx512_bf16:
        notes.append((logging.WARNING, "bf16 asked for but this CPU has neither AMX nor "
                      "AVX512-BF16; using fp32"))
        precision = "fp32"
    else:
        precision = cfg.precision  # type: ignore[assignment]
    rt = Runtime(device="cpu", precision=precision, channels_last=True, compile=compile,
                 threads=threads or caps.cpu_threads, pin_memory=False, prefetch=0,
                 precision_auto=auto)
    return rt, notes


_LOGGED: set[str] = set()
_THREADS: list[int] = []  # process-wide CPU thread setting (set_cpu_threads)
_ENV_BEFORE: dict[str, str | None] = {}  # environment set_cpu_threads changed, as it was


def set_cpu_threads(n: int | None) -> None:
    """Fix the CPU threads every runtime of this process uses (a Dask worker gives each of its
    tasks a share of the cores) and apply them now to torch (and with it MKL) and GDAL; None
    restores the process default (see the module notes) and GDAL's setting."""
    _THREADS.clear()
    if n is None:
        for var, value in _ENV_BEFORE.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        _ENV_BEFORE.clear()
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _THREADS.append(int(n))
    torch.set_num_threads(int(n))
    # GDAL reads its config options from the environment when it needs them.
    _ENV_BEFORE.setdefault("GDAL_NUM_THREADS", os.environ.get("GDAL_NUM_THREADS"))
    os.environ["GDAL_NUM_THREADS"] = str(int(n))


def cpu_threads() -> int:
    """CPU threads a runtime of this process uses unless told otherwise."""
    return _THREADS[0] if _THREADS else probe_capabilities().cpu_threads


def log_once(level: int, message: str) -> None:
    """Log a message once per process (runtime notes would otherwise repeat for every tile)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.log(level, message)


def resolve_runtime(cfg: InferConfig, *, compile: bool | str = False,
                    threads: int | None = None) -> Runtime:
    """The runtime for ``cfg`` on this machine, logging fallbacks and the choice once."""
    threads = threads or cpu_threads()
    rt, notes = choose_runtime(cfg, probe_capabilities(), compile=compile, threads=threads)
    for level, note in notes:
        log_once(level, note)
    log_once(logging.INFO, f"inference runtime: {rt.describe()}")
    return rt


def activate(rt: Runtime) -> None:
    """Apply process-wide settings of a runtime before running it: CPU threads and, on the CPU,
    an allocator that reuses memory (:func:`keep_freed_memory`)."""
    if not rt.is_cuda and rt.threads and torch.get_num_threads() != rt.threads:
        torch.set_num_threads(rt.threads)
    if rt.is_cuda:
        torch.cuda.set_device(rt.torch_device)
    else:
        keep_freed_memory()


_ALLOCATOR: list[bool] = []  # whether keep_freed_memory took, once per process


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve large blocks from its heap and keep freed memory for reuse (no
    mmap per block, no trimming back to the system); True when the setting took (glibc only).

    A forward pass allocates and frees hundreds of MB of activations per batch. Served by a fresh
    mmap each, every page faults in and is zeroed again: measured on the 2-core VM this project
    runs on, 2.6 M page faults and 6 s of system time per 4096 x 4096 tile of the benchmark
    U-Net, half its throughput (26 against 50 windows/s). The memory stays with the process
    instead of going back and forth; what it needs at its peak does not change.
    """
    if not _ALLOCATOR:
        ok = False
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
            ok = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold,
                                                                          1 << 30))
        except (OSError, AttributeError):  # not glibc: its own allocator, left alone
            ok = False
        _ALLOCATOR.append(ok)
    return _ALLOCATOR[0]

"""Device and precision, chosen at run time from what the machine has.

CUDA: bf16 autocast where the GPU supports it (else fp16), channels_last, pinned host memory and a
prefetching host-to-device pipeline. CPU: channels_last (2.9x faster than NCHW for the U-Net on the
2-core AVX-512 machines this project is developed on) in fp32; bf16 autocast only where the CPU has
AMX tiles, because with AVX512-BF16 alone it measured slower than fp32 channels_last (1.8 vs 2.5
windows/s) and moved probabilities by ~2e-2 on average. An asked-for device or precision the machine
lacks logs one clear line and falls back; it never crashes a run.

:func:`choose_runtime` is a pure function of the request and the machine's :class:`Capabilities`,
so every branch, including the GPU ones, is testable on any machine.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import torch

from glacierscale.config import InferConfig

log = logging.getLogger("glacierscale.infer")

Precision = Literal["fp32", "bf16", "fp16"]
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


def _cpu_threads() -> int:
    env = os.environ.get("GLACIERSCALE_TORCH_THREADS")
    if env:
        return max(int(env), 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    the host-window engine reads lazy inputs window by window instead).
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


def set_cpu_threads(n: int | None) -> None:
    """Fix the torch CPU threads every runtime of this process uses (a Dask worker running several
    tasks at once gives each a share of the cores); None restores one thread per available core."""
    _THREADS.clear()
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        _THREADS.append(int(n))


def log_once(level: int, message: str) -> None:
    """Log a message once per process (runtime notes would otherwise repeat for every tile)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.log(level, message)


def resolve_runtime(cfg: InferConfig, *, compile: bool | str = False,
                    threads: int | None = None) -> Runtime:
    """The runtime for ``cfg`` on this machine, logging fallbacks and the choice once."""
    threads = threads or (_THREADS[0] if _THREADS else None)
    rt, notes = choose_runtime(cfg, probe_capabilities(), compile=compile, threads=threads)
    for level, note in notes:
        log_once(level, note)
    log_once(logging.INFO, f"inference runtime: {rt.describe()}")
    return rt


def activate(rt: Runtime) -> None:
    """Apply process-wide settings of a runtime (CPU thread count) before running it."""
    if not rt.is_cuda and rt.threads and torch.get_num_threads() != rt.threads:
        torch.set_num_threads(rt.threads)
    if rt.is_cuda:
        torch.cuda.set_device(rt.torch_device)

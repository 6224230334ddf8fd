"""Peak resident memory of processes, as the benchmarks and the rehearsal measure it.

Linux keeps each process's peak resident set (``VmHWM`` in ``/proc/PID/status``) and lets a
process start it again from its current size (``clear_refs``), which ``getrusage`` cannot: its
``ru_maxrss`` of a spawned process may carry the parent's peak.
"""

from __future__ import annotations

import resource


def _status_bytes(field: str, pid: int | str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident set of process ``pid`` (this one by default) since it started or since its
    last :func:`reset_peak_rss`; 0 for a process that is gone. Without ``/proc`` (not Linux),
    this process's ``ru_maxrss``."""
    hwm = _status_bytes("VmHWM", pid)
    if hwm is not None:
        return hwm
    if pid == "self":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return 0


def peak_rss_gib() -> float:
    """This process's :func:`peak_rss_bytes`, in GiB (a function Dask can run on workers)."""
    return peak_rss_bytes() / 2**30


def reset_peak_rss() -> int | None:
    """Start this process's peak resident set again from its current size; returns that size
    in bytes (the baseline of what follows), or None where the kernel offers no reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_bytes("VmRSS", "self")

"""Peak resident memory as the benchmarks measure it: per process, resettable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from glacierscale.testing.memory import peak_rss_bytes, peak_rss_gib, reset_peak_rss

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_the_peak_starts_again_from_a_reset_and_sees_what_follows() -> None:
    held = bytearray(b"\x01" * (120 * MIB))  # written, so resident
    del held
    base = reset_peak_rss()
    assert base is not None
    assert peak_rss_bytes() < base + 60 * MIB, "the reset forgot the earlier 120 MiB"
    again = bytearray(b"\x01" * (80 * MIB))
    assert peak_rss_bytes() >= base + 75 * MIB
    assert peak_rss_gib() == pytest.approx(peak_rss_bytes() / 2**30, rel=0.05)
    del again


def test_a_process_that_is_gone_has_no_peak() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert peak_rss_bytes(int(proc.stdout)) == 0

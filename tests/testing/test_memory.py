"""Peak resident memory as the benchmarks measure it: per process, resettable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from glacierscale.testing.memory import peak_rss_bytes

MIB = 2**20

# In a fresh interpreter: what this test process's allocator keeps (earlier tests may have asked
# glibc to keep freed memory) must not decide what a new allocation does to the peak.
_CHILD = """
import json
from glacierscale.testing.memory import peak_rss_bytes, peak_rss_gib, reset_peak_rss
held = bytearray(b"\\x01" * (120 * 2**20))  # written, so resident
before = peak_rss_bytes()
del held
base = reset_peak_rss()
after_reset = peak_rss_bytes()
again = bytearray(b"\\x01" * (80 * 2**20))
print(json.dumps({"before": before, "base": base, "after_reset": after_reset,
                  "after": peak_rss_bytes(), "gib": peak_rss_gib()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_the_peak_starts_again_from_a_reset_and_sees_what_follows() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         check=True)
    m = json.loads(out.stdout)
    assert m["base"] is not None
    assert m["before"] >= m["base"] + 100 * MIB, "the 120 MiB were not seen before the reset"
    assert m["after_reset"] < m["base"] + 10 * MIB, "the reset kept the earlier peak"
    assert m["after"] >= m["base"] + 75 * MIB, "the 80 MiB after the reset were not seen"
    assert m["gib"] == pytest.approx(m["after"] / 2**30, rel=0.01)


def test_a_process_that_is_gone_has_no_peak() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert peak_rss_bytes(int(proc.stdout)) == 0

"""The GPU benchmark's CPU smoke run: its code runs end to end before it first meets a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_smoke_run_on_cpu() -> None:
    cmd = [sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--tiles", "3",
           "--tile-size", "96", "--window", "64", "--batch", "4", "--width", "4",
           "--blocks", "1,1", "--iters", "1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["smoke_run"] is True and out["device"] == "cpu" and out["goal_met"] is None
    (row,) = out["results"]
    assert row["runtime"] == "cpu/fp32/channels_last" and row["engine"] == "host-window"
    assert row["raw_windows_per_s"] > 0 and row["engine_windows_per_s"] > 0

"""``glacierscale run`` SIGKILLed mid-run, then the same command again, on local disk and on S3.

The real CLI runs in a child process over the Athabasca sample (16 tiles of 64 px at 30 m). Once a
few tiles have landed (their ``item.json``, the commit record, is seen in the output) the process
is SIGKILLed: no handler runs, as with the OOM killer or a lost machine. Then the same command
runs again and must finish the run: tiles finished before the kill are skipped, not written again;
the others are computed once; the masks and probabilities match an uninterrupted run (pixels and
georeferencing); no partial or temporary object is left. On S3 the writes are counted at a proxy in
front of the S3 server, so "written once" counts final PUTs, not keys in the bucket.

Runs report to a Prefect server started once for the module (as a deployment would), which keeps
each run at seconds of tile work instead of starting a temporary API server every time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from rasterio.io import MemoryFile

from glacierscale.demo.sample import SampleCatalog, athabasca_sample
from glacierscale.io.store import TMP_PREFIX
from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import FaultLog, final_puts
from glacierscale.testing.services import aws_env
from glacierscale.testing.stack import prefect_server, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
GRID = ["--tile-size-px", "64", "--resolution", "30", "--halo-px", "8", "--window-px", "64"]
N_TILES = 16
KILL_AFTER = 4  # tiles landed before the SIGKILL
OUTPUTS = ("glacier_prob.tif", "glacier_mask.tif", "outlines.parquet", "item.json")


@dataclass
class Runner:
    """Runs the CLI over the sample with a given environment."""

    sample: SampleCatalog
    env: dict[str, str]
    logs: Path

    def cmd(self, out: str) -> list[str]:
        s = self.sample
        return [str(BIN / "glacierscale"), "run", "--aoi=" + ",".join(map(str, s.bbox)),
                "--catalog", s.catalog, "--start", str(s.start), "--end", str(s.end),
                "--collections", ",".join(s.collections), *GRID, "--out", out,
                "--workers", "1"]

    def run(self, out: str, extra_env: dict[str, str | None], name: str) -> int:
        with (self.logs / f"{name}.log").open("wb") as log:
            return subprocess.run(self.cmd(out), env=self._env(extra_env), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=600).returncode

    def run_killed(self, out: str, extra_env: dict[str, str | None], name: str,
                   landed: Callable[[], int]) -> int:
        """Start the run, SIGKILL it once ``landed()`` reaches :data:`KILL_AFTER`, wait until
        its worker processes are gone; returns how many tiles had landed then."""
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(self.cmd(out), env=self._env(extra_env), stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: proc.poll() is not None or landed() >= KILL_AFTER, 600,
                         f"{KILL_AFTER} tiles to land", 0.05)
                assert proc.poll() is None, "the run ended before it could be killed"
                children = psutil.Process(proc.pid).children(recursive=True)
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
        # The Dask workers die with the run (they watch their parent): no writer is left that
        # could still publish a tile behind the next run's back.
        workers = [c for c in children if _is_dask_worker(c)]
        assert workers, [c.cmdline() for c in children]
        psutil.wait_procs(workers, timeout=60)
        assert not [w for w in workers if _running(w)], "a Dask worker outlived the run"
        for c in children:  # anything else the run left (nothing should be): ours to stop
            if _running(c):
                c.kill()
        return landed()

    def _env(self, extra: dict[str, str | None]) -> dict[str, str]:
        env = dict(self.env)
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_dask_worker(p: psutil.Process) -> bool:
    try:
        return "multiprocessing" in " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return True  # already gone: it was one of the run's processes


@pytest.fixture(scope="module")
def runner(shared_data: Path, sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Runner]:
    sample = athabasca_sample(shared_data, sample_cache)
    work = tmp_path_factory.mktemp("killed-run")
    with prefect_server(work / "prefect") as server:
        env = {**server.env, "OMP_NUM_THREADS": "1"}
        yield Runner(sample, env, work)


@pytest.fixture(scope="module")
def uninterrupted(runner: Runner) -> Path:
    out = runner.logs / "uninterrupted"
    assert runner.run(str(out), {}, "uninterrupted") == 0, _tail(runner.logs / "uninterrupted.log")
    assert len(_manifest((out / "manifest.json").read_bytes)) == N_TILES
    return out


def _manifest(read: Callable[[], bytes]) -> dict[str, str]:
    """Tile id -> status in a run's manifest."""
    return {t["tile_id"]: t["status"] for t in json.loads(read())["tiles"]}


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _cog(blob: bytes) -> tuple[np.ndarray, tuple[float, ...], str, Any]:
    with MemoryFile(blob) as mem, mem.open() as ds:
        return ds.read(), tuple(ds.transform)[:6], ds.crs.to_string(), ds.nodata


def _assert_same_as(reference: Path, read: Callable[[str], bytes], tiles: list[str]) -> None:
    """Masks and probabilities of every tile equal the reference's: pixels, transform, CRS."""
    for t in tiles:
        for name in ("glacier_prob.tif", "glacier_mask.tif"):
            a = _cog((reference / "tiles" / t / name).read_bytes())
            b = _cog(read(f"tiles/{t}/{name}"))
            np.testing.assert_array_equal(a[0], b[0], err_msg=f"{t}/{name}")
            assert a[1:] == b[1:], (t, name)


def test_killed_local_run_then_rerun_completes_every_tile_once(runner: Runner,
                                                               uninterrupted: Path) -> None:
    out = runner.logs / "local"
    tiles = sorted(_manifest((uninterrupted / "manifest.json").read_bytes))

    def landed() -> int:
        return len(list(out.glob("tiles/*/item.json")))

    at_kill = runner.run_killed(str(out), {}, "local-killed", landed)
    assert KILL_AFTER <= at_kill < N_TILES, at_kill
    finished = {p.parent.name for p in out.glob("tiles/*/item.json")}
    published = {p: p.stat() for p in out.glob("tiles/*/*")}
    assert not (out / "manifest.json").exists()  # the run stopped before its end

    assert runner.run(str(out), {}, "local-rerun") == 0, _tail(runner.logs / "local-rerun.log")
    status = _manifest((out / "manifest.json").read_bytes)
    assert status == {t: "skipped" if t in finished else "done" for t in tiles}
    # Nothing published before the kill is written again: not the finished tiles, nor the
    # outputs an interrupted tile had published (the redo made the same bytes).
    for path, st in published.items():
        again = path.stat()
        assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), path
    _assert_same_as(uninterrupted, lambda k: (out / k).read_bytes(), tiles)
    assert sorted(p.name for p in (out / "tiles").iterdir()) == tiles
    for t in tiles:
        assert sorted(p.name for p in (out / "tiles" / t).iterdir()) == sorted(OUTPUTS)
    left = [p for p in (out / TMP_PREFIX).rglob("*") if p.is_file()] \
        if (out / TMP_PREFIX).exists() else []
    assert left == [], "temporary files left behind"


@pytest.fixture
def s3_proxied(s3_server: str) -> Iterator[tuple[str, FaultLog, Any]]:
    """A fresh bucket, the S3 server behind a counting proxy, and a direct (uncounted) fs."""
    import boto3
    import s3fs

    direct = aws_env(s3_server)
    bucket = f"killed-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=direct["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=direct["AWS_SECRET_ACCESS_KEY"],
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    fs = s3fs.S3FileSystem(key=direct["AWS_ACCESS_KEY_ID"], secret=direct["AWS_SECRET_ACCESS_KEY"],
                           skip_instance_cache=True,
                           client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"})
    with fault_proxy(s3_server, kind="s3") as (proxy, log):
        yield proxy, log, (bucket, fs)


def test_killed_s3_run_then_rerun_writes_every_tile_once(
        runner: Runner, uninterrupted: Path, s3_proxied: tuple[str, FaultLog, Any]) -> None:
    proxy, writes, (bucket, fs) = s3_proxied
    out = f"s3://{bucket}/run"
    tiles = sorted(_manifest((uninterrupted / "manifest.json").read_bytes))
    env = aws_env(proxy)
    base = f"/{bucket}/run/tiles/"

    def landed() -> int:
        return sum(1 for k in final_puts(writes, base) if k.endswith("/item.json"))

    at_kill = runner.run_killed(out, env, "s3-killed", landed)
    assert KILL_AFTER <= at_kill < N_TILES, at_kill
    before = final_puts(writes, base)
    finished = {k[len(base):].split("/")[0] for k in before if k.endswith("/item.json")}
    # Whatever the kill interrupted, every object published so far is whole.
    for key in fs.find(f"{bucket}/run/tiles/"):
        if key.endswith(".tif"):
            _cog(fs.cat_file(key))

    assert runner.run(out, env, "s3-rerun") == 0, _tail(runner.logs / "s3-rerun.log")
    status = _manifest(lambda: fs.cat_file(f"{bucket}/run/manifest.json"))
    assert status == {t: "skipped" if t in finished else "done" for t in tiles}
    puts = final_puts(writes, base)
    # Every output of every tile written once over both runs: finished tiles were skipped,
    # and an interrupted tile's redo did not write again what it had published.
    expected = {f"{base}{t}/{n}": 1 for t in tiles for n in OUTPUTS}
    assert dict(puts) == expected, {k: v for k, v in puts.items() if v != 1}
    _assert_same_as(uninterrupted, lambda k: fs.cat_file(f"{bucket}/run/{k}"), tiles)
    keys = fs.find(f"{bucket}/run")
    assert not [k for k in keys if f"/{TMP_PREFIX}/" in k], "temporary objects left behind"
    assert {k.split("/tiles/")[1].split("/")[0] for k in keys if "/tiles/" in k} == set(tiles)


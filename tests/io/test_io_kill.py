"""A writer killed mid-upload never leaves a partial object at the final key; a rerun completes it,
and the temporary object the dead writer left is removed, while a live writer's is not.

The writer runs in a child process that SIGKILLs itself after part of the payload has reached
storage (local disk, or multipart parts on the S3 server), so the kill lands mid-upload every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import boto3
import geopandas as gpd
import numpy as np
import pytest

from glacierscale.core.tiles import TileSpec
from glacierscale.io import Provenance, Store, tile_complete, write_tile_outputs
from glacierscale.io.store import STALE_AFTER_S, TMP_PREFIX, tmp_owner, writer_alive, writer_id

CHUNK = 5 * 2**20  # S3's minimum multipart part size
N_CHUNKS = 3
STORE_PY = Path(__file__).resolve().parents[2] / "src" / "glacierscale" / "io" / "store.py"

# The writer loads store.py alone (stdlib + fsspec) so each child starts in well under a second.
_WRITER = f"""
import hashlib, importlib.util, json, os, signal, sys
spec = importlib.util.spec_from_file_location("gs_store", {str(STORE_PY)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
Store = mod.Store
url, key, options, kill_after = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
store = Store(url, options)
with store.open_atomic(key) as f:
    for i in range({N_CHUNKS}):
        f.write(hashlib.sha256(bytes([i])).digest() * ({CHUNK} // 32))
        f.flush()
        if i + 1 == kill_after:
            print("killing", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
print("done", flush=True)
"""


def _expected() -> bytes:
    return b"".join(hashlib.sha256(bytes([i])).digest() * (CHUNK // 32) for i in range(N_CHUNKS))


def _run_writer(url: str, key: str, options: Mapping[str, object], kill_after: int) -> int:
    proc = subprocess.run([sys.executable, "-c", _WRITER, url, key, json.dumps(dict(options)),
                           str(kill_after)], capture_output=True, timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()[-2000:]
    return proc.returncode


def test_killed_local_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    url, key = str(tmp_path / "run"), "tiles/t/glacier_prob.tif"
    store = Store(url)
    assert _run_writer(url, key, {}, kill_after=2) == -signal.SIGKILL
    assert not store.exists(key)
    # The partial bytes exist, but only under a temporary key that listings ignore.
    tmp = list((tmp_path / "run" / TMP_PREFIX).iterdir())
    assert len(tmp) == 1 and 0 < tmp[0].stat().st_size < N_CHUNKS * CHUNK
    owner = tmp_owner(tmp[0].name)
    assert owner is not None and owner[0] == key and writer_alive(owner[1]) is False
    assert store.list() == []
    assert _run_writer(url, key, {}, kill_after=0) == 0  # the rerun completes it
    assert store.read_bytes(key) == _expected()
    # Fresh, but its writer is provably dead: removed without waiting for the age guard.
    assert store.clean_tmp() == 1 and store.list() == [key]
    assert not list((tmp_path / "run" / TMP_PREFIX).iterdir())


@pytest.mark.integration
def test_killed_s3_writer_leaves_no_partial_object(s3_bucket: str) -> None:
    url, key = f"s3://{s3_bucket}/run", "tiles/t/glacier_prob.tif"
    options = {"default_block_size": CHUNK}
    assert _run_writer(url, key, options, kill_after=2) == -signal.SIGKILL
    s3 = boto3.client("s3")
    # Parts did reach the server: the kill happened mid-upload.
    uploads = s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert len(uploads) == 1 and uploads[0]["Key"].startswith("run/.glacierscale-tmp/")
    parts = s3.list_parts(Bucket=s3_bucket, Key=uploads[0]["Key"],
                          UploadId=uploads[0]["UploadId"]).get("Parts", [])
    assert len(parts) >= 1
    store = Store(url)
    assert not store.exists(key) and store.list() == []
    assert _run_writer(url, key, options, kill_after=0) == 0
    store.fs.invalidate_cache()
    assert store.read_bytes(key) == _expected()
    assert store.list() == [key]


def test_tile_without_item_is_unfinished_and_rerun_completes(tmp_path: Path) -> None:
    """The item is the commit record: a tile stopped before it is redone, never half-used."""
    store = Store(str(tmp_path / "run"))
    tile = TileSpec(32611, 1, 2, size_px=64, resolution=10.0, halo_px=0)
    prob = np.random.default_rng(0).random((64, 64)).astype("float32")
    prov = Provenance(("scene",), "m")
    no_crs = gpd.GeoDataFrame(geometry=gpd.GeoSeries([]))
    with pytest.raises(ValueError, match="has no CRS"):
        write_tile_outputs(store, tile, prob, provenance=prov, when=datetime(2020, 1, 1),
                           outlines=no_crs)
    assert store.exists(f"tiles/{tile.tile_id}/glacier_prob.tif")
    assert not tile_complete(store, tile.tile_id, prov.token(tile.tile_id))
    cogs = [tmp_path / "run" / "tiles" / tile.tile_id / n
            for n in ("glacier_prob.tif", "glacier_mask.tif")]
    before = [(c.stat().st_ino, c.stat().st_mtime_ns) for c in cogs]
    write_tile_outputs(store, tile, prob, provenance=prov, when=datetime(2020, 1, 1))
    assert tile_complete(store, tile.tile_id, prov.token(tile.tile_id))
    # The redo made the same bytes: what the stopped attempt published is not written again.
    assert [(c.stat().st_ino, c.stat().st_mtime_ns) for c in cogs] == before
    write_tile_outputs(store, tile, prob * 0.5, provenance=prov, when=datetime(2020, 1, 1))
    assert (cogs[0].stat().st_ino, cogs[0].stat().st_mtime_ns) != before[0]  # new bytes


# A writer that starts an upload, says so, and publishes it only when told (a line on stdin).
_LIVE_WRITER = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("gs_store", {str(STORE_PY)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
store = mod.Store(sys.argv[1])
with store.open_atomic(sys.argv[2]) as f:
    f.write(b"live " * 1000)
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()
print("done", flush=True)
"""


def test_a_rewritten_tile_removes_dead_writers_temporaries_but_not_a_live_writers(
        tmp_path: Path) -> None:
    """Rewriting a tile removes what killed writers of that tile left, never a concurrent live
    writer's upload (a zombie task still writing), nor another tile's leftovers; a finished
    run's ``clean_tmp()`` removes the rest."""
    url = str(tmp_path / "run")
    store = Store(url)
    tile = TileSpec(32611, 1, 2, size_px=64, resolution=10.0, halo_px=0)
    other = TileSpec(32611, 5, 5, size_px=64, resolution=10.0, halo_px=0)
    for t in (tile, other):  # killed writers of both tiles
        _run_writer(url, f"tiles/{t.tile_id}/glacier_prob.tif", {}, kill_after=1)
    live = subprocess.Popen([sys.executable, "-c", _LIVE_WRITER, url,
                             f"tiles/{tile.tile_id}/glacier_mask.tif"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert live.stdout is not None and live.stdout.readline() == b"writing\n"
        tmp_dir = tmp_path / "run" / TMP_PREFIX

        def owners() -> dict[str, bool | None]:
            found = [tmp_owner(p.name) for p in tmp_dir.iterdir()]
            return {o[0]: writer_alive(o[1]) for o in found if o}

        assert owners() == {f"tiles/{tile.tile_id}/glacier_prob.tif": False,
                            f"tiles/{other.tile_id}/glacier_prob.tif": False,
                            f"tiles/{tile.tile_id}/glacier_mask.tif": True}
        prob = np.random.default_rng(0).random((64, 64)).astype("float32")
        prov = Provenance(("scene",), "m")
        write_tile_outputs(store, tile, prob, provenance=prov, when=datetime(2020, 1, 1))
        assert owners() == {f"tiles/{other.tile_id}/glacier_prob.tif": False,
                            f"tiles/{tile.tile_id}/glacier_mask.tif": True}
        assert store.clean_tmp() == 1  # the other tile's; the live upload stays
        assert owners() == {f"tiles/{tile.tile_id}/glacier_mask.tif": True}
        live.stdin.write(b"go\n")  # type: ignore[union-attr]
        live.stdin.flush()  # type: ignore[union-attr]
        assert live.wait(60) == 0
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert owners() == {}
    assert store.read_bytes(f"tiles/{tile.tile_id}/glacier_mask.tif") == b"live " * 1000


def test_a_temporary_of_another_machine_goes_only_after_the_age_guard(tmp_path: Path) -> None:
    """Another machine's (or container's) pids cannot be checked here: its upload may be in
    flight, so only age decides."""
    store = Store(str(tmp_path / "run"))
    foreign = f"ffffffffffff-{os.getpid()}-12345"
    assert writer_alive(foreign) is None
    tmp = tmp_path / "run" / TMP_PREFIX / f"tiles%2Ft%2Fitem.json.{foreign}.0123456789abcdef"
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"{}")
    assert store.clean_tmp() == 0 and tmp.exists()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(tmp, (old, old))
    assert store.clean_tmp() == 1 and not tmp.exists()


def test_writer_identity_survives_pid_reuse() -> None:
    """A recycled pid is another process: the writer is named by pid and start time."""
    me = writer_id()
    assert writer_alive(me) is True
    machine, pid, start = me.split("-")
    assert int(pid) == os.getpid() and start != "0"
    assert writer_alive(f"{machine}-{pid}-{int(start) + 1}") is False

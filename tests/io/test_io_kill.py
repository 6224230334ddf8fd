"""A writer killed mid-upload never leaves a partial object at the final key; a rerun completes it.

The writer runs in a child process that SIGKILLs itself after part of the payload has reached
storage (local disk, or multipart parts on the S3 server), so the kill lands mid-upload every time.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import boto3
import geopandas as gpd
import numpy as np
import pytest

from glacierscale.core.tiles import TileSpec
from glacierscale.io import Provenance, Store, tile_complete, write_tile_outputs

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


def _run_writer(url: str, key: str, options: dict[str, object], kill_after: int) -> int:
    proc = subprocess.run([sys.executable, "-c", _WRITER, url, key, json.dumps(options),
                           str(kill_after)], capture_output=True, timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()[-2000:]
    return proc.returncode


def test_killed_local_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    url, key = str(tmp_path / "run"), "tiles/t/glacier_prob.tif"
    store = Store(url)
    assert _run_writer(url, key, {}, kill_after=2) == -signal.SIGKILL
    assert not store.exists(key)
    # The partial bytes exist, but only under a temporary key that listings ignore.
    tmp = list((tmp_path / "run" / ".glacierscale-tmp").iterdir())
    assert len(tmp) == 1 and 0 < tmp[0].stat().st_size < N_CHUNKS * CHUNK
    assert store.list() == []
    assert _run_writer(url, key, {}, kill_after=0) == 0  # the rerun completes it
    assert store.read_bytes(key) == _expected()
    assert store.clean_tmp(older_than_s=0) == 1 and store.list() == [key]


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
    write_tile_outputs(store, tile, prob, provenance=prov, when=datetime(2020, 1, 1))
    assert tile_complete(store, tile.tile_id, prov.token(tile.tile_id))

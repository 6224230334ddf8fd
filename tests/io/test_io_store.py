"""Store: keys, URLs, listing and atomic writes on local disk and memory://."""

from __future__ import annotations

import os
import pickle
import time
import uuid
from pathlib import Path

import pytest

from glacierscale.io import Store, redact, redact_url
from glacierscale.io.store import TMP_PREFIX


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "out"))
    return Store(f"memory://gs-{uuid.uuid4().hex[:8]}/run")


def test_write_read_list_exists(store: Store) -> None:
    assert store.list() == []
    url = store.write_bytes_atomic("tiles/a/item.json", b"{}")
    store.write_bytes_atomic("tiles/b/item.json", b"[]")
    store.write_bytes_atomic("manifest.json", b"m")
    assert url == store.url("tiles/a/item.json")
    assert store.exists("tiles/a/item.json") and not store.exists("tiles/c/item.json")
    assert store.read_bytes("tiles/b/item.json") == b"[]"
    assert store.size("manifest.json") == 1
    assert store.list() == ["manifest.json", "tiles/a/item.json", "tiles/b/item.json"]
    assert store.list("tiles/") == ["tiles/a/item.json", "tiles/b/item.json"]
    assert store.list("nothing/") == []


def test_overwrite_replaces_whole_object(store: Store) -> None:
    store.write_bytes_atomic("k.bin", b"x" * 1000)
    store.write_bytes_atomic("k.bin", b"short")
    assert store.read_bytes("k.bin") == b"short"


def test_missing_key_names_the_url(store: Store) -> None:
    with pytest.raises(FileNotFoundError, match=r"no object at .*nope\.txt"):
        store.read_bytes("nope.txt")


def test_failed_write_publishes_nothing_and_leaves_no_temporary(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.open_atomic("tiles/x/big.bin") as f:
        f.write(b"a" * 100_000)
        raise RuntimeError("boom")
    assert not store.exists("tiles/x/big.bin")
    assert store.list() == []
    assert not store.fs.exists(f"{store.root}/{TMP_PREFIX}") or not store.fs.find(
        f"{store.root}/{TMP_PREFIX}")


def test_put_file_atomic(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    store.put_file_atomic(src, "a/b/c.bin")
    assert store.read_bytes("a/b/c.bin") == src.read_bytes()
    with pytest.raises(FileNotFoundError, match="is not a file"):
        store.put_file_atomic(tmp_path / "missing.bin", "x")


def test_temporaries_are_hidden_and_cleaned(store: Store) -> None:
    # A writer killed mid-upload leaves only a temporary key behind.
    store.fs.makedirs(f"{store.root}/{TMP_PREFIX}", exist_ok=True)
    store.fs.pipe_file(f"{store.root}/{TMP_PREFIX}/dead-writer-k.bin", b"partial")
    store.write_bytes_atomic("k.bin", b"done")
    assert store.list() == ["k.bin"]
    assert store.clean_tmp(older_than_s=3600) == 0  # fresh: could be a live upload
    assert store.clean_tmp(older_than_s=0) == 1
    assert store.list() == ["k.bin"]


def test_local_store_accepts_paths_and_file_urls(tmp_path: Path) -> None:
    a = Store(str(tmp_path / "r"))
    b = Store(f"file://{tmp_path}/r")
    a.write_bytes_atomic("x.txt", b"1")
    assert b.read_bytes("x.txt") == b"1"
    assert a.url("x.txt") == str(tmp_path / "r" / "x.txt")  # a plain path GDAL can open


def test_store_pickles_without_the_live_filesystem(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "p"))
    s.write_bytes_atomic("k", b"v")
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.read_bytes("k") == b"v"


def test_repr_and_redaction_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-" + "Q" * 20
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s = Store("memory://redact", storage_options={"key": "AKIA" + "Z" * 16, "secret": secret})
    assert secret not in repr(s) and "AKIA" not in repr(s)
    assert redact(f"token={secret} end") == "token=*** end"
    assert redact("AKIA" + "Z" * 16, s.storage_options) == "***"
    assert redact_url("https://user:pw@example.org:9000/a?x=1") == "https://example.org:9000/a?x=1"
    assert redact_url("s3://bucket/key") == "s3://bucket/key"


def test_empty_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="output URL is required"):
        Store("")


def test_concurrent_writers_of_one_key_leave_one_complete_object(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s = Store(str(tmp_path / "c"))
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: s.write_bytes_atomic("same.bin", p), payloads))
    assert s.read_bytes("same.bin") in payloads
    time.sleep(0)
    assert s.list() == ["same.bin"]

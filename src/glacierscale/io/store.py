"""Storage rooted at a URL (local path, file://, s3://, gs://, memory://) through fsspec.

Every write is atomic: bytes go to a temporary key under ``.glacierscale-tmp/`` first and are moved
into place only once complete, so the final key never holds a partial object, whatever kills the
writer (OOM, pre-emption, SIGKILL). On a local disk the move is a rename; on object stores it is a
server-side copy, which publishes the object whole. Thousands of workers can write at once because
each temporary key is unique and each tile writes its own keys.

A killed writer leaves its temporary object behind. Each temporary key names its final key and its
writer (machine, pid and process start time: :func:`writer_id`), so :meth:`Store.clean_tmp` can
remove what dead writers left without touching an upload still in flight: a writer of this machine
that no longer runs is provably dead, at any age; a writer elsewhere cannot be asked, so its
temporary object goes only once older than any write lasts (:data:`STALE_AFTER_S`). Tile writers
clean their own tile's leftovers before writing it again, and a finished run cleans the rest.

Credentials stay inside the fsspec filesystem: they are never part of a URL, a repr or a log line.

On object stores every request (put, server-side copy, delete of the temporary key, reads) is
retried on transient faults (503 ``SlowDown``, 429, timeouts, resets) with backoff and jitter, per
the write settings of :mod:`glacierscale.core.faults`; botocore's own per-request retries sit
below. Retrying is safe because of the atomic layout: a put goes to a temporary key and is
published by a copy, both of which may be repeated without ever exposing a partial object.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, unquote

import fsspec
from fsspec.core import url_to_fs

from glacierscale.core import faults
from glacierscale.core.redact import SECRET_ENV, redact, redact_url, secret_values  # noqa: F401

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Prefix of temporary keys, relative to the store root; ``Store.list`` hides it.
TMP_PREFIX = ".glacierscale-tmp"
_CHUNK = 8 * 1024 * 1024
#: Age after which a temporary object is abandoned whoever wrote it. A write (put, copy, delete)
#: lasts seconds, a few minutes with every retry spent; an hour also absorbs clock skew between
#: this machine and the object store's timestamps.
STALE_AFTER_S = 3600.0


@functools.cache
def _machine() -> str:
    """Where a pid means something: this host, kernel boot and pid namespace (a container on
    the same kernel has its own pids; a reboot reuses them all)."""
    try:
        parts = [socket.gethostname(), Path("/proc/sys/kernel/random/boot_id").read_text(),
                 os.readlink("/proc/self/ns/pid")]
    except OSError:
        return "nopid"  # no /proc: pids cannot be checked here, the age guard decides
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process
    for the life of the kernel, so a recycled pid is not mistaken for the writer."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_WRITER: tuple[int, str] | None = None


def writer_id() -> str:
    """This process as the owner of temporary objects: ``<machine>-<pid>-<start ticks>``."""
    global _WRITER
    pid = os.getpid()
    if _WRITER is None or _WRITER[0] != pid:  # recomputed in a forked child
        _WRITER = (pid, f"{_machine()}-{pid}-{_start_ticks(pid) or 0}")
    return _WRITER[1]


def writer_alive(writer: str) -> bool | None:
    """Whether the writer ``writer`` (a :func:`writer_id`) still runs: True or False when it ran
    on this machine, None when that cannot be told here (another machine or container)."""
    machine, _, rest = writer.partition("-")
    pid, _, start = rest.partition("-")
    if machine != _machine() or machine == "nopid" or not pid.isdigit() or start in ("", "0"):
        return None
    return _start_ticks(int(pid)) == start


def tmp_owner(name: str) -> tuple[str, str] | None:
    """(final key, writer id) of a temporary object's name; None for a name of another form."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[1].count("-") != 2:
        return None
    return unquote(parts[0]), parts[1]


class Store:
    """fsspec-backed storage rooted at a URL; keys are ``/``-separated paths below the root.

    >>> store = Store("memory://demo")
    >>> store.write_bytes_atomic("a/b.txt", b"hi")
    'memory:///demo/a/b.txt'
    >>> store.read_bytes("a/b.txt")
    b'hi'
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        if not url:
            raise ValueError("an output URL is required, e.g. ./out, s3://bucket/prefix")
        self._options = dict(storage_options or {})
        self.fs, root = url_to_fs(str(url), **self._options)
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.is_local = "file" in _protocols(self.fs)
        if self.is_local:
            self.root = str(Path(self.root).resolve())

    def __repr__(self) -> str:
        # Storage options (which may hold keys) are deliberately left out.
        return f"Store({self.url('')!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for Dask workers: rebuild from URL and options rather than the live filesystem.
        return (Store, (self.url(""), self._options))

    @property
    def storage_options(self) -> dict[str, Any]:
        """A copy of the options the filesystem was built with (may hold secrets: never log)."""
        return dict(self._options)

    def _path(self, key: str) -> str:
        key = key.lstrip("/")
        if not key:
            return self.root
        return f"{self.root}/{key}" if self.root else key

    def url(self, key: str) -> str:
        """Full URL of a key: a plain path for local storage (what GDAL opens), else scheme://."""
        path = self._path(key)
        if self.is_local:
            return path
        return str(self.fs.unstrip_protocol(path))

    def _retry(self, fn: Callable[[], T], key: str) -> T:
        """``fn()`` retried on transient faults when the store is remote (local disks do not
        flake: their errors are permanent)."""
        if self.is_local:
            return fn()
        return faults.retry_call(fn, site="write", what=redact_url(self.url(key)))

    def exists(self, key: str) -> bool:
        """True if an object (or a folder with objects) exists at ``key``."""
        return bool(self._retry(lambda: self.fs.exists(self._path(key)), key))

    def size(self, key: str) -> int:
        """Size in bytes of the object at ``key``."""
        return int(self._retry(lambda: self.fs.size(self._path(key)), key))

    def read_bytes(self, key: str) -> bytes:
        """The whole object at ``key``; FileNotFoundError names the URL when it is missing."""
        try:
            return bytes(self._retry(lambda: self.fs.cat_file(self._path(key)), key))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no object at {redact_url(self.url(key))}") from exc

    def get_file(self, key: str, local_path: str | Path) -> Path:
        """Download ``key`` to ``local_path``."""
        self._retry(lambda: self.fs.get_file(self._path(key), str(local_path)), key)
        return Path(local_path)

    def _tmp_path(self, key: str) -> str:
        # One flat folder, the final key quoted into the name: temporaries of a tile are found
        # by their name, and a local run leaves no empty folders behind.
        name = f"{quote(key.strip('/'), safe='')}.{writer_id()}.{uuid.uuid4().hex[:16]}"
        return self._path(f"{TMP_PREFIX}/{name}")

    def _publish(self, tmp: str, key: str) -> str:
        final = self._path(key)
        parent = final.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            os.replace(tmp, final)  # atomic rename on one filesystem, replaces an older object
        else:
            # Copy, then delete, each retried on its own: a move retried as a whole would find
            # its source gone when only the delete's answer was lost.
            self._retry(lambda: self.fs.cp_file(tmp, final), key)
            self._remove_tmp(tmp, key)
            with contextlib.suppress(Exception):
                self.fs.invalidate_cache(parent)
        log.debug("published %s", redact_url(self.url(key)))
        return self.url(key)

    @contextlib.contextmanager
    def open_atomic(self, key: str) -> Iterator[IO[bytes]]:
        """A writable binary file that appears at ``key`` only if the block completes.

        On an exception the temporary object is removed and nothing is published; if the process
        dies, only a temporary key is left behind (``clean_tmp`` removes those). A stream cannot
        be replayed, so its upload is not retried: on object stores prefer
        ``write_bytes_atomic`` or ``put_file_atomic``, which are.
        """
        tmp = self._tmp_path(key)
        if self.is_local:
            os.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as f:
                yield f
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise
        self._publish(tmp, key)

    def _remove_tmp(self, tmp: str, key: str) -> None:
        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(tmp)

        try:
            self._retry(rm, key)
        except Exception:  # a leftover temporary object is harmless: clean_tmp removes it
            log.warning("could not remove a temporary object of %s", redact_url(self.url(key)))

    def write_bytes_atomic(self, key: str, data: bytes) -> str:
        """Write ``data`` to ``key`` atomically; returns the URL."""
        if self.is_local:
            with self.open_atomic(key) as f:
                f.write(data)
            return self.url(key)
        tmp = self._tmp_path(key)
        try:
            # The bytes are at hand, so a failed put is simply sent again.
            self._retry(lambda: self.fs.pipe_file(tmp, data), key)
        except BaseException:
            self._remove_tmp(tmp, key)
            raise
        return self._publish(tmp, key)

    def put_file_atomic(self, local_path: str | Path, key: str) -> str:
        """Upload a local file to ``key`` atomically; returns the URL."""
        local_path = Path(local_path)
        if not local_path.is_file():
            raise FileNotFoundError(f"{local_path} is not a file")
        tmp = self._tmp_path(key)
        try:
            if self.is_local:
                os.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
                shutil.copyfile(local_path, tmp)
            else:
                self._retry(lambda: self.fs.put_file(str(local_path), tmp), key)
        except BaseException:
            if self.is_local:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(tmp)
            else:
                self._remove_tmp(tmp, key)
            raise
        return self._publish(tmp, key)

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` if it exists."""
        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(key))

        self._retry(rm, key)

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys (relative to the root) of objects under ``prefix``, temporaries hidden."""
        base = self._path(prefix)
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(base)
        try:
            found = self._retry(lambda: self.fs.find(base), prefix)
        except FileNotFoundError:
            return []
        root = self.root.rstrip("/") + "/" if self.root else ""
        keys = []
        for p in found:
            p = str(p)
            if self.is_local:
                p = str(Path(p))
            rel = p[len(root):] if p.startswith(root) else p
            if rel and not rel.startswith(TMP_PREFIX + "/"):
                keys.append(rel)
        return sorted(keys)

    def clean_tmp(self, older_than_s: float = STALE_AFTER_S, prefix: str = "") -> int:
        """Remove temporary objects that killed writers left; returns how many were removed.

        Only abandoned ones go, so this is safe while other workers write: those of a writer
        on this machine that no longer runs (:func:`writer_alive`), at any age, and any older
        than ``older_than_s`` (a writer elsewhere cannot be asked, and an upload in flight is
        younger than that, whoever writes it). Without a timestamp, only a dead writer's go.
        ``prefix`` limits it to temporaries of final keys under it, e.g. ``tiles/<id>/`` for one
        tile's outputs.
        """
        base = self._path(TMP_PREFIX)
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(base)
        try:
            entries = self._retry(lambda: self.fs.find(base, detail=True), TMP_PREFIX)
        except FileNotFoundError:
            return 0
        now = time.time()
        removed = 0
        for path, info in entries.items():
            owner = tmp_owner(str(path).rsplit("/", 1)[-1])
            if prefix and (owner is None or not owner[0].startswith(prefix.lstrip("/"))):
                continue
            alive = writer_alive(owner[1]) if owner else None
            mtime = _mtime(info)
            old = mtime is not None and now - mtime >= older_than_s
            if alive is False or old:
                self._remove_tmp(str(path), TMP_PREFIX)
                removed += 1
        if removed:
            log.info("removed %d temporary object(s) left by killed writers under %s", removed,
                     redact_url(self.url(prefix)))
        return removed


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _mtime(info: dict[str, Any]) -> float | None:
    for k in ("mtime", "LastModified", "last_modified", "created", "updated"):
        v = info.get(k)
        if v is None:
            continue
        if isinstance(v, int | float):
            return float(v)
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
    return None

"""Debian's PostgreSQL on 127.0.0.1 as a normal user: the database of a production-like Prefect.

A self-hosted Prefect server for a global run stores its flow and task runs in PostgreSQL (as
``docker/compose.yaml`` does); SQLite is for laptops and CI. :func:`postgres_server` starts a
throwaway cluster: ``initdb`` (trust authentication, one superuser), ``pg_ctl start`` on a free
loopback port with the socket inside the cluster folder, one database, and ``pg_ctl stop`` plus
removal of the folder on exit. ``initdb`` refuses to run as root, so under root every PostgreSQL
command runs as the unprivileged ``postgres`` account that Debian's package creates (or the one
named by ``os_user``).

The server needs the ``asyncpg`` driver in the Prefect server's environment:
``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://USER@127.0.0.1:PORT/DB``
(:attr:`Postgres.url`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from glacierscale.testing.services import free_port

#: Where Debian installs the server binaries (one folder per major version).
DEBIAN_ROOT = Path("/usr/lib/postgresql")


def pg_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest version, else one on PATH."""
    if DEBIAN_ROOT.is_dir():
        versions = sorted((p for p in DEBIAN_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
                          key=lambda p: int(p.name) if p.name.isdigit() else 0)
        if versions:
            return versions[-1] / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def available() -> bool:
    """Whether PostgreSQL can be started here (binaries present, an unprivileged account)."""
    if pg_bin_dir() is None:
        return False
    return os.geteuid() != 0 or _account("postgres") is not None


def _account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@dataclass(frozen=True)
class Postgres:
    """A running cluster: its port, database, superuser and folders."""

    port: int
    database: str
    user: str
    root: Path  # cluster folder (data, socket, log)
    bin_dir: Path
    os_user: str | None  # the account commands run as (None: this process's)

    @property
    def url(self) -> str:
        """SQLAlchemy URL for Prefect (``PREFECT_API_DATABASE_CONNECTION_URL``)."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run one SQL statement with ``psql``; returns its unaligned, tuples-only output."""
        return _run([str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                     "-U", self.user, "-d", database or self.database, "-At", "-c", sql],
                    self.os_user).strip()

    def size_bytes(self) -> int:
        """On-disk size of the database (``pg_database_size``): tables, indexes and TOAST."""
        return int(self.psql(f"select pg_database_size('{self.database}')"))

    def row_count(self, table: str) -> int:
        """Rows of one table (e.g. Prefect's ``task_run``)."""
        return int(self.psql(f"select count(*) from {table}"))


def _run(cmd: list[str], os_user: str | None, timeout: float = 120.0) -> str:
    kwargs: dict[str, object] = {}
    if os_user is not None:
        acct = _account(os_user)
        if acct is None:
            raise RuntimeError(f"no account {os_user!r}: create one (useradd {os_user}) or run "
                               "as a normal user; initdb refuses root")
        kwargs = {"user": acct.pw_uid, "group": acct.pw_gid, "extra_groups": [],
                  "env": {**os.environ, "HOME": acct.pw_dir, "USER": os_user}}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
                         check=False, **kwargs)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({res.returncode}): "
                           f"{(res.stderr or res.stdout)[-2000:]}")
    return str(res.stdout)


@contextmanager
def postgres_server(database: str = "prefect", user: str = "prefect",
                    os_user: str | None = None, base: str | Path | None = None,
                    settings: dict[str, str] | None = None) -> Iterator[Postgres]:
    """Start a fresh PostgreSQL cluster on a free loopback port; yields it, then removes it.

    ``os_user`` is the account PostgreSQL runs as when this process is root (default
    ``postgres``); ``base`` the parent folder of the cluster (default the system temp folder;
    it must be reachable by that account). ``settings`` are extra server settings (``-c k=v``).
    """
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL not found: apt-get install postgresql")
    runner = (os_user or "postgres") if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="glacierscale-pg-", dir=base))
    # The cluster account must reach its folder: the temp folder itself is private to us.
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    log = root / "postgres.log"
    log.touch()
    if runner is not None:
        acct = _account(runner)
        if acct is None:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"no account {runner!r} to run PostgreSQL as (initdb refuses "
                               f"root): useradd {runner}")
        for p in (data, log):
            os.chown(p, acct.pw_uid, acct.pw_gid)
    port = free_port()
    opts = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(data),
            "max_connections": "200", **(settings or {})}
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user,
              "-E", "UTF8", "--locale=C", "--no-sync"], runner)
        server_opts = f"-p {port} " + " ".join(f"-c {k}={v}" for k, v in opts.items())
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", server_opts, "-l", str(log),
              "-w", "-t", "60", "start"], runner)
        started = True
        pg = Postgres(port, database, user, root, bin_dir, runner)
        pg.psql(f"create database {database}", database="postgres")
        yield pg
    finally:
        if started:
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                     runner)
            except (RuntimeError, subprocess.TimeoutExpired):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                     runner)
        shutil.rmtree(root, ignore_errors=True)

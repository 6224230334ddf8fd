"""A real HTTP file server on 127.0.0.1 with Range support, injected faults and request counts.

It stands in for object storage when measuring how many requests and bytes a tile read costs, and
when proving that reads survive the faults object storage shows under load: every request is
recorded with its path (GETs with their byte ranges), and a :class:`~glacierscale.testing.
injection.FaultPlan` makes a share of them fail with 503 or 429, arrive late, or lose their
connection (see :mod:`glacierscale.testing.injection`). Single ranges answer 206 like S3; several
ranges in one request answer ``multipart/byteranges`` (what GDAL's ``SINGLE_GET`` mode asks for).
Any URL prefix before ``/files/`` is ignored, so one file can be served under several URLs whose
GDAL caches are independent (cold reads for each method being compared).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from glacierscale.testing.injection import (
    NO_FAULTS,
    FaultLog,
    FaultPlan,
    Request,
    drop_connection,
    send_error,
    send_truncated,
)


@dataclass
class Get:
    path: str
    ranges: list[tuple[int, int]]  # inclusive byte ranges; [] for a whole-file GET
    nbytes: int


@dataclass
class Log(FaultLog):
    """Every request (see :class:`FaultLog`), plus GETs with their ranges and bytes sent."""

    gets: list[Get] = field(default_factory=list)
    heads: int = 0

    def clear(self) -> None:
        super().clear()
        with self.lock:
            self.gets.clear()
            self.heads = 0

    def by_path(self) -> dict[str, list[Get]]:
        out: dict[str, list[Get]] = defaultdict(list)
        with self.lock:
            for g in self.gets:
                out[g.path].append(g)
        return dict(out)


def _parse_ranges(header: str, size: int) -> list[tuple[int, int]]:
    spec = header.split("=", 1)[1]
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d*)-(\d*)\s*", part)
        if not m:
            continue
        a, b = m.groups()
        if a == "":
            start, end = max(0, size - int(b)), size - 1
        else:
            start, end = int(a), min(int(b) if b else size - 1, size - 1)
        if start <= end:
            out.append((start, end))
    return out


def _body(p: Path, ranges: list[tuple[int, int]]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body answering a GET of ``p`` for ``ranges``."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        if not ranges:
            return 200, [("Content-Type", "image/tiff"), ("Accept-Ranges", "bytes")], f.read()
        if len(ranges) == 1:
            a, b = ranges[0]
            f.seek(a)
            return 206, [("Content-Type", "image/tiff"),
                         ("Content-Range", f"bytes {a}-{b}/{size}")], f.read(b - a + 1)
        boundary = "glacierscale-boundary"
        parts = []
        for a, b in ranges:
            f.seek(a)
            chunk = f.read(b - a + 1)
            parts.append(f"--{boundary}\r\nContent-Type: image/tiff\r\n"
                         f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n".encode() + chunk + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return 206, [("Content-Type", f"multipart/byteranges; boundary={boundary}")], body


def _handler(root: Path, latency: float, log: Log) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _file(self) -> tuple[Path | None, str]:
            rel = self.path.split("?", 1)[0]
            rel = rel.split("/files/", 1)[1] if "/files/" in rel else rel.lstrip("/")
            p = (root / rel).resolve()
            return (p if p.is_file() and root in p.parents else None), self.path.split("?")[0]

        def _fault(self, url_path: str) -> tuple[Request, bool]:
            """Record the request and apply an injected fault; True when it was answered."""
            fault = log.decide(self.command, url_path)
            req = log.record(Request(self.command, url_path,
                                     fault=fault.kind if fault else None))
            if fault is None or fault.kind == "truncate":
                return req, False
            if fault.kind == "slow":
                time.sleep(log.plan.slow_s)
                return req, False
            if fault.kind == "drop":
                drop_connection(self)
            else:
                req.status = send_error(self, fault, log.plan, "text")
            return req, True

        def _answered(self, url_path: str, p: Path | None) -> tuple[Request, bool]:
            """Record the request; answer it here if it gets a fault or names no file."""
            req, answered = self._fault(url_path)
            if not answered and p is None:
                req.status = 404
                self.send_error(404)
                answered = True
            return req, answered

        def do_HEAD(self) -> None:
            time.sleep(latency)
            p, url_path = self._file()
            with log.lock:
                log.heads += 1
            req, answered = self._answered(url_path, p)
            if answered or p is None:
                return
            req.status = 200
            self.send_response(200)
            self.send_header("Content-Length", str(p.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            time.sleep(latency)
            p, url_path = self._file()
            rng = self.headers.get("Range")
            size = p.stat().st_size if p is not None else 0
            ranges = _parse_ranges(rng, size) if rng and p is not None else []
            # Recorded on receipt: a client may abort a transfer (GDAL does after reading a
            # whole-file GET's headers), and an aborted or faulted request still costs one.
            entry = Get(url_path, ranges, 0)
            with log.lock:
                log.gets.append(entry)
            req, answered = self._answered(url_path, p)
            if answered or p is None:
                return
            if rng and not ranges:
                # Every range starts past the end (a file shorter than its reader expects):
                # 416 with the real size, as S3 and any HTTP server answer, not the whole file.
                req.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, headers, body = _body(p, ranges)
            req.status = status
            if req.fault == "truncate":
                send_truncated(self, status, headers, body)
                entry.nbytes = len(body) // 2
                return
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            nbytes = 0
            try:
                # Count only what reached the client when it hangs up early.
                for i in range(0, len(body), 65536):
                    self.wfile.write(body[i:i + 65536])
                    nbytes += len(body[i:i + 65536])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            entry.nbytes = nbytes

    return Handler


@contextmanager
def range_server(root: str | os.PathLike[str], latency: float = 0.0,
                 faults: FaultPlan = NO_FAULTS) -> Iterator[tuple[str, Log]]:
    """Serve ``root`` on a free loopback port; yields (base URL, request log).

    ``faults`` is the plan the server starts with; assign ``log.plan`` to change it mid-test.
    """
    log = Log(plan=faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Path(root).resolve(), latency, log))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

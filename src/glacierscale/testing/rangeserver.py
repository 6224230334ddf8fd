"""A real HTTP file server on 127.0.0.1 with Range support, injected latency and request counts.

It stands in for object storage when measuring how many requests and bytes a tile read costs:
every GET is recorded with its path and byte ranges. Single ranges answer 206 like S3; several
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


@dataclass
class Get:
    path: str
    ranges: list[tuple[int, int]]  # inclusive byte ranges; [] for a whole-file GET
    nbytes: int


@dataclass
class Log:
    gets: list[Get] = field(default_factory=list)
    heads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
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

        def do_HEAD(self) -> None:
            time.sleep(latency)
            p, _ = self._file()
            with log.lock:
                log.heads += 1
            if p is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(p.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            time.sleep(latency)
            p, url_path = self._file()
            if p is None:
                self.send_error(404)
                return
            size = p.stat().st_size
            rng = self.headers.get("Range")
            ranges = _parse_ranges(rng, size) if rng else []
            # Recorded on receipt: a client may abort a transfer (GDAL does after reading a
            # whole-file GET's headers), and an aborted request still costs a request.
            entry = Get(url_path, ranges, 0)
            with log.lock:
                log.gets.append(entry)
            with open(p, "rb") as f:
                if not ranges:
                    body = f.read()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/tiff")
                    self.send_header("Accept-Ranges", "bytes")
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
                elif len(ranges) == 1:
                    a, b = ranges[0]
                    f.seek(a)
                    body = f.read(b - a + 1)
                    self.send_response(206)
                    self.send_header("Content-Type", "image/tiff")
                    self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    nbytes = len(body)
                else:
                    boundary = "glacierscale-boundary"
                    parts = []
                    nbytes = 0
                    for a, b in ranges:
                        f.seek(a)
                        chunk = f.read(b - a + 1)
                        nbytes += len(chunk)
                        parts.append(
                            f"--{boundary}\r\nContent-Type: image/tiff\r\n"
                            f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n".encode() + chunk
                            + b"\r\n")
                    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
                    self.send_response(206)
                    self.send_header("Content-Type",
                                     f"multipart/byteranges; boundary={boundary}")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
            entry.nbytes = nbytes

    return Handler


@contextmanager
def range_server(root: str | os.PathLike[str], latency: float = 0.0) -> Iterator[tuple[str, Log]]:
    """Serve ``root`` on a free loopback port; yields (base URL, request log)."""
    log = Log()
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

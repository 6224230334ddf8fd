"""A fault-injecting reverse proxy on 127.0.0.1, in front of a real local service.

Put it in front of a STAC API (``rustac serve``) or an S3 server (``moto_server``): every request
is forwarded unchanged, except that a :class:`~glacierscale.testing.injection.FaultPlan` makes a
share of them fail (503/429 in the upstream's own error dialect, dropped or truncated connections,
slow answers), and every request is counted per method and path. With ``late`` faults a write
reaches the upstream but its answer is lost, the hardest case for a client that retries.

Absolute URLs of the upstream in answers (a STAC API's ``next`` links) are rewritten to the
proxy's, so a client that follows them stays behind the proxy.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from glacierscale.testing.injection import (
    NO_FAULTS,
    FaultLog,
    FaultPlan,
    Request,
    discard_body,
    drop_connection,
    send_error,
    send_truncated,
)

# Headers that belong to one connection, not to the message (RFC 9110, 7.6.1).
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "expect"}
_TEXT_TYPES = ("json", "xml", "text", "html")


def _handler(upstream: str, log: FaultLog, kind: str, public: list[str]
             ) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(upstream)
    host, port = up.hostname or "127.0.0.1", up.port or 80
    local = threading.local()

    def connection() -> http.client.HTTPConnection:
        # One keep-alive connection to the upstream per proxy thread.
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, port, timeout=120)
        return conn

    def forward(method: str, path: str, headers: list[tuple[str, str]], body: bytes
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):
            conn = connection()
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                if body or method in ("PUT", "POST", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, list(resp.getheaders()), data
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the upstream closed meanwhile: reconnect once.
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _proxy(self) -> None:
            body = discard_body(self)
            path = self.path.split("?", 1)[0]
            fault = log.decide(self.command, path)
            req = log.record(Request(self.command, path, fault=fault.kind if fault else None,
                                     copy_source=self.headers.get("x-amz-copy-source")))
            plan = log.plan
            if fault is not None and not fault.late:
                if fault.kind == "drop":
                    drop_connection(self)
                    return
                if fault.kind in ("error", "throttle"):
                    req.status = send_error(self, fault, plan, kind)
                    return
                if fault.kind == "slow":
                    time.sleep(plan.slow_s)
            headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP]
            status, out_headers, data = forward(self.command, self.path, headers, body)
            if fault is not None and fault.late:
                # The upstream did the work; the client never learns it.
                if fault.kind == "drop":
                    drop_connection(self)
                else:
                    req.status = send_error(self, fault, plan, kind)
                return
            req.status = status
            out = [(k, v) for k, v in out_headers if k.lower() not in _HOP]
            ctype = next((v for k, v in out if k.lower() == "content-type"), "")
            if data and any(t in ctype for t in _TEXT_TYPES) and upstream.encode() in data:
                data = data.replace(upstream.encode(), public[0].encode())
            if fault is not None and fault.kind == "truncate":
                send_truncated(self, status, out, data)
                return
            self.send_response(status)
            for k, v in out:
                if k.lower() != "content-length" or self.command == "HEAD":
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD" and data:
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _proxy

    return Handler


@contextmanager
def fault_proxy(upstream: str, faults: FaultPlan = NO_FAULTS, *, kind: str = "json"
                ) -> Iterator[tuple[str, FaultLog]]:
    """Proxy ``upstream`` (``http://127.0.0.1:PORT``) on a free loopback port.

    Yields (proxy URL, log). ``kind`` is the dialect of injected error bodies: ``"json"`` for a
    STAC API, ``"s3"`` for an S3 server (an XML ``SlowDown`` error, which S3 clients recognise
    as throttling), ``"text"`` otherwise. Assign ``log.plan`` to change the faults mid-test.
    """
    upstream = upstream.rstrip("/")
    log = FaultLog(plan=faults)
    public: list[str] = [""]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, log, kind, public))
    server.daemon_threads = True
    public[0] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield public[0], log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""What a fault-injecting server decides per request, and what it counts.

A :class:`FaultPlan` says which share of the requests that match it (by method and path) get which
fault; a :class:`FaultLog` holds the plan in force, draws each request's fate from a seeded random
stream, and counts requests per method and path and faults per kind. The range server
(:mod:`glacierscale.testing.rangeserver`) and the reverse proxy
(:mod:`glacierscale.testing.faultproxy`) share both, so COG reads, STAC searches and S3 writes
fail in the same ways and are counted the same way.

The faults are what object stores and public APIs do under load:

- ``error``: HTTP 503 (a busy server; S3's ``ServiceUnavailable``);
- ``throttle``: HTTP 429 with a ``Retry-After`` header (S3: 503 ``SlowDown``);
- ``slow``: the answer is right but comes ``slow_s`` seconds late;
- ``drop``: the connection is closed before any answer (a reset load balancer);
- ``truncate``: the headers promise the whole body, half of it arrives, then the connection closes.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

#: The fault kinds, in the order a request's draw is matched against the plan's shares.
KINDS = ("error", "throttle", "drop", "truncate", "slow")


@dataclass(frozen=True)
class FaultPlan:
    """Shares (0..1) of matching requests that get each fault; the rest are answered normally.

    ``methods`` and ``path`` (a regular expression searched in the URL path) select the requests
    faults apply to, e.g. ``methods=("PUT", "POST")`` for object-store writes. ``fail_first``
    deterministically gives the first N matching requests the ``first`` fault (then the shares
    apply), which is how a test exhausts a client's own retries. ``late`` is the share of ``error``
    and ``drop`` faults a proxy applies *after* the upstream handled the request: the write
    happened but the client is told it failed, as when a response is lost on the way back.
    """

    error: float = 0.0
    throttle: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    slow: float = 0.0
    slow_s: float = 0.5
    retry_after_s: int = 1
    methods: tuple[str, ...] | None = None
    path: str | None = None
    fail_first: int = 0
    first: str = "error"
    late: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        shares = [self.error, self.throttle, self.drop, self.truncate, self.slow]
        if any(not 0.0 <= s <= 1.0 for s in [*shares, self.late]) or sum(shares) > 1.0 + 1e-9:
            raise ValueError(f"fault shares must be in 0..1 and sum to at most 1: {self}")
        if self.first not in KINDS:
            raise ValueError(f"first={self.first!r}: choose one of {KINDS}")

    def matches(self, method: str, path: str) -> bool:
        """Whether faults of this plan apply to a request."""
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.path is None or re.search(self.path, path) is not None


#: No faults at all: the server only counts.
NO_FAULTS = FaultPlan()


@dataclass(frozen=True)
class Fault:
    """One request's fate: its kind, and whether it strikes after the upstream answered."""

    kind: str
    late: bool = False


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    status: int = 0  # what the client was sent; 0 when the connection was dropped
    fault: str | None = None
    copy_source: str | None = None  # S3 CopyObject (x-amz-copy-source): how atomic puts publish


@dataclass
class FaultLog:
    """The plan in force, and counts of requests and injected faults (thread-safe).

    Assign ``plan`` at any time to change what the next requests get; ``clear`` forgets the counts
    and restarts the plan's random stream and its ``fail_first`` budget.
    """

    plan: FaultPlan = NO_FAULTS
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rng: random.Random | None = field(default=None, repr=False)
    _rng_plan: FaultPlan | None = field(default=None, repr=False)
    _matched: int = 0

    def decide(self, method: str, path: str) -> Fault | None:
        """Draw the fate of a request (and count it as matched when the plan applies)."""
        with self.lock:
            plan = self.plan
            if self._rng is None or self._rng_plan is not plan:
                # A new plan restarts its own seeded stream: the same requests in the same
                # order meet the same faults, run after run.
                self._rng, self._rng_plan, self._matched = random.Random(plan.seed), plan, 0
            if not plan.matches(method, path):
                return None
            self._matched += 1
            late = self._rng.random() < plan.late
            if self._matched <= plan.fail_first:
                return Fault(plan.first, late and plan.first in ("error", "drop"))
            draw = self._rng.random()
            for kind in KINDS:
                share = float(getattr(plan, kind))
                if draw < share:
                    return Fault(kind, late and kind in ("error", "drop"))
                draw -= share
            return None

    def record(self, req: Request) -> Request:
        """Add one request to the log (returns it, so its status can be filled in later)."""
        with self.lock:
            self.requests.append(req)
        return req

    def clear(self) -> None:
        """Forget every request and restart the plan's random stream and ``fail_first``."""
        with self.lock:
            self.requests.clear()
            self._rng = None

    def snapshot(self) -> list[Request]:
        """A copy of the requests so far."""
        with self.lock:
            return list(self.requests)

    def faults(self) -> Counter[str]:
        """Injected faults per kind."""
        return Counter(r.fault for r in self.snapshot() if r.fault)

    def counts(self) -> Counter[tuple[str, str]]:
        """Requests per (method, path), faulted ones included: each cost a round trip."""
        return Counter((r.method, r.path) for r in self.snapshot())

    def count(self, method: str | None = None, prefix: str = "", *,
              faulted: bool | None = None, copies: bool | None = None) -> int:
        """Requests with this method whose path starts with ``prefix``.

        ``faulted`` keeps only requests that did (True) or did not (False) get a fault;
        ``copies`` only S3 server-side copies (True) or only other requests (False).
        """
        n = 0
        for r in self.snapshot():
            if method is not None and r.method != method.upper():
                continue
            if not r.path.startswith(prefix):
                continue
            if faulted is not None and (r.fault is not None) != faulted:
                continue
            if copies is not None and (r.copy_source is not None) != copies:
                continue
            n += 1
        return n

    def summary(self) -> dict[str, object]:
        """Requests and faults in a JSON-friendly form, for reports and benchmark lines."""
        reqs = self.snapshot()
        methods = Counter(r.method for r in reqs)
        return {"requests": len(reqs), "by_method": dict(sorted(methods.items())),
                "faults": dict(sorted(Counter(r.fault for r in reqs if r.fault).items()))}


def final_puts(log: FaultLog, prefix: str, tmp_marker: str = ".glacierscale-tmp/"
               ) -> Counter[str]:
    """Successful writes to final keys under ``prefix``, per path.

    A final key is written by a plain PUT or, for atomic puts, by a server-side copy from a
    temporary key; writes to temporary keys and requests the client saw fail are not counted
    (slow ones are: they succeeded). A tile whose outputs count more than one final PUT each was
    written more than once.
    """
    out: Counter[str] = Counter()
    for r in log.snapshot():
        if r.method == "PUT" and r.path.startswith(prefix) and tmp_marker not in r.path \
                and r.fault in (None, "slow") and 200 <= r.status < 300:
            out[r.path] += 1
    return out


def error_answer(kind: str, flavour: str) -> tuple[int, str, bytes]:
    """Status, content type and body of an injected error, in the dialect of the upstream.

    S3 signals both faults with 503, as AWS does: ``ServiceUnavailable`` for an ``error`` and
    ``SlowDown`` (its throttling answer) for a ``throttle``; other servers answer 503 and 429.
    """
    if flavour == "s3":
        code, text = (("SlowDown", "Please reduce your request rate.") if kind == "throttle"
                      else ("ServiceUnavailable", "Service is unable to handle request."))
        return 503, "application/xml", (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{text} (injected)</Message></Error>").encode()
    status = 429 if kind == "throttle" else 503
    if flavour == "json":
        return status, "application/json", (
            f'{{"code": "{status}", "description": "injected {kind} fault"}}').encode()
    return status, "text/plain", f"injected {kind} fault\n".encode()


def send_error(handler: BaseHTTPRequestHandler, fault: Fault, plan: FaultPlan,
               flavour: str) -> int:
    """Answer an ``error`` or ``throttle`` fault; returns the status sent."""
    status, ctype, body = error_answer(fault.kind, flavour)
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Retry-After", str(plan.retry_after_s))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
    return status


def drop_connection(handler: BaseHTTPRequestHandler) -> None:
    """Close the client's connection at once, with a TCP reset rather than an orderly close."""
    handler.close_connection = True
    sock = handler.connection
    with contextlib.suppress(OSError):
        handler.wfile.flush()
    with contextlib.suppress(OSError):
        # SO_LINGER with a zero timeout turns close() into a reset: "connection reset by peer".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def send_truncated(handler: BaseHTTPRequestHandler, status: int,
                   headers: Iterable[tuple[str, str]], body: bytes) -> None:
    """Send ``status`` and headers promising ``body`` in full, then half of it, then hang up."""
    handler.send_response(status)
    for k, v in headers:
        if k.lower() != "content-length":
            handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    with contextlib.suppress(OSError):
        if handler.command != "HEAD":
            handler.wfile.write(body[: len(body) // 2])
    drop_connection(handler)


def discard_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read the request body (Content-Length or chunked) so the connection stays usable."""
    te = handler.headers.get("Transfer-Encoding", "")
    if "chunked" in te.lower():
        chunks = []
        while True:
            line = handler.rfile.readline()
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailers until the empty line
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # CRLF after each chunk
        return b"".join(chunks)
    n = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(n) if n else b""

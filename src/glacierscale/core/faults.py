"""The one error policy: which faults are transient, which permanent, and how to retry.

Every layer that talks to a network service (STAC search, raster reads, object-store writes) retries
through :func:`retry_call`, and everything above it decides through :func:`classify`:

**Transient** (retried with exponential backoff and full jitter, honouring ``Retry-After``):

- HTTP 408, 425, 429 and 5xx (except 501 and 505), wherever the status is found: an attribute of
  the exception (``status_code``, ``status``, ``response.status_code``, botocore's
  ``ResponseMetadata``) or GDAL's message (``HTTP response code: 503``);
- S3 error codes meaning "busy" (:data:`TRANSIENT_S3_CODES`: ``SlowDown``, ``InternalError``, ...);
- timeouts and broken connections: :class:`TimeoutError`, :class:`ConnectionError`, the network
  errors of requests/urllib3/aiohttp/botocore (by class name: :data:`TRANSIENT_NAMES`), socket
  errnos such as ``ECONNRESET`` (:data:`TRANSIENT_ERRNOS`), and GDAL's curl failures (``CURL
  error``, ``Empty reply from server``, a block read that got fewer bytes than expected).

**Permanent** (the tile fails at once, no retry spent):

- a missing object (404, ``NoSuchKey``, :class:`FileNotFoundError`), access denied (401/403,
  :class:`PermissionError`), any other 4xx;
- a corrupt or foreign file: decoding errors, a broken TIFF directory, a file whose first bytes
  are not a raster format (:data:`PERMANENT_PATTERNS`);
- anything unknown, bugs included: retrying a ``KeyError`` only wastes time.

**Ambiguous**: GDAL says "not recognized as being in a supported file format" or "does not exist
in the file system" both for a corrupt or missing remote file and for a header request that
failed (and whose failure GDAL then caches). :func:`classify` reports such errors on remote paths
as :attr:`Fault.AMBIGUOUS`; the raster reader settles them by looking at the object's first bytes
with a plain request (:func:`retry_call`'s ``resolve``), so a corrupt COG still fails at once.

Exceptions are examined from the outermost inwards along ``__cause__``/``__context__``: wrappers
that say nothing (``RuntimeError("Error reading ...")``, an ``OSError(EIO)``) defer to their cause.
Library exceptions are recognised by class name, so this module imports no I/O library and every
layer may use it. The retry limits are :class:`FaultSettings`, with defaults for a global run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

T = TypeVar("T")


class Fault(StrEnum):
    """What a failure says about the next attempt."""

    TRANSIENT = "transient"  # the same call may well succeed in a moment
    PERMANENT = "permanent"  # it will fail again: fail the tile now
    AMBIGUOUS = "ambiguous"  # GDAL cannot tell a failed request from a bad file; ask `resolve`


#: HTTP statuses worth another attempt: timeouts, "too early", throttling, server trouble.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523,
                              524, 598, 599})
#: S3 (and S3-compatible) error codes that mean "busy, try again".
TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "TooManyRequests", "RequestLimitExceeded", "OperationAborted",
    "RequestThrottled", "TooManyRequestsException", "503", "500",
})
#: Exception class names (anywhere in the MRO) of network failures in requests, urllib3,
#: aiohttp, botocore, fsspec and Dask: matched by name so no I/O library is imported here.
TRANSIENT_NAMES = frozenset({
    "Timeout", "ReadTimeout", "ConnectTimeout", "ConnectionError", "ChunkedEncodingError",
    "ProtocolError", "ReadTimeoutError", "ConnectTimeoutError", "NewConnectionError",
    "IncompleteRead", "RemoteDisconnected", "ServerDisconnectedError", "ClientConnectionError",
    "ClientConnectorError", "ClientOSError", "ClientPayloadError", "ServerTimeoutError",
    "EndpointConnectionError", "ConnectionClosedError", "ResponseStreamingError",
    "HTTPClientError", "FSTimeoutError", "ContentLengthError", "TransferEncodingError",
    # Dask: a lost scheduler or worker connection; a worker that died under a task (OOM,
    # pre-emption) is worth one more try on fresh workers.
    "CommClosedError", "StreamClosedError", "KilledWorker",
})
#: Exception class names that are permanent whatever their message says.
PERMANENT_NAMES = frozenset({
    "NoCredentialsError", "PartialCredentialsError", "ParamValidationError",
    "InvalidRegionError", "DoesNotConformTo", "ParametersError", "CogValidationError",
    "UnknownSignatureVersionError",
})
#: Socket and OS errnos of a flaky network or a busy server.
TRANSIENT_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET, errno.EAGAIN,
    errno.EBUSY, getattr(errno, "EREMOTEIO", errno.EIO + 1000),
})
#: Errnos that will not change on a retry: missing, denied, full, invalid.
PERMANENT_ERRNOS = frozenset({
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EISDIR,
    errno.ENOTDIR, errno.EEXIST, errno.EINVAL, errno.ENAMETOOLONG, errno.EMSGSIZE, errno.ENOSYS,
    getattr(errno, "EDQUOT", errno.ENOSPC), getattr(errno, "EREMCHG", errno.ENOENT),
})
#: GDAL/curl messages of a failed transfer (curl error texts, a short block read).
TRANSIENT_PATTERNS = re.compile(
    r"CURL error|timed out|Connection reset|Connection was reset|Empty reply from server|"
    r"Recv failure|Send failure|transfer closed with|Couldn't connect|Could not resolve host|"
    r"SSL connection timeout|Connection refused|Read error at .*got \d+ bytes, expected \d+",
    re.IGNORECASE)
#: GDAL messages of a file that is corrupt or not a raster at all.
PERMANENT_PATTERNS = re.compile(
    r"Decoding error|Decode(?:r)? error|ZIPDecode|LZWDecode|ZSTD_decompress|JPEGLib|LERC|"
    r"PackBits|TIFFReadDirectory|TIFFFetchDirectory|Not a TIFF|Cannot read TIFF header|"
    r"missing codec|Incorrect count for|is corrupt", re.IGNORECASE)
#: GDAL messages that a corrupt or missing remote file and a failed request share.
AMBIGUOUS_PATTERNS = re.compile(
    r"not recognized as being in a supported file format|"
    r"does not exist in the file system|No such file or directory", re.IGNORECASE)
_REMOTE = re.compile(r"/vsi(?:curl|s3|gs|az|adls|oss|swift|webhdfs)|[a-z][a-z0-9+.-]*://",
                     re.IGNORECASE)
_STATUS_IN_TEXT = re.compile(r"HTTP (?:response|error|status) code:? *(\d{3})", re.IGNORECASE)
_MAX_CHAIN = 12


def _text(exc: BaseException) -> str:
    """``str(exc)``, or "" when the exception cannot say (a broken ``__str__`` must not turn a
    classification into a second error)."""
    try:
        return str(exc)
    except Exception:
        return ""


def _status_of(exc: BaseException) -> int | None:
    """An HTTP status carried by ``exc`` itself (not its causes), if any."""
    for attr in ("status_code", "status", "http_status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v <= 599:
            return v
    code = getattr(exc, "code", None)  # urllib.error.HTTPError
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    resp = getattr(exc, "response", None)
    v = getattr(resp, "status_code", None) if resp is not None else None
    if isinstance(v, int):
        return v
    if isinstance(resp, dict):  # botocore ClientError
        v = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(v, int):
            return v
    m = _STATUS_IN_TEXT.search(_text(exc))
    return int(m.group(1)) if m else None


def _s3_code(exc: BaseException) -> str | None:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = resp.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _one(exc: BaseException) -> Fault | None:
    """The verdict of one exception of a chain, or None when it says nothing decisive."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & PERMANENT_NAMES:
        return Fault.PERMANENT
    code = _s3_code(exc)
    if code is not None and code in TRANSIENT_S3_CODES:
        return Fault.TRANSIENT
    status = _status_of(exc)
    if status is not None and status >= 400:
        return Fault.TRANSIENT if status in TRANSIENT_STATUS else Fault.PERMANENT
    if isinstance(exc, TimeoutError | ConnectionError) or names & TRANSIENT_NAMES:
        return Fault.TRANSIENT
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError |
                  NotADirectoryError | FileExistsError):
        return Fault.PERMANENT
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in TRANSIENT_ERRNOS:
            return Fault.TRANSIENT
        if exc.errno in PERMANENT_ERRNOS:
            return Fault.PERMANENT
    text = _text(exc)
    if PERMANENT_PATTERNS.search(text):
        return Fault.PERMANENT
    if TRANSIENT_PATTERNS.search(text):
        return Fault.TRANSIENT
    if AMBIGUOUS_PATTERNS.search(text):
        return Fault.AMBIGUOUS if _REMOTE.search(text) else Fault.PERMANENT
    return None


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes, outermost first (explicit ``__cause__`` before ``__context__``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ if cur.__cause__ is not None else (
            None if cur.__suppress_context__ else cur.__context__)


def _decide(exc: BaseException) -> tuple[Fault, BaseException]:
    """The verdict and the exception of the chain that decided it (the innermost if none did)."""
    last = exc
    for e in chain(exc):
        verdict = _one(e)
        if verdict is not None:
            return verdict, e
        last = e
    return Fault.PERMANENT, last


def classify(exc: BaseException) -> Fault:
    """Transient, permanent or ambiguous: the first decisive exception of the chain decides.

    An exception a retry loop already gave up on keeps the verdict it was given then.
    """
    info = fault_info(exc)
    if info is not None:
        return info.fault
    return _decide(exc)[0]


def cause_text(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` on one line, plus the inner exception that decided its
    verdict when that says more (GDAL's "Read failed" hides "ZIPDecode: Decoding error")."""
    def line(e: BaseException) -> str:
        return " ".join(f"{type(e).__name__}: {_text(e)}".split())

    _verdict, decisive = _decide(exc)
    text = line(exc)
    if decisive is not exc and _text(decisive) not in _text(exc):
        text += f" <- {line(decisive)}"
    return text


def is_transient(exc: BaseException) -> bool:
    """True when another attempt of the same operation may succeed."""
    return classify(exc) is Fault.TRANSIENT


#: Words of a connection nobody accepted: nothing listens at the port, or the host is unknown.
_UNREACHABLE = re.compile(r"Connection refused|NewConnectionError|NameResolutionError|"
                          r"Failed to resolve|Name or service not known|nodename nor servname")


def is_unreachable(exc: BaseException) -> bool:
    """True when no server accepted the connection at all (refused, unknown host). Transient for
    a run that reached the server before; at a first contact most often a mistyped address."""
    return any(isinstance(e, ConnectionRefusedError)
               or _UNREACHABLE.search(f"{type(e).__name__}: {_text(e)}") is not None
               for e in chain(exc))


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a server asked the client to wait (``Retry-After``), if any exception says so."""
    for e in chain(exc):
        v = getattr(e, "retry_after_s", None)
        if isinstance(v, int | float):
            return float(v)
        resp = getattr(e, "response", None)
        headers: Any = getattr(resp, "headers", None)
        if headers is None and isinstance(resp, dict):
            headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders")
        if headers is not None:
            raw = headers.get("Retry-After") or headers.get("retry-after")
            try:
                return float(raw) if raw is not None else None
            except ValueError:
                return None  # an HTTP date: the backoff decides
    return None


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RetrySettings(BaseModel):
    """How often and how patiently one kind of call is retried.

    Delay before retry n (1-based) is drawn uniformly from 0..min(max_delay_s,
    base_delay_s * 2**(n-1)) ("full jitter": thousands of workers that failed together do not
    come back together), and is at least a server's ``Retry-After`` (capped at ``max_delay_s``).
    """

    model_config = _FROZEN
    attempts: int = Field(5, ge=1, description="tries in all, the first included")
    base_delay_s: float = Field(1.0, ge=0)
    max_delay_s: float = Field(30.0, ge=0)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The jittered waits before attempts 2..``attempts``."""
        r = rng or random
        for n in range(self.attempts - 1):
            yield r.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** n))


class FaultSettings(BaseModel):
    """Retry limits, timeouts and the search rate: one object, sensible defaults for a global run.

    A process takes them from :func:`configure`, else from the ``GLACIERSCALE_FAULTS`` environment
    variable (JSON, e.g. ``{"read": {"attempts": 6}, "search_rate_per_s": 2}``, inherited by Dask
    worker processes), else these defaults.
    """

    model_config = _FROZEN
    search: RetrySettings = RetrySettings(attempts=6, base_delay_s=1.0, max_delay_s=30.0)
    read: RetrySettings = RetrySettings(attempts=4, base_delay_s=2.0, max_delay_s=30.0)
    write: RetrySettings = RetrySettings(attempts=5, base_delay_s=1.0, max_delay_s=30.0)
    # A whole tile again, when a transient fault outlived the retries where it happened (an
    # outage of minutes): few tries, long waits.
    tile: RetrySettings = RetrySettings(attempts=3, base_delay_s=15.0, max_delay_s=120.0)
    search_connect_timeout_s: float = Field(10.0, gt=0)
    search_timeout_s: float = Field(60.0, gt=0, description="read timeout of one STAC request")
    search_rate_per_s: float = Field(
        5.0, gt=0, description="STAC requests per second per process (70,000 tiles x 2 "
        "searches on 20 processes: ~25 min, ~100 requests/s at the API)")
    search_burst: int = Field(10, ge=1)
    gdal_http_retries: int = Field(5, ge=0, description="GDAL_HTTP_MAX_RETRY: per request")
    gdal_http_retry_delay_s: float = Field(1.0, ge=0, description="GDAL_HTTP_RETRY_DELAY")
    gdal_http_timeout_s: float = Field(60.0, gt=0, description="GDAL_HTTP_TIMEOUT")


ENV_VAR = "GLACIERSCALE_FAULTS"
_configured: FaultSettings | None = None
_from_env: tuple[str, FaultSettings] | None = None
_state_lock = threading.Lock()


def settings() -> FaultSettings:
    """The settings in force in this process."""
    global _from_env
    if _configured is not None:
        return _configured
    raw = os.environ.get(ENV_VAR, "")
    with _state_lock:
        if _from_env is None or _from_env[0] != raw:
            try:
                parsed = FaultSettings.model_validate(json.loads(raw)) if raw.strip() \
                    else FaultSettings()
            except ValueError as exc:
                raise ValueError(f"{ENV_VAR} is not valid fault settings JSON: {exc}") from exc
            _from_env = (raw, parsed)
        return _from_env[1]


def configure(new: FaultSettings | None) -> None:
    """Use ``new`` in this process (``None``: back to the environment and defaults)."""
    global _configured
    _configured = new


@contextmanager
def configured(new: FaultSettings) -> Iterator[FaultSettings]:
    """Use ``new`` within a block (tests, benchmarks), then restore what was in force."""
    global _configured
    previous = _configured
    _configured = new
    try:
        yield new
    finally:
        _configured = previous


@dataclass(frozen=True)
class FaultInfo:
    """What a retry loop concluded about a failure it let through (kept on the exception)."""

    site: str  # "search", "read", "write", "tile"
    what: str  # the redacted URL or key it happened to
    fault: Fault  # TRANSIENT: retries exhausted; PERMANENT: failed at once
    attempts: int
    cause: str  # cause_text() of the last failure

    def line(self) -> str:
        """``site what: cause (verdict)`` on one line."""
        verdict = (f"transient, gave up after {self.attempts} attempts"
                   if self.fault is Fault.TRANSIENT else "permanent")
        return f"{self.site} {self.what}: {self.cause} ({verdict})"


class FaultError(Exception):
    """A failure a retry loop let through, named after the thing it happened to.

    Raised (from the original exception) by sites whose own errors do not say which asset or
    request failed (a GDAL "Read failed", a STAC ``APIError``); its message is one line: site,
    redacted URL, cause, verdict.
    """

    def __init__(self, info: FaultInfo) -> None:
        super().__init__(info.line())
        setattr(self, _INFO_ATTR, info)

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses process boundaries (Dask) with its verdict.
        return (FaultError, (fault_info(self),))


_INFO_ATTR = "_glacierscale_fault"


def fault_info(exc: BaseException) -> FaultInfo | None:
    """The conclusion :func:`retry_call` attached to ``exc``, if it passed through one."""
    info = getattr(exc, _INFO_ATTR, None)
    return info if isinstance(info, FaultInfo) else None


def describe(exc: BaseException) -> str:
    """One line for a tile's manifest record: the thing that failed, the cause, the verdict.

    ``"read http://h/B04.tif: RasterioIOError: ... (permanent)"`` or ``"... (transient, gave up
    after 4 attempts)"``; an exception no retry loop saw gets its cause and verdict. Callers
    redact it like any other output text.
    """
    info = fault_info(exc)
    if info is None:
        return f"{cause_text(exc)} ({classify(exc).value})"
    return info.line()


_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()


def _count(key: str) -> None:
    with _stats_lock:
        _stats[key] += 1


def retry_stats() -> dict[str, int]:
    """Counts in this process: ``<site>.retries``, ``<site>.gave_up``, ``<site>.permanent``."""
    with _stats_lock:
        return dict(_stats)


def reset_retry_stats() -> None:
    """Forget the counts of :func:`retry_stats`."""
    with _stats_lock:
        _stats.clear()


def retry_call(fn: Callable[[], T], *, site: str, what: str,
               retry: RetrySettings | None = None,
               resolve: Callable[[BaseException], Fault] | None = None,
               before_retry: Callable[[BaseException], None] | None = None,
               wrap: bool = False,
               judge: Callable[[BaseException], Fault] = classify,
               sleep: Callable[[float], None] = time.sleep,
               rng: random.Random | None = None) -> T:
    """``fn()``, retried on transient faults with jittered exponential backoff.

    ``site`` names the layer ("search", "read", "write", "tile": its settings are the default
    ``retry``) and ``what`` the redacted URL or key, for logs and the one-line failure. A
    permanent fault is raised at once; a transient one after ``retry.attempts`` tries. The
    original exception propagates (callers keep catching ``FileNotFoundError``) with a
    :class:`FaultInfo` attached (see :func:`describe`) and a note for tracebacks; with ``wrap``
    a :class:`FaultError` naming ``what`` is raised from it instead. ``resolve`` settles
    ambiguous faults (default: permanent); ``before_retry`` runs before each new attempt (e.g. to
    make GDAL forget a cached failure); ``judge`` replaces :func:`classify` where a site knows
    better (a local disk does not flake: every failure there is permanent).
    """
    policy = retry if retry is not None else getattr(settings(), site)
    delays = policy.delays(rng)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            verdict = judge(exc)
            if verdict is Fault.AMBIGUOUS:
                verdict = resolve(exc) if resolve is not None else Fault.PERMANENT
                if verdict is Fault.AMBIGUOUS:
                    verdict = Fault.PERMANENT
            wait = next(delays, None) if verdict is Fault.TRANSIENT else None
            if wait is None:
                _count(f"{site}.{'gave_up' if verdict is Fault.TRANSIENT else 'permanent'}")
                info = FaultInfo(site, what, verdict, attempt, cause_text(exc))
                if wrap:
                    raise FaultError(info) from exc
                try:
                    setattr(exc, _INFO_ATTR, info)
                    exc.add_note(info.line())
                except (AttributeError, TypeError):  # an exception type without a __dict__
                    pass
                raise
            hinted = retry_after_s(exc)
            if hinted is not None:
                wait = max(wait, min(hinted, policy.max_delay_s))
            _count(f"{site}.retries")
            log.warning("%s %s: %s; retry %d of %d in %.2f s", site, what,
                        cause_text(exc)[:300], attempt, policy.attempts - 1, wait)
            sleep(wait)
            if before_retry is not None:
                before_retry(exc)

"""The one error policy: what is transient, what permanent, and how retries wait."""

from __future__ import annotations

import errno
import http.client
import pickle
import random
import urllib.error
from email.message import Message
from types import SimpleNamespace

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker
from hypothesis import given
from hypothesis import strategies as st
from pystac_client.exceptions import APIError
from rasterio.errors import RasterioIOError

from glacierscale.catalog.sources import RateLimiter
from glacierscale.core import faults
from glacierscale.core.faults import Fault, FaultError, RetrySettings, classify

T, P, A = Fault.TRANSIENT, Fault.PERMANENT, Fault.AMBIGUOUS


def _client_error(code: str, status: int, retry_after: str | None = None) -> ClientError:
    headers = {"retry-after": retry_after} if retry_after else {}
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}},
                       "PutObject")


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def _response(status: int, retry_after: str | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    if retry_after is not None:
        resp.headers["Retry-After"] = retry_after
    return resp


CASES: list[tuple[str, BaseException, Fault]] = [
    # HTTP statuses, wherever they are carried
    ("GDAL 503", RasterioIOError("HTTP response code: 503"), T),
    ("GDAL 429", RasterioIOError("HTTP response code: 429"), T),
    ("GDAL 404", RasterioIOError("HTTP response code: 404"), P),
    ("GDAL 403", RasterioIOError("HTTP response code: 403"), P),
    ("requests 502", requests.HTTPError("x", response=_response(502)), T),
    ("requests 400", requests.HTTPError("x", response=_response(400)), P),
    ("urllib 504", urllib.error.HTTPError("http://h/x", 504, "busy", Message(), None), T),
    ("501 is permanent", requests.HTTPError("x", response=_response(501)), P),
    # S3 error codes (botocore) and s3fs's translations of them
    ("SlowDown", _client_error("SlowDown", 503), T),
    ("InternalError", _client_error("InternalError", 500), T),
    ("RequestTimeout 400", _client_error("RequestTimeout", 400), T),
    ("NoSuchKey", _client_error("NoSuchKey", 404), P),
    ("AccessDenied", _client_error("AccessDenied", 403), P),
    ("s3fs EIO over SlowDown", _chained(OSError(errno.EIO, "x"), _client_error("SlowDown", 503)),
     T),
    ("s3fs FileNotFoundError", _chained(FileNotFoundError("k"), _client_error("NoSuchKey", 404)),
     P),
    ("s3fs EBUSY", OSError(errno.EBUSY, "SlowDown"), T),
    # broken connections and timeouts
    ("TimeoutError", TimeoutError("x"), T),
    ("ConnectionResetError", ConnectionResetError(errno.ECONNRESET, "reset"), T),
    ("RemoteDisconnected", http.client.RemoteDisconnected("closed"), T),
    ("IncompleteRead", http.client.IncompleteRead(b"ab", 10), T),
    ("requests ReadTimeout", requests.ReadTimeout("x"), T),
    ("requests ConnectionError", requests.ConnectionError("x"), T),
    ("botocore EndpointConnectionError", EndpointConnectionError(endpoint_url="http://h"), T),
    ("botocore ReadTimeoutError", ReadTimeoutError(endpoint_url="http://h"), T),
    ("ENETUNREACH", OSError(errno.ENETUNREACH, "x"), T),
    ("GDAL empty reply", RasterioIOError("CURL error: Empty reply from server"), T),
    ("GDAL timeout", RasterioIOError("CURL error: Operation timed out after 3002 ms"), T),
    ("GDAL short block read", _chained(
        RasterioIOError("Read failed. See previous exception for details."),
        RasterioIOError("TIFFFillTile:Read error at row 0, col 0, tile 1; got 19126 bytes, "
                        "expected 99891")), T),
    # corrupt or foreign files
    ("GDAL decoding error", _chained(
        RasterioIOError("Read failed. See previous exception for details."),
        _chained(RasterioIOError("b.tif, band 1: IReadBlock failed at X offset 1"),
                 RasterioIOError("ZIPDecode:Decoding error at scanline 256"))), P),
    ("local not recognized", RasterioIOError("'/data/b.tif' not recognized as being in a "
                                             "supported file format."), P),
    ("remote not recognized", RasterioIOError("'/vsicurl/http://h/b.tif' not recognized as "
                                              "being in a supported file format."), A),
    ("remote cached failure", RasterioIOError("'/vsis3/b/k.tif' does not exist in the file "
                                              "system, and is not recognized as a supported "
                                              "dataset name."), A),
    # local, missing, denied, bugs
    ("FileNotFoundError", FileNotFoundError("x"), P),
    ("PermissionError", PermissionError("x"), P),
    ("ENOSPC", OSError(errno.ENOSPC, "full"), P),
    ("KeyError", KeyError("band"), P),
    ("ValueError", ValueError("bad"), P),
    ("RuntimeError", RuntimeError("?"), P),
    # pystac-client wraps everything in APIError: its cause decides
    ("APIError 404", APIError.from_response(_response(404)), P),
    ("APIError over a 429 hook", _chained(APIError("HTTP status code 429"),
                                          requests.HTTPError("x", response=_response(429))), T),
    ("APIError over a reset", _chained(APIError("Connection aborted."),
                                       requests.ConnectionError("reset")), T),
    ("stackstac wrapper", _chained(RuntimeError("Error reading Window(...) from 'http://h/b.tif'"),
                                   RasterioIOError("HTTP response code: 503")), T),
    # Dask: lost connections and killed workers are worth another try of the batch
    ("CommClosedError", CommClosedError("in <TCP (closed)>: Stream is closed"), T),
    ("KilledWorker", KilledWorker("tile-x", SimpleNamespace(address="tcp://w"), 3), T),
    ("scheduler unreachable", OSError("Timed out trying to connect to tcp://h:8786 after 30 s"), T),
]


@pytest.mark.parametrize("exc, verdict", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classification(exc: BaseException, verdict: Fault) -> None:
    assert classify(exc) is verdict
    assert faults.is_transient(exc) is (verdict is T)


def test_the_outermost_decisive_exception_wins_over_its_context() -> None:
    # A missing object reported while handling a timeout is missing: retrying will not help.
    try:
        try:
            raise TimeoutError("first try")
        except TimeoutError:
            raise FileNotFoundError("no such key") from None
    except FileNotFoundError as exc:
        assert classify(exc) is P
    outer = FileNotFoundError("no such key")
    outer.__context__ = TimeoutError("x")
    assert classify(outer) is P


def test_unreachable_is_nobody_accepting_the_connection_not_an_error_answer() -> None:
    refused = requests.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=9): Max "
                                       "retries exceeded (Caused by NewConnectionError(...: "
                                       "[Errno 111] Connection refused))")
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        except ConnectionRefusedError as inner:
            raise APIError("search failed") from inner
    except APIError as wrapped:
        assert faults.is_unreachable(wrapped)  # decided by the cause, whatever the wrapper says
    assert faults.is_unreachable(refused)
    assert faults.is_unreachable(requests.ConnectionError(
        "Failed to resolve 'no-such-host.invalid' ([Errno -2] Name or service not known)"))
    answered = APIError("503 Service Unavailable")
    assert not faults.is_unreachable(answered)  # the server answered: its error is another matter
    assert not faults.is_unreachable(requests.ReadTimeout("read timed out"))


def test_retry_after_is_read_from_requests_and_botocore() -> None:
    hooked = _chained(APIError("x"), requests.HTTPError("x", response=_response(429, "7")))
    assert faults.retry_after_s(hooked) == 7.0
    assert faults.retry_after_s(_client_error("SlowDown", 503, "3")) == 3.0
    assert faults.retry_after_s(requests.HTTPError("x", response=_response(429, "a date"))) is None
    assert faults.retry_after_s(TimeoutError()) is None


class Flaky:
    """Fails with ``errors`` in turn, then returns ``"ok"``; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_faults_are_retried_with_growing_jittered_waits() -> None:
    waits: list[float] = []
    fn = Flaky(TimeoutError("a"), ConnectionResetError("b"), TimeoutError("c"))
    policy = RetrySettings(attempts=5, base_delay_s=1.0, max_delay_s=3.0)
    faults.reset_retry_stats()
    assert faults.retry_call(fn, site="search", what="u", retry=policy, sleep=waits.append,
                             rng=random.Random(1)) == "ok"
    assert fn.calls == 4 and len(waits) == 3
    assert [0 <= w <= cap for w, cap in zip(waits, (1.0, 2.0, 3.0), strict=True)] == [True] * 3
    assert faults.retry_stats() == {"search.retries": 3}


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    waits: list[float] = []
    throttled = _client_error("SlowDown", 503, "2.5")
    policy = RetrySettings(attempts=3, base_delay_s=0.001, max_delay_s=2.0)
    faults.retry_call(Flaky(throttled, throttled), site="write", what="k", retry=policy,
                      sleep=waits.append)
    assert waits == [2.0, 2.0]


def test_permanent_faults_fail_at_once_with_the_original_exception() -> None:
    waits: list[float] = []
    fn = Flaky(FileNotFoundError("no object at s3://b/k"))
    faults.reset_retry_stats()
    with pytest.raises(FileNotFoundError) as info:
        faults.retry_call(fn, site="write", what="s3://b/k", sleep=waits.append)
    assert fn.calls == 1 and waits == []
    assert faults.retry_stats() == {"write.permanent": 1}
    line = faults.describe(info.value)
    assert line == "write s3://b/k: FileNotFoundError: no object at s3://b/k (permanent)"
    assert line in info.value.__notes__


def test_exhausted_transient_faults_say_so_and_stay_transient() -> None:
    fn = Flaky(*[TimeoutError("slow")] * 9)
    with pytest.raises(FaultError) as info:
        faults.retry_call(fn, site="read", what="http://h/b.tif", wrap=True,
                          retry=RetrySettings(attempts=3, base_delay_s=0), sleep=lambda _s: None)
    assert fn.calls == 3
    assert str(info.value) == ("read http://h/b.tif: TimeoutError: slow "
                               "(transient, gave up after 3 attempts)")
    assert isinstance(info.value.__cause__, TimeoutError)
    assert classify(info.value) is T  # an outer level (the tile's retry) may try again
    copy = pickle.loads(pickle.dumps(info.value))  # crosses Dask process boundaries
    assert str(copy) == str(info.value) and classify(copy) is T


def test_wrapped_failures_name_the_decisive_inner_message() -> None:
    gdal = _chained(RasterioIOError("Read failed. See previous exception for details."),
                    RasterioIOError("ZIPDecode:Decoding error at scanline 256"))
    with pytest.raises(FaultError) as info:
        faults.retry_call(Flaky(gdal), site="read", what="http://h/B04.tif", wrap=True)
    assert str(info.value) == (
        "read http://h/B04.tif: RasterioIOError: Read failed. See previous exception for "
        "details. <- RasterioIOError: ZIPDecode:Decoding error at scanline 256 (permanent)")


def test_ambiguous_faults_are_settled_by_resolve() -> None:
    cached = RasterioIOError("'/vsicurl/http://h/b.tif' does not exist in the file system")
    seen: list[BaseException] = []
    fn = Flaky(cached)
    assert faults.retry_call(fn, site="read", what="b", resolve=lambda e: T,
                             before_retry=seen.append, sleep=lambda _s: None) == "ok"
    assert seen == [cached]
    fn = Flaky(cached)
    with pytest.raises(RasterioIOError):
        faults.retry_call(fn, site="read", what="b", sleep=lambda _s: None)  # default: permanent
    assert fn.calls == 1


@given(st.integers(1, 8), st.floats(0, 5), st.floats(0, 60), st.integers(0, 2**32))
def test_delays_are_bounded_by_the_capped_exponential(attempts: int, base: float, cap: float,
                                                      seed: int) -> None:
    policy = RetrySettings(attempts=attempts, base_delay_s=base, max_delay_s=cap)
    waits = list(policy.delays(random.Random(seed)))
    assert len(waits) == attempts - 1
    assert all(0 <= w <= min(cap, base * 2**n) for n, w in enumerate(waits))


def test_settings_come_from_configure_then_the_environment(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.delenv(faults.ENV_VAR, raising=False)
    assert faults.settings() == faults.FaultSettings()
    monkeypatch.setenv(faults.ENV_VAR, '{"read": {"attempts": 9}, "search_rate_per_s": 2}')
    s = faults.settings()
    assert s.read.attempts == 9 and s.search_rate_per_s == 2 and s.write.attempts == 5
    mine = faults.FaultSettings(search_timeout_s=5)
    with faults.configured(mine):
        assert faults.settings() is mine
    assert faults.settings().read.attempts == 9
    monkeypatch.setenv(faults.ENV_VAR, '{"reed": {}}')
    with pytest.raises(ValueError, match="GLACIERSCALE_FAULTS"):
        faults.settings()


def test_rate_limiter_spaces_requests_after_the_burst() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    bucket = RateLimiter(rate=4.0, burst=2, clock=lambda: now[0], sleep=sleep)
    waits = [bucket.acquire() for _ in range(6)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.25] * 4)
    assert now[0] == pytest.approx(1.0)  # 6 requests: 2 at once, then 4 per second
    now[0] += 10  # idle time refills the bucket up to the burst, no more
    assert [bucket.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.25])

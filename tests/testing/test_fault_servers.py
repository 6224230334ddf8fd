"""The fault-injecting servers: each fault kind as a client meets it, and what they count."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import FaultLog, FaultPlan, final_puts
from glacierscale.testing.rangeserver import range_server
from glacierscale.testing.services import stac_api


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; (status, headers, body) or an exception."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path: Path) -> Path:
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    return tmp_path


def test_plan_shares_are_checked() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultPlan(error=0.7, drop=0.5)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        FaultPlan(late=2.0)
    with pytest.raises(ValueError, match="first="):
        FaultPlan(fail_first=1, first="boom")


def test_decisions_are_seeded_and_match_the_shares() -> None:
    plan = FaultPlan(error=0.1, throttle=0.05, drop=0.05, truncate=0.05, slow=0.05, seed=3)

    def draw(log: FaultLog) -> list[str | None]:
        return [f.kind if (f := log.decide("GET", "/x")) else None for _ in range(4000)]

    first, again = draw(FaultLog(plan=plan)), draw(FaultLog(plan=plan))
    assert first == again  # the same requests in the same order meet the same faults
    counts = Counter(first)
    for kind, share in (("error", 0.1), ("throttle", 0.05), ("drop", 0.05), ("slow", 0.05)):
        assert abs(counts[kind] / 4000 - share) < 0.02, counts
    other = draw(FaultLog(plan=FaultPlan(error=0.1, seed=4)))
    assert other != draw(FaultLog(plan=FaultPlan(error=0.1, seed=3)))


def test_plans_select_requests_by_method_and_path() -> None:
    log = FaultLog(plan=FaultPlan(error=1.0, methods=("PUT",), path="^/bucket/out/"))
    assert log.decide("GET", "/bucket/out/a") is None
    assert log.decide("PUT", "/bucket/in/a") is None
    fault = log.decide("PUT", "/bucket/out/a")
    assert fault is not None and fault.kind == "error"
    first = FaultLog(plan=FaultPlan(fail_first=2, first="drop"))
    assert [f.kind if (f := first.decide("GET", "/")) else None for _ in range(3)] == [
        "drop", "drop", None]


def test_range_server_errors_throttles_and_counts(served: Path) -> None:
    with range_server(served, faults=FaultPlan(fail_first=1, first="throttle",
                                               retry_after_s=3)) as (url, log):
        status, headers, body = _get(f"{url}/files/a.bin", {"Range": "bytes=0-9"})
        assert status == 429 and headers["Retry-After"] == "3" and b"throttle" in body
        status, headers, body = _get(f"{url}/files/a.bin", {"Range": "bytes=0-9"})
        assert status == 206 and body == bytes(range(10))
        log.plan = FaultPlan(error=1.0, methods=("HEAD",))
        assert _get(f"{url}/p/files/a.bin", method="HEAD")[0] == 503
        assert _get(f"{url}/p/files/a.bin")[0] == 200  # GETs are spared by this plan
        assert log.faults() == Counter({"throttle": 1, "error": 1})
        assert log.counts()[("GET", "/files/a.bin")] == 2
        assert log.count("GET", "/p/") == 1 and log.count(faulted=True) == 2
        assert len(log.gets) == 3 and log.heads == 1  # range bookkeeping kept for benchmarks
        assert [r.status for r in log.snapshot()] == [429, 206, 503, 200]


def test_range_server_drops_truncates_and_slows(served: Path) -> None:
    with range_server(served, faults=FaultPlan(fail_first=1, first="drop")) as (url, log):
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
            _get(f"{url}/files/a.bin")
        log.plan = FaultPlan(fail_first=1, first="truncate")
        with pytest.raises(http.client.IncompleteRead) as info:
            _get(f"{url}/files/a.bin", {"Range": "bytes=0-999"})
        assert len(info.value.partial) == 500
        log.plan = FaultPlan(fail_first=1, first="slow", slow_s=0.3)
        t0 = time.monotonic()
        assert _get(f"{url}/files/a.bin", {"Range": "bytes=0-9"})[0] == 206
        assert time.monotonic() - t0 >= 0.3  # a late answer is still the right answer
        assert log.faults() == Counter({"drop": 1, "truncate": 1, "slow": 1})



def test_range_server_answers_a_range_past_the_end_like_a_real_server(served: Path) -> None:
    """A file shorter than its reader expects: 416 with the real size for a range starting past
    the end, a short 206 for one crossing it (never the whole file, nor a hang)."""
    with range_server(served) as (url, _log):
        status, headers, body = _get(f"{url}/files/a.bin", {"Range": "bytes=20000-20999"})
        assert (status, headers["Content-Range"], body) == (416, "bytes */10240", b"")
        status, headers, body = _get(f"{url}/files/a.bin", {"Range": "bytes=10000-10999"})
        assert (status, headers["Content-Range"], len(body)) == (206, "bytes 10000-10239/10240",
                                                                 240)

@pytest.mark.integration
def test_proxy_in_front_of_a_stac_api_keeps_clients_behind_it(tmp_path: Path) -> None:
    docs = [{"type": "Feature", "stac_version": "1.1.0", "id": f"i{i}", "collection": "c",
             "geometry": {"type": "Point", "coordinates": [10.5, 60.5]}, "bbox": [10.5, 60.5,
                                                                                  10.5, 60.5],
             "properties": {"datetime": "2020-08-01T00:00:00Z"}, "assets": {}, "links": []}
            for i in range(5)]
    items = tmp_path / "items.ndjson"
    items.write_text("".join(json.dumps(d) + "\n" for d in docs))
    with stac_api([items]) as upstream, fault_proxy(upstream) as (url, log):
        status, _h, body = _get(f"{url}/search?limit=2")
        page = json.loads(body)
        assert status == 200 and len(page["features"]) == 2
        links = [link["href"] for link in page["links"]]
        assert any(h.startswith(f"{url}/") for h in links)
        assert not any(h.startswith(upstream) for h in links)  # rewritten to the proxy
        log.plan = FaultPlan(fail_first=1, first="error")
        status, headers, body = _get(f"{url}/search")
        assert status == 503 and json.loads(body)["code"] == "503"
        assert "Retry-After" in headers
        assert log.summary() == {"requests": 2, "by_method": {"GET": 2},
                                 "faults": {"error": 1}}


@pytest.mark.integration
def test_proxy_in_front_of_s3_loses_answers_of_writes_that_happened(s3_server: str) -> None:
    import boto3
    from botocore.config import Config

    with fault_proxy(s3_server, kind="s3") as (url, log):
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="AKIAFAULTPROXYTEST00", aws_secret_access_key="x" * 20,
                          config=Config(retries={"total_max_attempts": 1}))
        bucket = f"proxy-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        log.plan = FaultPlan(fail_first=1, first="error", late=1.0, methods=("PUT",))
        with pytest.raises(s3.exceptions.ClientError) as info:
            s3.put_object(Bucket=bucket, Key="k", Body=b"written")
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        # the answer was lost, the write was not
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"written"
        log.plan = FaultPlan(fail_first=1, first="throttle", methods=("PUT",))
        with pytest.raises(s3.exceptions.ClientError) as info:
            s3.put_object(Bucket=bucket, Key="k2", Body=b"x")
        assert info.value.response["Error"]["Code"] == "SlowDown"
        s3.put_object(Bucket=bucket, Key="k2", Body=b"x")
        s3.copy_object(Bucket=bucket, Key="k3", CopySource={"Bucket": bucket, "Key": "k2"})
        puts = final_puts(log, f"/{bucket}/")
        assert puts == Counter({f"/{bucket}/k2": 1, f"/{bucket}/k3": 1})
        copies = [r for r in log.snapshot() if r.copy_source]
        assert len(copies) == 1 and copies[0].copy_source.endswith("/k2")  # type: ignore[union-attr]
        assert log.count("PUT", f"/{bucket}/", faulted=True) == 2
        with pytest.raises(urllib.error.HTTPError):  # unsigned: moto refuses, proxy forwards
            urllib.request.urlopen(f"{url}/{bucket}/nope", timeout=10)

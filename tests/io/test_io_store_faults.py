"""Object-store writes through a fault-injecting proxy in front of a real S3 server (moto).

botocore's own per-request retries are turned off here (``AWS_MAX_ATTEMPTS=1``), so what these
tests see retried is the store's retry, the one that fires after the client library gave up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from glacierscale.core import faults
from glacierscale.io.store import TMP_PREFIX, Store
from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import FaultLog, FaultPlan, final_puts
from glacierscale.testing.services import aws_environment

pytestmark = pytest.mark.integration

QUICK = faults.FaultSettings(write=faults.RetrySettings(attempts=4, base_delay_s=0.01,
                                                        max_delay_s=0.05))


@dataclass
class Proxied:
    bucket: str
    log: FaultLog

    def store(self) -> Store:
        return Store(f"s3://{self.bucket}/run")

    def objects(self) -> list[str]:
        import s3fs

        return [str(k) for k in s3fs.S3FileSystem().find(self.bucket)]


@pytest.fixture
def proxied(s3_server: str) -> Iterator[Proxied]:
    import boto3

    with fault_proxy(s3_server, kind="s3") as (url, log), \
            aws_environment(url, AWS_MAX_ATTEMPTS="1"), faults.configured(QUICK):
        bucket = f"faults-{uuid.uuid4().hex[:10]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        faults.reset_retry_stats()
        yield Proxied(bucket, log)


def test_failed_puts_are_retried_and_the_object_published_once(proxied: Proxied) -> None:
    proxied.log.plan = FaultPlan(fail_first=2, first="error", methods=("PUT",))
    store = proxied.store()
    store.write_bytes_atomic("tiles/t/item.json", b'{"ok": 1}')
    assert store.read_bytes("tiles/t/item.json") == b'{"ok": 1}'
    assert faults.retry_stats()["write.retries"] == 2
    assert proxied.log.faults() == {"error": 2}
    assert final_puts(proxied.log, f"/{proxied.bucket}/run/") == {
        f"/{proxied.bucket}/run/tiles/t/item.json": 1}
    assert not [k for k in proxied.objects() if TMP_PREFIX in k]


def test_a_publish_whose_answer_was_lost_is_repeated_safely(proxied: Proxied,
                                                            tmp_path: object) -> None:
    from pathlib import Path

    local = Path(str(tmp_path)) / "prob.tif"
    local.write_bytes(b"II*\x00" + bytes(5000))
    # The server copies the temporary object into place, but the client hears a 503.
    proxied.log.plan = FaultPlan(fail_first=1, first="error", late=1.0, methods=("PUT",),
                                 path=r"/run/tiles/t/prob\.tif$")
    store = proxied.store()
    store.put_file_atomic(local, "tiles/t/prob.tif")
    assert store.read_bytes("tiles/t/prob.tif") == local.read_bytes()
    copies = [r for r in proxied.log.snapshot() if r.copy_source]
    assert len(copies) == 2 and copies[0].fault == "error" and copies[1].fault is None
    assert faults.retry_stats()["write.retries"] == 1
    assert not [k for k in proxied.objects() if TMP_PREFIX in k]


def test_dropped_connections_on_writes_are_survived(proxied: Proxied) -> None:
    proxied.log.plan = FaultPlan(drop=0.3, truncate=0.1, methods=("PUT", "DELETE"), seed=1)
    store = proxied.store()
    for i in range(12):
        store.write_bytes_atomic(f"k{i}", str(i).encode())
    assert [store.read_bytes(f"k{i}") for i in range(12)] == [str(i).encode() for i in range(12)]
    assert sum(proxied.log.faults().values()) > 0
    assert not [k for k in proxied.objects() if TMP_PREFIX in k]


def test_a_missing_bucket_fails_at_once(proxied: Proxied) -> None:
    store = Store(f"s3://{proxied.bucket}-missing/run")
    with pytest.raises(FileNotFoundError) as info:
        store.write_bytes_atomic("k", b"x")
    assert faults.retry_stats().get("write.retries", 0) == 0
    assert "(permanent)" in faults.describe(info.value)
    assert proxied.log.count("PUT", f"/{proxied.bucket}-missing/") == 1


def test_writes_that_keep_failing_give_up_and_leave_nothing_behind(proxied: Proxied) -> None:
    proxied.log.plan = FaultPlan(error=1.0, methods=("PUT",))
    store = proxied.store()
    with pytest.raises(OSError) as info:
        store.write_bytes_atomic("tiles/t/item.json", b"{}")
    line = faults.describe(info.value)
    assert line.startswith(f"write s3://{proxied.bucket}/run/tiles/t/item.json: ")
    assert line.endswith("(transient, gave up after 4 attempts)")
    assert proxied.log.count("PUT", faulted=True) == 4
    assert not proxied.objects()  # no partial object, no temporary object


def test_local_stores_do_not_retry(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "blocker").write_text("a file where a folder should be")
    faults.reset_retry_stats()
    with pytest.raises(OSError):
        Store(str(root / "blocker")).write_bytes_atomic("k", b"x")
    assert faults.retry_stats() == {}

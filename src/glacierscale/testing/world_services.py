"""Serve a rehearsal world the way a cloud run sees its inputs and outputs, faults included.

:func:`serve_world` starts, on 127.0.0.1:

- the range server (:mod:`glacierscale.testing.rangeserver`) with the world's COGs: GETs with
  byte ranges, HEADs, and faults on a share of them (reads);
- ``rustac serve`` with the world's items, behind the fault proxy (searches);
- ``moto_server``, behind the fault proxy in the S3 dialect (writes): runs get the proxy as
  ``AWS_ENDPOINT_URL``; checks read the bucket directly, so they are neither faulted nor counted.

Both servers log to files: a run of a few thousand requests fills an unread pipe, after which a
server that logs every request blocks.

:func:`rehearsal_faults` is the fault mix of the rehearsal: a share of requests failing, spread
over 503/429 answers, dropped connections and (for reads) truncated bodies.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import NO_FAULTS, FaultLog, FaultPlan
from glacierscale.testing.rangeserver import Log, range_server
from glacierscale.testing.services import s3_server, stac_api
from glacierscale.testing.world import World

#: Object-store writes (``Store`` puts, server-side copies and deletes of temporary keys).
WRITE_METHODS = ("PUT", "POST", "DELETE")
#: Keys and secret of the rehearsal's S3 server (moto accepts any).
ACCESS_KEY, SECRET_KEY = "AKIAWORLDREHEARSAL01", "world-rehearsal-secret-Kq93hZ"


def rehearsal_faults(share: float, seed: int = 0) -> dict[str, FaultPlan]:
    """Fault plans (reads, searches, writes) failing ``share`` of the matching requests."""
    if share <= 0:
        return {"reads": NO_FAULTS, "searches": NO_FAULTS, "writes": NO_FAULTS}
    return {
        "reads": FaultPlan(error=0.4 * share, throttle=0.2 * share, drop=0.2 * share,
                           truncate=0.2 * share, methods=("GET", "HEAD"), seed=seed),
        "searches": FaultPlan(error=0.4 * share, throttle=0.3 * share, drop=0.3 * share,
                              seed=seed + 1),
        "writes": FaultPlan(error=0.5 * share, throttle=0.3 * share, drop=0.2 * share,
                            methods=WRITE_METHODS, seed=seed + 2),
    }


@dataclass
class WorldServices:
    """The running services of a world, their request logs, and how to reach them."""

    catalog: str  # STAC API URL (behind the fault proxy)
    cog_base: str  # where the COGs are served
    s3_endpoint: str  # moto itself: for checks, no faults, not counted
    s3_proxy: str  # what runs use
    bucket: str
    reads: Log
    searches: FaultLog
    writes: FaultLog
    plans: dict[str, FaultPlan] = field(default_factory=dict)

    @property
    def run_env(self) -> dict[str, str]:
        """Environment of run processes (flow and Dask workers): S3 through the proxy."""
        return {"AWS_ENDPOINT_URL": self.s3_proxy, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1"}

    def set_faults(self, share: float, seed: int = 0) -> None:
        """Fail ``share`` of reads, searches and writes from now on (0: none); counts restart."""
        self.plans = rehearsal_faults(share, seed)
        for log, key in ((self.reads, "reads"), (self.searches, "searches"),
                         (self.writes, "writes")):
            log.plan = self.plans[key]
            log.clear()

    def faults_injected(self) -> dict[str, int]:
        """Injected faults so far, per service."""
        return {"reads": sum(self.reads.faults().values()),
                "searches": sum(self.searches.faults().values()),
                "writes": sum(self.writes.faults().values())}

    def direct_fs(self) -> Any:
        """An s3fs filesystem on the S3 server itself (no proxy)."""
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": self.s3_endpoint,
                                                "region_name": "us-east-1"})


@contextmanager
def serve_world(world: World, bucket: str | None = None) -> Iterator[WorldServices]:
    """Serve ``world`` (COGs, STAC API, an empty S3 bucket), every service behind faults that
    start switched off (:meth:`WorldServices.set_faults`)."""
    import boto3

    name = bucket or f"rehearsal-{uuid.uuid4().hex[:8]}"
    logs = Path(tempfile.mkdtemp(prefix="world-services-"))
    with ExitStack() as stack:
        base, reads = stack.enter_context(range_server(world.root))
        cog_base = f"{base}/files"
        items = world.items_ndjson(cog_base, logs / "items.ndjson")
        stac = stack.enter_context(stac_api([items], log=logs / "rustac.log"))
        catalog, searches = stack.enter_context(fault_proxy(stac, kind="json"))
        s3 = stack.enter_context(s3_server(log=logs / "moto.log"))
        s3_proxy, writes = stack.enter_context(fault_proxy(s3, kind="s3"))
        boto3.client("s3", endpoint_url=s3, aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY, region_name="us-east-1").create_bucket(
            Bucket=name)
        yield WorldServices(catalog, cog_base, s3, s3_proxy, name, reads, searches, writes)

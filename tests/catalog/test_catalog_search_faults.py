"""STAC searches against a real STAC API (rustac) behind the fault-injecting proxy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date

import pytest

from glacierscale.catalog import StacApiSource
from glacierscale.core import faults
from glacierscale.core.faults import FaultError, FaultSettings, RetrySettings
from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import FaultLog, FaultPlan
from glacierscale.testing.services import stac_api

pytestmark = pytest.mark.integration

BBOX = (10.2, 60.2, 10.4, 60.4)
AUGUST = (date(2020, 8, 1), date(2020, 8, 31))
QUICK = FaultSettings(search=RetrySettings(attempts=8, base_delay_s=0.01, max_delay_s=0.05),
                      search_rate_per_s=1000.0, search_burst=100, search_timeout_s=5.0)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A STAC API with 120 items in one box (searched 25 per page)."""
    docs = [{"type": "Feature", "stac_version": "1.1.0", "id": f"it{i:03d}", "collection": "s2",
             "geometry": {"type": "Polygon", "coordinates": [[[10, 60], [11, 60], [11, 61],
                                                              [10, 61], [10, 60]]]},
             "bbox": [10, 60, 11, 61], "properties": {"datetime": f"2020-08-{1 + i % 28:02d}"
                                                                  "T10:00:00Z"},
             "assets": {}, "links": []} for i in range(120)]
    path = tmp_path_factory.mktemp("api") / "items.ndjson"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    with stac_api([path]) as url:
        yield url


def _search(url: str) -> list[str]:
    return sorted(i.id for i in StacApiSource(url, limit=25).search(BBOX, *AUGUST, ["s2"]))


def test_searches_survive_errors_throttling_and_dropped_connections(api: str) -> None:
    with faults.configured(QUICK):
        clean = _search(api)
        assert len(clean) == 120
        plan = FaultPlan(error=0.1, throttle=0.1, drop=0.05, truncate=0.05, slow=0.05,
                         slow_s=0.1, retry_after_s=0, seed=7)
        with fault_proxy(api, plan) as (url, log):
            faults.reset_retry_stats()
            for _ in range(3):
                assert _search(url) == clean
    failed = sum(n for kind, n in log.faults().items() if kind != "slow")
    assert failed > 0 and faults.retry_stats()["search.retries"] == failed
    answered = [r for r in log.snapshot() if r.method == "POST" and r.fault in (None, "slow")]
    assert len(answered) == 3 * 5  # 5 pages of 25 items for each of 3 searches


def test_a_search_slower_than_its_timeout_is_asked_again(api: str) -> None:
    quick_timeout = QUICK.model_copy(update={"search_timeout_s": 0.5})
    with faults.configured(quick_timeout), fault_proxy(api) as (url, log):
        source = StacApiSource(url, limit=200)
        source.search(BBOX, *AUGUST)  # opened: landing page and conformance fetched
        log.clear()
        log.plan = FaultPlan(fail_first=1, first="slow", slow_s=3.0, methods=("POST",))
        faults.reset_retry_stats()
        assert len(source.search(BBOX, *AUGUST, ["s2"])) == 120
    assert faults.retry_stats() == {"search.retries": 1}
    assert log.count("POST", "/search") == 2


def test_retry_after_is_honoured(api: str) -> None:
    patient = QUICK.model_copy(update={"search": RetrySettings(attempts=3, base_delay_s=0.0,
                                                               max_delay_s=5.0)})
    with faults.configured(patient), fault_proxy(api) as (url, log):
        source = StacApiSource(url, limit=200)
        source.search(BBOX, *AUGUST)
        log.plan = FaultPlan(fail_first=1, first="throttle", retry_after_s=1, methods=("POST",))
        t0 = time.monotonic()
        source.search(BBOX, *AUGUST, ["s2"])
        assert time.monotonic() - t0 >= 1.0  # the backoff alone would not wait at all


def test_requests_keep_to_the_rate_limit(api: str) -> None:
    slow_rate = QUICK.model_copy(update={"search_rate_per_s": 10.0, "search_burst": 1})
    with faults.configured(slow_rate), fault_proxy(api) as (url, log):
        t0 = time.monotonic()
        _search(url)
        elapsed = time.monotonic() - t0
    assert elapsed >= (len(log.snapshot()) - 1) / 10.0


def _failing(api: str, plan: FaultPlan, path: str = "") -> tuple[FaultError, FaultLog]:
    with faults.configured(QUICK.model_copy(update={"search": RetrySettings(
            attempts=3, base_delay_s=0.01, max_delay_s=0.02)})), \
            fault_proxy(api, plan) as (url, log):
        faults.reset_retry_stats()
        with pytest.raises(FaultError) as info:
            StacApiSource(url + path).search(BBOX, *AUGUST)
    return info.value, log


def test_a_wrong_api_url_fails_at_once(api: str) -> None:
    error, log = _failing(api, FaultPlan(), "/no/such/api")
    assert str(error).startswith("search http://127.0.0.1:")
    assert "/no/such/api: APIError" in str(error) and str(error).endswith("(permanent)")
    assert len(log.snapshot()) == 1 and faults.retry_stats() == {"search.permanent": 1}


def test_an_api_that_stays_down_gives_up_after_its_attempts(api: str) -> None:
    error, log = _failing(api, FaultPlan(error=1.0))
    assert str(error).endswith("(transient, gave up after 3 attempts)")
    assert faults.is_transient(error)  # a later, coarser retry (the tile's) may still succeed
    assert log.faults() == {"error": 3}

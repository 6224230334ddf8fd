"""STAC sources behind one Protocol: any STAC API, Planetary Computer, and local catalogs.

:func:`open_catalog` turns the ``catalog`` setting of a run into a source:

- ``http(s)://...``: a STAC API through pystac-client;
- ``earth-search`` / ``planetary-computer``: named presets; the latter signs asset URLs with
  the ``planetary-computer`` package (and the readers re-sign tokens that expired meanwhile);
- a folder: every STAC item ``*.json`` below it (item collections too);
- ``*.ndjson`` / ``*.jsonl``: one item per line; ``*.parquet``: stac-geoparquet;
- a single ``*.json`` item or item collection.

Sources are cached per process (a run searches twice per tile), and searches split boxes that
cross the antimeridian into two queries.

Every request to a STAC API has a timeout, waits for its turn at a bounded request rate (so tens of
thousands of tile searches do not hammer a public API), and is retried on transient faults (429,
5xx, timeouts, resets) with backoff and jitter, honouring ``Retry-After``: the limits are the
search settings of :mod:`glacierscale.core.faults`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from time import monotonic
from time import sleep as pause
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urljoin

import pystac
import requests
from pystac_client.stac_api_io import StacApiIO
from shapely import STRtree

from glacierscale.catalog.geometry import item_footprint
from glacierscale.core import faults
from glacierscale.core.footprint import bbox_polygon, split_bbox
from glacierscale.core.redact import redact_url

log = logging.getLogger(__name__)

#: Named STAC APIs: name -> (URL, whether asset URLs need Planetary Computer signing).
PRESETS: dict[str, tuple[str, bool]] = {
    "earth-search": ("https://earth-search.aws.element84.com/v1", False),
    "planetary-computer": ("https://planetarycomputer.microsoft.com/api/stac/v1", True),
}


@runtime_checkable
class CatalogSource(Protocol):
    """Anything that finds STAC items by place, time and collection."""

    def search(
        self,
        bbox: tuple[float, float, float, float],
        start: date | None,
        end: date | None,
        collections: Sequence[str] = (),
    ) -> list[pystac.Item]:
        """Items intersecting ``bbox`` (lon/lat W,S,E,N) acquired between ``start`` and ``end``.

        Dates are inclusive days; ``None`` leaves that side open (DEMs are searched with no
        dates at all); empty ``collections`` means all.
        """
        ...


def _day_bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    lo = datetime.combine(start, time.min, UTC) if start else None
    hi = datetime.combine(end, time.max, UTC) if end else None
    if lo and hi and lo > hi:
        raise ValueError(f"start {start} is after end {end}; swap them")
    return lo, hi


def _dedupe(items: Iterable[pystac.Item]) -> list[pystac.Item]:
    seen: dict[tuple[str | None, str], pystac.Item] = {}
    for item in items:
        seen.setdefault((item.collection_id, item.id), item)
    return list(seen.values())


class RateLimiter:
    """A token bucket: at most ``rate`` calls per second on average, bursts of ``burst``.

    Shared by the threads of one process; a run on N processes sends at most N x ``rate``.
    """

    def __init__(self, rate: float, burst: int = 1,
                 clock: Callable[[], float] = monotonic,
                 sleep: Callable[[float], None] = pause) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = float(rate), int(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait


def _keep_retry_after(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Turn a transient error answer into an exception that keeps the response.

    pystac-client keeps only the status and text of an error answer; raising here (a requests
    hook, inside its request call) chains the whole response, ``Retry-After`` included, under
    its ``APIError``.
    """
    if resp.status_code in faults.TRANSIENT_STATUS:
        _ = resp.content  # read the body, so the connection goes back to the pool
        raise requests.HTTPError(f"HTTP status code {resp.status_code} from "
                                 f"{redact_url(resp.url)}", response=resp)


class RetryingStacApiIO(StacApiIO):
    """pystac-client's I/O with a timeout, a request rate limit and retries on transient faults.

    The one retry layer of a search: urllib3's own retries are off, so every retry is counted
    and waits with jitter (:func:`glacierscale.core.faults.retry_call`).
    """

    def __init__(self, settings: faults.FaultSettings | None = None, **kwargs: Any) -> None:
        s = settings or faults.settings()
        super().__init__(timeout=(s.search_connect_timeout_s, s.search_timeout_s),
                         max_retries=None, **kwargs)
        self.settings = s
        self.limiter = RateLimiter(s.search_rate_per_s, s.search_burst)
        self.session.hooks["response"].append(_keep_retry_after)

    def request(self, href: str, method: str | None = None,
                headers: dict[str, str] | None = None,
                parameters: dict[str, Any] | None = None) -> str:
        def once() -> str:
            self.limiter.acquire()
            return str(super(RetryingStacApiIO, self).request(href, method, headers, parameters))

        return faults.retry_call(once, site="search", what=redact_url(href),
                                 retry=self.settings.search, wrap=True)


class StacApiSource:
    """A STAC API searched with pystac-client (``/search`` with bbox, datetime, collections)."""

    def __init__(self, url: str, *, sign: bool = False, max_items: int | None = 5000,
                 limit: int = 100) -> None:
        self.url = url
        self.sign = sign
        self.max_items = max_items
        self.limit = limit
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StacApiSource({self.url!r}, sign={self.sign})"

    def _open(self) -> Any:
        with self._lock:
            if self._client is None:
                from pystac_client import Client

                modifier = None
                if self.sign:
                    import planetary_computer

                    modifier = planetary_computer.sign_inplace
                io = RetryingStacApiIO()
                self._client = Client.open(self.url, modifier=modifier, stac_io=io,
                                           timeout=io.timeout)
            return self._client

    def search(
        self,
        bbox: tuple[float, float, float, float],
        start: date | None,
        end: date | None,
        collections: Sequence[str] = (),
    ) -> list[pystac.Item]:
        client = self._open()
        lo, hi = _day_bounds(start, end)
        when = None if lo is None and hi is None else [lo, hi]
        found: list[pystac.Item] = []
        for part in split_bbox(bbox):
            search = client.search(
                bbox=list(part), datetime=when, collections=list(collections) or None,
                max_items=self.max_items, limit=self.limit,
            )
            found.extend(search.items())
        if self.max_items is not None and len(found) >= self.max_items:
            log.warning("%s: search hit max_items=%d; narrow the box, dates or collections",
                        self.url, self.max_items)
        return _dedupe(found)


def _absolute_hrefs(item: pystac.Item, base: str) -> pystac.Item:
    """Make relative asset hrefs absolute against the file the item was read from."""
    for asset in item.assets.values():
        href = asset.href
        if "://" in href or os.path.isabs(href):
            continue
        asset.href = (urljoin(base, href) if "://" in base
                      else os.path.normpath(os.path.join(os.path.dirname(base), href)))
    return item


def _as_item(doc: dict[str, Any], base: str) -> pystac.Item:
    item = pystac.Item.from_dict(doc, preserve_dict=False)
    return _absolute_hrefs(item, base)


def _features(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        return [f for f in doc.get("features", []) if isinstance(f, dict)]
    return []


def read_items(path: str | Path) -> list[pystac.Item]:
    """Every STAC item of a folder, ``*.json``, ``*.ndjson``/``*.jsonl`` or ``*.parquet`` file."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.json") if f.is_file())
        items = []
        for f in files:
            try:
                doc = json.loads(f.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{f} is not valid JSON ({exc}); fix or remove it") from exc
            items += [_as_item(d, str(f)) for d in _features(doc)]
        return items
    if not p.is_file():
        raise FileNotFoundError(
            f"catalog {str(p)!r} is neither a folder, a file nor a URL; give a STAC API URL, "
            f"'earth-search', 'planetary-computer', a folder of item JSON files, or an "
            f".ndjson/.parquet file"
        )
    suffix = p.suffix.lower()
    if suffix in (".ndjson", ".jsonl", ".geojsonl"):
        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
        return [_as_item(d, str(p)) for ln in lines for d in _features(json.loads(ln))]
    if suffix in (".parquet", ".geoparquet"):
        import rustac

        doc = rustac.read_sync(str(p))
        return [_as_item(d, str(p)) for d in _features(doc)]
    if suffix in (".json", ".geojson"):
        return [_as_item(d, str(p)) for d in _features(json.loads(p.read_text()))]
    raise ValueError(f"unsupported catalog file {p.name!r}: use .json, .ndjson, .jsonl or .parquet")


def _item_interval(item: pystac.Item) -> tuple[datetime, datetime]:
    props = item.properties
    if item.datetime is not None and not (props.get("start_datetime") and
                                          props.get("end_datetime")):
        return item.datetime, item.datetime
    lo = pystac.utils.str_to_datetime(props["start_datetime"]) if props.get("start_datetime") \
        else datetime.min.replace(tzinfo=UTC)
    hi = pystac.utils.str_to_datetime(props["end_datetime"]) if props.get("end_datetime") \
        else datetime.max.replace(tzinfo=UTC)
    return lo, hi


class LocalSource:
    """Items of a local folder or file, searched in memory (footprints are antimeridian-safe)."""

    def __init__(self, path: str | Path, items: Sequence[pystac.Item] | None = None) -> None:
        self.path = str(path)
        self.items = list(items) if items is not None else read_items(path)
        # A spatial index: a run searches every tile against the whole catalog.
        self._tree = STRtree([item_footprint(i.geometry, i.bbox) for i in self.items])

    def __repr__(self) -> str:
        return f"LocalSource({self.path!r}, {len(self.items)} items)"

    def search(
        self,
        bbox: tuple[float, float, float, float],
        start: date | None,
        end: date | None,
        collections: Sequence[str] = (),
    ) -> list[pystac.Item]:
        lo, hi = _day_bounds(start, end)
        wanted = set(collections)
        hits = self._tree.query(bbox_polygon(bbox), predicate="intersects")
        out = []
        for idx in sorted(int(i) for i in hits):  # catalog order, whatever the index returns
            item = self.items[idx]
            if wanted and item.collection_id not in wanted:
                continue
            if lo is not None or hi is not None:
                a, b = _item_interval(item)
                if (lo is not None and b < lo) or (hi is not None and a > hi):
                    continue
            out.append(item)
        return _dedupe(out)


_cache: dict[tuple[str, float], CatalogSource] = {}
_cache_lock = threading.Lock()


def open_catalog(url_or_path: str) -> CatalogSource:
    """The catalog source for a URL, preset name, folder or file (cached per process)."""
    key = url_or_path.strip()
    if not key:
        raise ValueError("empty catalog; give a STAC API URL, a preset "
                         f"({', '.join(PRESETS)}), a folder of items or an ndjson/parquet file")
    stamp = 0.0
    is_url = key in PRESETS or key.startswith(("http://", "https://"))
    if not is_url:
        p = Path(key).expanduser()
        # A local catalog edited between runs in the same process is re-read.
        stamp = p.stat().st_mtime if p.exists() else 0.0
        key = str(p.resolve())
    with _cache_lock:
        source = _cache.get((key, stamp))
        if source is None:
            source = _make(key, is_url)
            _cache[(key, stamp)] = source
    return source


def _make(key: str, is_url: bool) -> CatalogSource:
    if key in PRESETS:
        url, sign = PRESETS[key]
        return StacApiSource(url, sign=sign)
    if is_url:
        sign = "planetarycomputer.microsoft.com" in key
        return StacApiSource(key, sign=sign)
    return LocalSource(key)


"""One preflight before any cluster, Prefect server or tile: every input a user gives, checked once.

:func:`preflight` is called by the CLI, by ``orchestrate.run`` and at the start of the deployed
flows. It checks, cheapest first, and stops at the first problem with a :class:`PreflightError`
whose message (one or two lines, secrets redacted) names the culprit and the fix:

1. the config parses (:func:`load_config`: YAML errors with file, line and column; unknown keys
   with the closest valid one) and its dates are in order;
2. the AOI: a ``W,S,E,N`` box in range with S < N (W > E is read as crossing the antimeridian), or
   an outlines file that exists and holds polygons (or glacier points / a CenLon-CenLat table);
3. the output location is writable: a small probe object is written and removed (local folders
   and object stores alike; a missing bucket or refused credentials are named as such);
4. the catalog opens and offers every requested collection (a typo is named with the collections
   on offer); a sample item per collection tells which bands it offers, whether clouds can be
   masked and whether its assets are requester-pays;
5. the catalog has scenes over a box AOI in the date window (else every tile would be no-data);
6. the model loads (pickled weights are refused), decides the run's resolution, and the chosen
   collections offer every band it needs. It comes last: loading a model imports torch.

Nothing is written but the probe, which is removed: a failed preflight leaves every earlier output
as it was. Non-fatal findings (an item without a cloud mask, an AOI across the antimeridian) come
back as one-line ``notes``.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from glacierscale.config import ConfigError, RunConfig, parse_run_config
from glacierscale.core.footprint import Bbox, looks_like_bbox, parse_bbox, split_bbox
from glacierscale.preflight.errors import PreflightError as PreflightError
from glacierscale.preflight.outlines import check_outlines

if TYPE_CHECKING:
    import pystac

    from glacierscale.models import GlacierModel

# The heavy layers (catalog, io, load, models: pystac, GDAL, torch) are imported inside the checks
# that need them, in the order the checks run: a mistyped date or box is reported before torch has
# even been imported, within a second of the command.

log = logging.getLogger(__name__)

#: Buckets whose objects only a paying requester may read (``AWS_REQUEST_PAYER=requester``).
REQUESTER_PAYS_BUCKETS = ("usgs-landsat", "usgs-landsat-ard")


@dataclass(frozen=True)
class Preflight:
    """What the preflight found: the run's resolved config and facts worth telling the user."""

    cfg: RunConfig
    bbox: Bbox | None
    collections: tuple[str, ...]
    bands: Mapping[str, tuple[str, ...]]
    notes: tuple[str, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)


ModelLoader = Callable[[str], "GlacierModel"]


def load_config(options: Mapping[str, Any], config_file: str | Path | None = None, *,
                cli: bool = True) -> RunConfig:
    """A RunConfig from typed options and an optional YAML file, or one :class:`PreflightError`.

    Options win over the file; nested sections (``grid``, ``infer``) merge field by field.
    ``cli`` names problems by CLI option (``--start``) rather than by field path.
    """
    try:
        if config_file is not None:
            return RunConfig.from_yaml(config_file, **dict(options))
        return parse_run_config(options, cli=cli)
    except ConfigError as exc:
        raise PreflightError(str(exc), "config") from exc


def preflight(cfg: RunConfig, *, model_loader: ModelLoader | None = None,
              storage_options: dict[str, Any] | None = None, inputs: bool = True,
              check_output: bool = True) -> Preflight:
    """Check a run's inputs before it starts; return the resolved config and notes.

    ``model_loader`` (default :func:`glacierscale.models.load_model`) lets a caller share its
    model cache. ``inputs=False`` leaves out the model, catalog and scene checks (for a tile
    function that reads neither); ``check_output=False`` the probe write. Raises
    :class:`PreflightError` for the first problem found.
    """
    seconds: dict[str, float] = {}
    notes: list[str] = []

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            seconds[name] = round(time.perf_counter() - t0, 3)

    bbox = timed("aoi", lambda: check_aoi(cfg.aoi, notes))
    if check_output:
        timed("output", lambda: check_out(cfg.out, storage_options))
    collections: tuple[str, ...] = tuple(cfg.collections)
    bands: Mapping[str, tuple[str, ...]] = {}
    if inputs:
        catalog = timed("catalog", lambda: check_catalog(cfg, notes))
        if bbox is not None:
            timed("search", lambda: check_scenes(cfg, catalog, bbox))
        # Last: loading a model imports torch, the slowest step of all.
        model = timed("model", lambda: check_model(cfg.model, model_loader))
        cfg = cfg.with_model_resolution(model.card.resolution_m)
        timed("bands", lambda: check_bands(cfg, tuple(model.card.bands), catalog))
        collections, bands = catalog.collections, catalog.bands
    log.debug("preflight passed in %s", seconds)
    return Preflight(cfg, bbox, collections, bands, tuple(notes), seconds)


# --------------------------------------------------------------------------- AOI


def check_aoi(aoi: str, notes: list[str] | None = None) -> Bbox | None:
    """The AOI box (None for an outlines file); raises :class:`PreflightError` naming the fix."""
    text = aoi.strip()
    if not text:
        raise PreflightError("--aoi is empty; give W,S,E,N in degrees (e.g. "
                             "-117.32,52.156,-117.232,52.21) or a path/URL of glacier outlines",
                             "aoi")
    if looks_like_bbox(text) or (text.count(",") == 3 and not Path(text).exists()):
        return _check_bbox(text, notes if notes is not None else [])
    check_outlines(text)
    return None


def _check_bbox(text: str, notes: list[str]) -> Bbox:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise PreflightError(f"--aoi {text!r} is not a box: expected four numbers W,S,E,N in "
                             "degrees, e.g. -117.32,52.156,-117.232,52.21", "aoi") from None
    if len(values) != 4:
        raise PreflightError(f"--aoi {text!r} has {len(values)} numbers; a box is four: W,S,E,N "
                             "in degrees (west, south, east, north)", "aoi")
    w, s, e, n = values
    if not (-180 <= w <= 180 and -180 <= e <= 180):
        raise PreflightError(f"--aoi {text!r}: longitudes must lie in -180..180 (W={w:g}, "
                             f"E={e:g}); the order is W,S,E,N", "aoi")
    if not (-90 <= s <= 90 and -90 <= n <= 90):
        raise PreflightError(f"--aoi {text!r}: latitudes must lie in -90..90 (S={s:g}, N={n:g}); "
                             "the order is W,S,E,N - were longitude and latitude swapped?", "aoi")
    if s >= n:
        raise PreflightError(f"--aoi {text!r}: south {s:g} is not below north {n:g}; the order is "
                             f"W,S,E,N, so write {w:g},{n:g},{e:g},{s:g}", "aoi")
    if w == e:
        raise PreflightError(f"--aoi {text!r}: west equals east, so the box has no width", "aoi")
    box = parse_bbox(values)
    if w > e:
        width = e + 360.0 - w
        notes.append(f"AOI {w:g},{s:g},{e:g},{n:g} has W > E: read as crossing the antimeridian "
                     f"({width:g}° wide); write W < E for a box that does not")
    if n >= 89.99 or s <= -89.99:
        notes.append(f"AOI reaches the {'north' if n >= 89.99 else 'south'} pole: tiles there are "
                     "cut on the polar stereographic grid")
    return box


def check_model(name: str, loader: ModelLoader | None = None) -> GlacierModel:
    """The loaded model; a missing, pickled or broken model becomes a :class:`PreflightError`.

    ``loader`` defaults to :func:`glacierscale.models.load_model`.
    """
    from glacierscale.models import PickleRefusedError, load_model

    try:
        return (loader or load_model)(name)
    except PickleRefusedError as exc:
        raise PreflightError(
            f"--model {name!r} is a pickled checkpoint, which glacierscale refuses to load "
            "(unpickling runs code from the file); convert it once with "
            "glacierscale.models.save_model(net, card, DIR) and pass the card it writes",
            "model") from exc
    except (ValueError, OSError, ImportError, KeyError) as exc:
        text = " ".join(str(exc).split())
        raise PreflightError(f"--model {name!r} cannot be loaded: {text}", "model") from exc


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class CatalogCheck:
    """The opened catalog: the collections a run reads and the bands each offers."""

    source: Any
    collections: tuple[str, ...]
    bands: Mapping[str, tuple[str, ...]]
    client: Any = None  # the pystac-client Client of a STAC API source
    offered: tuple[str, ...] = ()  # every collection of the catalog


def _catalog_collections(cfg: RunConfig
                         ) -> tuple[Any, list[str], Callable[[str], Any], Any]:
    """(source, collection ids on offer, sampler: collection -> one item or None, API client)."""
    from glacierscale.catalog import LocalSource, StacApiSource, open_catalog

    try:
        source = open_catalog(cfg.catalog)
    except (FileNotFoundError, ValueError, OSError) as exc:
        text = " ".join(str(exc).split())
        raise PreflightError(f"--catalog: {text}" if "catalog" in text
                             else f"--catalog {cfg.catalog!r}: {text}", "catalog") from exc
    if isinstance(source, LocalSource):
        firsts: dict[str, pystac.Item] = {}
        for item in source.items:
            firsts.setdefault(item.collection_id or "", item)
        if not source.items:
            raise PreflightError(f"--catalog {cfg.catalog!r} holds no STAC items; point it at a "
                                 "folder of item JSON files or an .ndjson/.parquet of items",
                                 "catalog")
        return source, sorted(firsts), firsts.get, None
    if isinstance(source, StacApiSource):
        client = _open_api(source.url, cfg.catalog)
        try:
            offered = sorted(c.id for c in client.get_collections())
        except Exception as exc:
            raise PreflightError(f"--catalog {cfg.catalog!r} does not list its collections "
                                 f"({type(exc).__name__}: {exc}); check the URL is a STAC API",
                                 "catalog") from exc

        def sample(collection: str) -> pystac.Item | None:
            search = client.search(collections=[collection], max_items=1, limit=1)
            return next(iter(search.items()), None)

        return source, offered, sample, client
    return source, list(cfg.collections), lambda _c: None, None


def _open_api(url: str, given: str) -> Any:
    from pystac_client import Client

    from glacierscale.catalog.sources import RetryingStacApiIO
    from glacierscale.core import faults

    full = faults.settings()
    # An API that answers with an error (throttled, briefly failing) is not a user error and
    # gets the run's patience. Nothing listening at all is most often a mistyped URL: asked
    # twice within a second, not for half a minute of backoff before the error names it.
    quick = full.model_copy(update={"search": full.search.model_copy(
        update={"attempts": min(2, full.search.attempts), "max_delay_s": 1.0})})
    io = RetryingStacApiIO(quick)
    try:
        try:
            client = Client.open(url, stac_io=io, timeout=io.timeout)
        except Exception as exc:
            if faults.is_unreachable(exc):
                raise
            io.settings = full
            client = Client.open(url, stac_io=io, timeout=io.timeout)
        io.settings = full
        return client
    except Exception as exc:
        raise PreflightError(f"--catalog {given!r}: the STAC API at {url} does not answer "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                             "check the URL and the network", "catalog") from exc


def _unknown_collections(wanted: Iterable[str], offered: Sequence[str], given: str,
                         option: str) -> None:
    for c in wanted:
        if c in offered:
            continue
        close = difflib.get_close_matches(c, offered, n=1, cutoff=0.6)
        guess = f"did you mean {close[0]!r}? " if close else ""
        shown = ", ".join(offered[:20]) + (" ..." if len(offered) > 20 else "")
        raise PreflightError(f"{option}: collection {c!r} is not in catalog {given!r}; {guess}"
                             f"it offers: {shown or 'nothing'}", "collections")


def check_catalog(cfg: RunConfig, notes: list[str] | None = None) -> CatalogCheck:
    """Open the catalog, check the collections; sample one item per collection for its bands."""
    from glacierscale.load import OPTICAL, resolve

    notes = notes if notes is not None else []
    source, offered, sample, client = _catalog_collections(cfg)
    _unknown_collections(cfg.collections, offered, cfg.catalog, "--collections")
    samples: dict[str, pystac.Item] = {}
    bands: dict[str, tuple[str, ...]] = {}
    optical: list[str] = []
    unmasked: list[str] = []
    for c in list(cfg.collections) or offered:
        try:
            item = sample(c)
        except Exception as exc:  # an API that fails on a one-item search will fail every tile
            raise PreflightError(f"--catalog {cfg.catalog!r}: a one-item search of {c!r} failed "
                                 f"({type(exc).__name__}: {exc}); check the catalog",
                                 "catalog") from exc
        resolved = resolve(item) if item is not None else None
        if resolved is not None and resolved.profile == "dem":
            continue  # a DEM collection: read for terrain bands, not searched by date
        optical.append(c)
        if item is None or resolved is None:
            continue
        samples[c] = item
        bands[c] = tuple(b for b in OPTICAL if b in resolved.bands)
        if resolved.mask is None:
            unmasked.append(c)
    if unmasked:
        notes.append(f"items of {', '.join(unmasked)} carry no cloud mask (SCL, QA_PIXEL or "
                     "Fmask): clouds there are not masked and can be mapped as ice")
    _check_requester_pays(samples)
    return CatalogCheck(source, tuple(optical), bands, client, tuple(offered))


def check_bands(cfg: RunConfig, model_bands: Sequence[str], catalog: CatalogCheck) -> None:
    """Every band the model needs is offered by a chosen collection (or derived from the DEM)."""
    from glacierscale.load import DEM_BANDS, OPTICAL

    if any(b in DEM_BANDS for b in model_bands):
        _unknown_collections(cfg.dem_collections, catalog.offered, cfg.catalog,
                             "dem_collections")
    bands = catalog.bands
    unknown = [b for b in model_bands if b not in OPTICAL and b not in DEM_BANDS]
    if unknown:
        raise PreflightError(
            f"--model {cfg.model!r} needs bands {unknown}, which glacierscale cannot load from "
            f"any collection (it loads {', '.join(OPTICAL + DEM_BANDS)}); use a model whose card "
            "lists those", "model")
    if not bands:
        return  # no sample item to judge by (an empty catalog is caught by the scene check)
    offered = {b for bs in bands.values() for b in bs}
    missing = [b for b in model_bands if b in OPTICAL and b not in offered]
    if missing:
        per = "; ".join(f"{c}: {', '.join(bs) or 'none'}" for c, bs in sorted(bands.items()))
        raise PreflightError(
            f"--model {cfg.model!r} needs bands {missing}, which no chosen collection offers "
            f"({per}); add a collection that has them or choose another model", "model")


def _check_requester_pays(samples: Mapping[str, pystac.Item]) -> None:
    if os.environ.get("AWS_REQUEST_PAYER", "").lower() == "requester":
        return
    for c, item in samples.items():
        for asset in item.assets.values():
            parts = urlsplit(asset.href)
            if parts.scheme == "s3" and parts.netloc in REQUESTER_PAYS_BUCKETS:
                raise PreflightError(
                    f"collection {c!r} reads s3://{parts.netloc}, a requester-pays bucket: set "
                    "AWS_REQUEST_PAYER=requester with AWS credentials (your account pays the "
                    "transfer), or take Landsat from --catalog planetary-computer (free)",
                    "collections")


def _window(cfg: RunConfig, bbox: Bbox, season_dates: Callable[[float, int], tuple[date, date]]
            ) -> tuple[date | None, date | None]:
    """The date window of the whole AOI: the run's dates, or the season windows of its rows."""
    if cfg.start or cfg.end:
        return cfg.start, cfg.end
    year = cfg.year or date.today().year - 1
    ends = [season_dates(lat, year) for lat in (bbox[1], bbox[3], 0.5 * (bbox[1] + bbox[3]))]
    return min(s for s, _ in ends), max(e for _, e in ends)


def check_scenes(cfg: RunConfig, catalog: CatalogCheck, bbox: Bbox) -> None:
    """At least one scene of the chosen collections lies over the box in the date window."""
    from glacierscale.catalog import season_dates

    start, end = _window(cfg, bbox, season_dates)
    # Every optical collection when none was chosen: a DEM tile is no scene to map.
    collections = list(cfg.collections) or list(catalog.collections)
    if catalog.client is not None:
        when = f"{start or '..'}/{end or '..'}" if start or end else None
        found = any(next(iter(catalog.client.search(
            bbox=list(part), datetime=when, collections=collections or None, max_items=1,
            limit=1).items()), None) is not None for part in split_bbox(bbox))
    else:
        found = bool(catalog.source.search(bbox, start, end, collections))
    if not found:
        where = ", ".join(cfg.collections) if cfg.collections else "any collection"
        raise PreflightError(
            f"no scenes in {where} of catalog {cfg.catalog!r} over --aoi {cfg.aoi} between "
            f"{start or '...'} and {end or '...'}; widen --start/--end, or check the AOI and "
            "--collections", "aoi")


# --------------------------------------------------------------------------- output


def check_out(out: str, storage_options: dict[str, Any] | None = None) -> None:
    """The output location takes a small probe object (written and removed)."""
    culprit = f"--out {out!r}"
    if not out.strip():
        raise PreflightError("--out is empty; give a folder or an s3://BUCKET/prefix URL", "out")
    parts = urlsplit(out)
    key = f".glacierscale-preflight-{uuid.uuid4().hex}"  # removed again at once
    try:
        if len(parts.scheme) <= 1 or parts.scheme == "file":
            _probe_local(Path(out.removeprefix("file://")).expanduser().absolute(), key, culprit)
        else:
            _probe_store(out, key, storage_options, culprit)
    except PreflightError:
        raise
    except Exception as exc:
        fix = "check the credentials and permissions" if isinstance(exc, PermissionError) \
            else "choose a writable --out"
        raise PreflightError(f"{culprit}: a probe write failed ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())[:160]}); {fix}", "out") from exc


def _probe_local(root: Path, key: str, culprit: str) -> None:
    # Plain files, no storage layer to import: a local --out is answered within a second.
    # The first existing ancestor decides: a regular file there means no folder can be made.
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise PreflightError(f"{culprit}: {probe} is a file, so no folder can be made under it; "
                             "choose another --out", "out")
    target = root / key
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.write_bytes(b"glacierscale preflight probe\n")
    finally:
        target.unlink(missing_ok=True)
        # Folders made only for the probe go too: a preflight leaves no trace.
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _probe_store(out: str, key: str, storage_options: dict[str, Any] | None,
                 culprit: str) -> None:
    from glacierscale.io.cloud import check_bucket
    from glacierscale.io.store import Store

    try:
        check_bucket(out, storage_options)
    except (OSError, ValueError, ImportError) as exc:  # missing bucket, denied, unreachable
        raise PreflightError(f"{culprit}: {' '.join(str(exc).split())}", "out") from exc
    store = Store(out, storage_options)
    store.write_bytes_atomic(key, b"glacierscale preflight probe\n")
    store.delete(key)


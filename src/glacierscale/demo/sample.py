"""The laptop demo's inputs: the real Athabasca Glacier sample as a local STAC catalog of COGs.

The sample rasters (HLS S30, HLS L30, Sentinel-2 L2A and a DEM, 30 m) are converted once into
Cloud-Optimized GeoTIFFs in the cache directory and described as STAC items, so the demo then runs
exactly the code path of an online run: catalog search -> lazy odc-stac load -> inference ->
outputs.
Without the sample data the demo uses the public Earth Search STAC API for the same box and window.

:class:`SampleCatalog` and :func:`build_once` (build a sample folder once, atomically, safe against
concurrent builders) serve every sample, the Everest training sample included.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import rasterio
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from glacierscale.catalog.index import raster_asset, raster_item

log = logging.getLogger(__name__)

#: Athabasca Glacier sample box (W, S, E, N degrees), a little inside the rasters' extent.
ATHABASCA_BBOX = (-117.32, 52.156, -117.232, 52.21)
ATHABASCA_WINDOW = (date(2020, 8, 1), date(2020, 9, 30))
EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"

# The catalog layout changes when this does; bump it to rebuild caches.
_SAMPLE_VERSION = "5"
# Written last into a built sample folder: its presence with the right version is what makes a
# cached sample trusted (a dot file, so item globs never see it).
_VERSION_MARKER = ".sample-version"



@dataclass(frozen=True)
class _Acquisition:
    folder: str
    collection: str
    platform: str
    day: date
    assets: dict[str, str]  # asset key -> file-name fragment


_ACQUISITIONS = (
    _Acquisition("hls_s30_2020-09-09", "HLSS30_2.0", "sentinel-2", date(2020, 9, 9),
                 {"B02": "_B02_", "B03": "_B03_", "B04": "_B04_", "B8A": "_B8A_",
                  "B11": "_B11_", "B12": "_B12_"}),
    _Acquisition("hls_l30_2020-08-16", "HLSL30_2.0", "landsat-8", date(2020, 8, 16),
                 {"B02": "_B02_", "B03": "_B03_", "B04": "_B04_", "B05": "_B05_",
                  "B06": "_B06_", "B07": "_B07_"}),
    _Acquisition("s2_2020-09-11", "sentinel-2-l2a", "sentinel-2a", date(2020, 9, 11),
                 {"blue": "_B02_", "green": "_B03_", "red": "_B04_", "nir08": "_B8A_",
                  "swir16": "_B11_", "swir22": "_B12_"}),
)


@dataclass(frozen=True)
class SampleCatalog:
    """A sample's STAC catalog and what to ask of it: box, time window, collections, reference.

    ``catalog`` is a folder of STAC item JSON (or a STAC API URL when the sample data is absent),
    ``reference`` the outlines that go with the scene, ``offline`` whether no network is needed.
    """

    catalog: str
    bbox: tuple[float, float, float, float]
    start: date
    end: date
    collections: tuple[str, ...]
    reference: str | None
    offline: bool


def build_once(dest: Path, version: str, build: Callable[[Path], None]) -> Path:
    """``dest`` as built by ``build`` for ``version``: reused if already there, else built now.

    ``build(folder)`` writes the whole sample into ``folder``, a temporary sibling of ``dest``
    (hrefs inside must point at ``dest``, where it will live). The folder gets a version marker
    and is renamed into place only when complete, so an interrupted or failed build never leaves
    a half sample that a later run would trust, and a folder with another version (or none) is
    rebuilt. Processes building the same ``dest`` at once all end with a complete one: the first
    to finish puts its folder in place and the others discard theirs.
    """
    if _is_current(dest, version):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=dest.parent))
    stale: Path | None = None
    try:
        build(tmp)
        (tmp / _VERSION_MARKER).write_text(version)
        stale = _move_into_place(tmp, dest, version)
    finally:
        # The loser of a race (or a failed build) still holds its folder: never leave it behind.
        for leftover in (tmp, stale):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return dest


def _is_current(dest: Path, version: str) -> bool:
    """Whether ``dest`` is a complete sample of ``version`` (its marker is written last)."""
    try:
        return (dest / _VERSION_MARKER).read_text() == version
    except OSError:
        return False


def _move_into_place(tmp: Path, dest: Path, version: str) -> Path | None:
    """Rename the complete ``tmp`` to ``dest`` unless another builder already put one there.

    Returns where a stale ``dest`` was set aside, for the caller to delete outside the lock. The
    check and the swap happen under one lock, so a current ``dest`` that a reader may be using is
    never moved away, and a stale one is renamed aside (never deleted in place).
    """
    with _swap_lock(dest.parent):
        if _is_current(dest, version):
            return None  # another builder won the race; its sample is as good as ours
        stale = None
        if dest.exists():
            stale = dest.with_name(f".stale-{dest.name}-{uuid.uuid4().hex}")
            dest.rename(stale)
        tmp.rename(dest)
        return stale


@contextmanager
def _swap_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (across processes and threads) while swapping in it.

    The lock is on the folder itself, so nothing is left behind; it is held only for a rename
    or two, never during a build. Windows has no ``flock``: there the swap is unguarded.
    """
    if sys.platform == "win32":
        yield
        return
    import fcntl  # POSIX only, hence here

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def athabasca_sample(data_dir: Path | None, cache: Path) -> SampleCatalog:
    """The demo's catalog: the local sample as COGs + STAC items, else Earth Search's API."""
    start, end = ATHABASCA_WINDOW
    if data_dir is None or not (data_dir / "athabasca").is_dir():
        log.warning("no sample data found (set GLACIERSCALE_SAMPLE_DATA); using %s", EARTH_SEARCH)
        return SampleCatalog(EARTH_SEARCH, ATHABASCA_BBOX, start, end, ("sentinel-2-l2a",),
                             None, offline=False)
    src = data_dir / "athabasca"
    catalog = build_catalog(src, cache / "samples" / f"athabasca-v{_SAMPLE_VERSION}")
    return SampleCatalog(str(catalog), ATHABASCA_BBOX, start, end,
                         tuple(a.collection for a in _ACQUISITIONS),
                         str(src / "athabasca_outline.shp"), offline=True)


def build_catalog(src: Path, dest: Path) -> Path:
    """Convert the sample rasters to COGs under ``dest`` and write one STAC item JSON each.

    Built once (see :func:`build_once`): a complete catalog of this layout version is reused.
    Returns the folder of item JSON files.
    """
    def build(tmp: Path) -> None:
        (tmp / "items").mkdir()
        for acq in _ACQUISITIONS:
            files = {key: _find(src / acq.folder, frag) for key, frag in acq.assets.items()}
            _write_item(tmp, dest, acq.folder, acq.collection, acq.platform, acq.day, files, 1e-4)
        _write_item(tmp, dest, "dem", "cop-dem-glo-30", "tandem-x", date(2021, 4, 22),
                    {"data": src / "dem.tif"}, None)
        log.info("building the sample STAC catalog for %s", dest / "items")

    return build_once(dest, _SAMPLE_VERSION, build) / "items"


def _find(folder: Path, fragment: str) -> Path:
    hits = sorted(p for p in folder.glob("*.tif") if fragment in p.name)
    if len(hits) != 1:
        raise FileNotFoundError(
            f"expected one raster matching *{fragment}* in {folder}, got {hits}")
    return hits[0]


def _write_item(root: Path, final_root: Path, item_id: str, collection: str, platform: str,
                day: date,
                files: dict[str, Path], scale: float | None) -> None:
    assets: dict[str, dict] = {}
    crs = bounds = None
    valid_fraction = 1.0
    for key, path in files.items():
        cog = root / "cogs" / item_id / f"{key}.tif"
        cog.parent.mkdir(parents=True, exist_ok=True)
        profile = cog_profiles.get("deflate")
        profile.update(blockxsize=256, blockysize=256, predictor=2)
        cog_translate(str(path), str(cog), profile, quiet=True, overview_resampling="nearest")
        with rasterio.open(cog) as ds:
            crs, bounds = ds.crs, ds.bounds
            if key in ("B04", "red"):
                arr = ds.read(1, masked=True)
                valid_fraction = float(1.0 - np.ma.getmaskarray(arr).mean())
            band: dict = {"nodata": ds.nodata}
            if scale is not None:
                band.update(scale=scale, offset=0.0)
            else:
                band["unit"] = "metre"
            # file:// URIs at the catalog's final place (it is built in a temporary folder): a
            # bare "/path" would resolve against an API's host once a STAC API serves the item.
            href = (final_root / "cogs" / item_id / f"{key}.tif").as_uri()
            assets[key] = raster_asset(ds, href, band=band, cog=True)
    assert bounds is not None, f"no rasters for {item_id}"
    props: dict = {"platform": platform, "proj:code": str(crs)}
    if scale is not None:
        # The sample carries no cloud mask asset: its gaps are the provider's masked clouds.
        props["eo:cloud_cover"] = round(100.0 * (1.0 - valid_fraction), 2)
    item = raster_item(
        item_id, collection, datetime(day.year, day.month, day.day, 18, 0, tzinfo=UTC), assets,
        crs, bounds, properties=props, eo=scale is not None,
        # STAC 1.1 wants a collection link wherever an item names its collection.
        links=[{"rel": "collection", "type": "application/json",
                "href": (final_root / "collections" / f"{collection}.json").as_uri()}])
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    (root / "items" / f"{item_id}.json").write_text(json.dumps(doc, indent=1))
    _write_collection(root, collection, list(item.bbox or []), doc["properties"]["datetime"])


def _write_collection(root: Path, collection: str, bbox: list[float], when: str) -> None:
    """A minimal STAC Collection beside the items (kept out of the items folder)."""
    path = root / "collections" / f"{collection}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "type": "Collection", "stac_version": "1.1.0", "id": collection,
        "description": f"{collection} rasters of the Athabasca Glacier sample, as COGs",
        "license": "other",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[when, when]]}},
        "links": [],
    }
    path.write_text(json.dumps(doc, indent=1))

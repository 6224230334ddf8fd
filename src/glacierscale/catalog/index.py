"""Describe local rasters as STAC items (``glacierscale catalog index DIR --out ITEMS``).

Rasters of one folder whose names differ only by a band token (``B02``, ``B8A``, ``SR_B5``,
``QA_PIXEL``, ``SCL``, ``Fmask``) become one item with one asset per band; any other raster becomes
an item of its own with a ``data`` asset. Only headers are read (no pixels). The sensor is guessed
from names (HLS ``S30``/``L30``, Landsat ``LC08``.., Sentinel-2), which sets the collection,
``eo:bands`` common names and the reflectance scale; ``--collection`` and ``--scale`` override.
Dates come from the names (``YYYY-MM-DD``, ``YYYYMMDD`` or ``YYYYDDD``), else from the TIFF
``DATETIME`` tag, else from the file time, and ``glacierscale:datetime_source`` says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pystac
from shapely.geometry import mapping

from glacierscale.core.footprint import raster_footprint

_RASTER_SUFFIXES = (".tif", ".tiff")
_TOKEN = re.compile(
    r"(?:^|[_.\-])(SR_B\d|ST_B\d+|QA_PIXEL|QA_RADSAT|SR_QA_AEROSOL|SCL|Fmask|B\d{1,2}A?)(?=[_.\-]|$)"
)
_PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"


@dataclass(frozen=True)
class Sensor:
    """What file names reveal about a product: its collection, bands and scaling."""

    collection: str
    platform: str
    common: dict[str, str]
    scale: float | None
    offset: float | None
    nodata: float | None


_S2_COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B8A": "nir08", "B11": "swir16",
              "B12": "swir22", "B08": "nir"}
_L30_COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B05": "nir08", "B06": "swir16",
               "B07": "swir22"}
_OLI_COMMON = {"SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir08",
               "SR_B6": "swir16", "SR_B7": "swir22"}
_TM_COMMON = {"SR_B1": "blue", "SR_B2": "green", "SR_B3": "red", "SR_B4": "nir08",
              "SR_B5": "swir16", "SR_B7": "swir22"}
_MASK_TOKENS = {"QA_PIXEL", "SCL", "Fmask"}


def guess_sensor(names: list[str]) -> Sensor | None:
    """The product behind a set of file/folder names, when they say so."""
    text = " ".join(names)
    if re.search(r"(^|[_.\-])S30([_.\-]|$)", text):
        return Sensor("HLSS30_2.0", "sentinel-2", _S2_COMMON, 1e-4, 0.0, -9999.0)
    if re.search(r"(^|[_.\-])L30([_.\-]|$)", text):
        return Sensor("HLSL30_2.0", "landsat-8", _L30_COMMON, 1e-4, 0.0, -9999.0)
    m = re.search(r"L[COTE]0([4-9])_", text)
    if m and "SR_B" in text:
        n = int(m.group(1))
        return Sensor("landsat-c2-l2", f"landsat-{n}", _OLI_COMMON if n >= 8 else _TM_COMMON,
                      2.75e-5, -0.2, 0.0)
    if re.search(r"(S2[AB]_|(^|[_/\-])s2[_\-]|sentinel-?2)", text, re.IGNORECASE):
        return Sensor("sentinel-2-l2a", "sentinel-2", _S2_COMMON, 1e-4, None, 0.0)
    return None


def _date_from(text: str) -> date | None:
    for m in re.finditer(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)", text):
        try:
            return date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            pass
    for m in re.finditer(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)", text):
        if 1970 <= int(m[1]) <= 2100:
            try:
                return date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                pass
    for m in re.finditer(r"(?<!\d)(\d{4})(\d{3})(?!\d)", text):
        if 1970 <= int(m[1]) <= 2100 and 1 <= int(m[2]) <= 366:
            return date(int(m[1]), 1, 1) + timedelta(days=int(m[2]) - 1)
    return None


def _when(paths: list[Path], header_tag: str | None) -> tuple[datetime, str]:
    for p in paths:
        d = _date_from(f"{p.parent.name}/{p.stem}")
        if d:
            return datetime(d.year, d.month, d.day, tzinfo=UTC), "filename"
    if header_tag:
        try:
            return (datetime.strptime(header_tag, "%Y:%m:%d %H:%M:%S")
                    .replace(tzinfo=UTC), "tiff-tag")
        except ValueError:
            pass
    mtime = max(p.stat().st_mtime for p in paths)
    return datetime.fromtimestamp(int(mtime), tz=UTC), "file-time"


def _geojson(geom: Any) -> dict[str, Any]:
    """GeoJSON with lists, not tuples (JSON Schema validators reject tuples as arrays)."""
    return dict(json.loads(json.dumps(mapping(geom))))


def raster_asset(ds: Any, href: str, *, band: dict[str, Any] | None = None,
                 roles: Sequence[str] = ("data",), cog: bool | None = None) -> dict[str, Any]:
    """The STAC asset of one open rasterio dataset: type, roles, projection and ``raster:bands``.

    ``band`` adds to (or overrides) the band's ``data_type`` and ``nodata`` read from the header;
    ``cog`` says whether to claim the cloud-optimized profile (default: tiled with overviews).
    """
    is_cog = (bool(ds.profile.get("tiled") and ds.overviews(1)) if cog is None else cog)
    t = ds.transform
    header: dict[str, Any] = {"data_type": ds.dtypes[0]}
    if ds.nodata is not None:
        header["nodata"] = ds.nodata
    return {"href": href,
            "type": "image/tiff; application=geotiff" + ("; profile=cloud-optimized"
                                                          if is_cog else ""),
            "roles": list(roles), "proj:code": ds.crs.to_string(),
            "proj:shape": [ds.height, ds.width],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "raster:bands": [{**header, **(band or {})}]}


def raster_item(item_id: str, collection: str, when: datetime, assets: dict[str, dict[str, Any]],
                crs: Any, bounds: Sequence[float], *, properties: dict[str, Any] | None = None,
                eo: bool = False, links: Sequence[dict[str, Any]] = ()) -> pystac.Item:
    """A STAC 1.1 item (projection + raster, optionally eo) of rasters sharing one grid.

    The one place glacierscale builds items from rasters: the local indexer, the demo's sample
    catalog and the test fixtures all come here. (rio-stac does the same job but reads pixel
    statistics and knows nothing of the sensor defaults and date sources used here, so this
    stays a few lines of our own.) The footprint is densified and split at the antimeridian.
    """
    geom, bbox = raster_footprint(crs, bounds)
    props = {"datetime": when.isoformat().replace("+00:00", "Z"), **(properties or {})}
    doc = {"type": "Feature", "stac_version": "1.1.0",
           "stac_extensions": [_PROJ_EXT, _RASTER_EXT] + ([_EO_EXT] if eo else []),
           "id": item_id, "collection": collection, "geometry": _geojson(geom), "bbox": bbox,
           "properties": props, "assets": assets, "links": list(links)}
    return pystac.Item.from_dict(doc, preserve_dict=False)


def _groups(root: Path) -> list[tuple[str, dict[str, Path]]]:
    """(item id, asset key -> file) for every item the rasters under ``root`` make."""
    out: list[tuple[str, dict[str, Path]]] = []
    by_dir: dict[Path, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in _RASTER_SUFFIXES:
            by_dir.setdefault(p.parent, []).append(p)
    for folder, files in by_dir.items():
        tokens = {p: _TOKEN.search(p.stem) for p in files}
        rests = {p: p.stem.replace(m.group(1), "", 1) if m else None for p, m in tokens.items()}
        keys = [m.group(1) for m in tokens.values() if m]
        if (len(files) > 1 and all(tokens.values()) and len(set(rests.values())) == 1
                and len(set(keys)) == len(keys)):
            item_id = folder.name if folder != root else next(iter(rests.values())) or "item"
            out.append((item_id.strip("_-."), {m.group(1): p for p, m in tokens.items() if m}))
        else:
            out += [(p.stem, {"data": p}) for p in files]
    return out


def describe_rasters(
    root: str | Path, *, collection: str | None = None, scale: float | None = None,
    offset: float | None = None,
) -> list[pystac.Item]:
    """STAC items (1.1, projection + raster + eo extensions) for the rasters under ``root``."""
    import rasterio

    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of rasters")
    items = []
    for item_id, files in _groups(root):
        sensor = guess_sensor([item_id, *(p.name for p in files.values())])
        is_dem = list(files) == ["data"] and re.search(r"dem|dsm|elev", item_id, re.I)
        assets: dict[str, dict[str, Any]] = {}
        tag = None
        crs = bounds = None
        for key, path in files.items():
            with rasterio.open(path) as ds:
                if ds.crs is None:
                    raise ValueError(f"{path} has no CRS; assign one (e.g. rio edit-info --crs)")
                crs, bounds = ds.crs, ds.bounds
                tag = tag or ds.tags().get("TIFFTAG_DATETIME")
                band: dict[str, Any] = {}
                if ds.nodata is None and sensor and key not in _MASK_TOKENS \
                        and sensor.nodata is not None:
                    band["nodata"] = sensor.nodata
                sc = scale if scale is not None else (sensor.scale if sensor else None)
                off = offset if offset is not None else (sensor.offset if sensor else None)
                if sc is not None and key not in _MASK_TOKENS and not is_dem:
                    band["scale"] = sc
                    if off is not None:
                        band["offset"] = off
                asset = raster_asset(ds, str(path), band=band,
                                     roles=["cloud"] if key in _MASK_TOKENS else ["data"])
                common = sensor.common.get(key) if sensor else None
                if common:
                    asset["eo:bands"] = [{"name": key, "common_name": common}]
                assets[key] = asset
        when, source = _when(list(files.values()), tag)
        coll = collection or ("dem" if is_dem else (sensor.collection if sensor else "local"))
        props: dict[str, Any] = {"glacierscale:datetime_source": source, "proj:code": str(crs)}
        if sensor and not is_dem:
            props["platform"] = sensor.platform
        assert bounds is not None  # every group holds at least one raster
        items.append(raster_item(item_id, coll, when, assets, crs, bounds, properties=props,
                                 eo=True))
    if not items:
        raise FileNotFoundError(f"no .tif/.tiff rasters under {root}")
    return items


def _collection_doc(coll: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [d for d in docs if d.get("collection") == coll]
    boxes = [d["bbox"] for d in mine if d.get("bbox")]
    times = sorted(str(d["properties"].get("datetime") or d["properties"].get("start_datetime"))
                   for d in mine)
    spatial = ([[min(b[0] for b in boxes), min(b[1] for b in boxes),
                 max(b[2] for b in boxes), max(b[3] for b in boxes)]] if boxes
               else [[-180, -90, 180, 90]])
    interval = [[times[0], times[-1]] if times else [None, None]]
    return {"type": "Collection", "stac_version": "1.1.0", "id": coll,
            "description": f"{coll}: local rasters indexed by glacierscale", "license": "other",
            "extent": {"spatial": {"bbox": spatial}, "temporal": {"interval": interval}},
            "links": []}


def write_items(items: list[pystac.Item], out: str | Path) -> Path:
    """Write items as a folder of JSON files, one ``.ndjson`` or a stac-geoparquet file.

    A minimal STAC Collection document per collection is written beside them (``collections/``
    inside a folder output, ``<name>.collections/`` next to a file) and linked from each item,
    as STAC 1.1 requires of items that name a collection. Everything is staged beside the target
    and renamed into place, so a reader never sees half a catalog.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    docs = [i.to_dict(include_self_link=False, transform_hrefs=False) for i in items]
    suffix = out.suffix.lower()
    is_file = suffix in (".ndjson", ".jsonl", ".parquet", ".geoparquet")
    coll_dir = out.parent / f"{out.stem}.collections" if is_file else out / "collections"
    for d in docs:
        if d.get("collection"):
            d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") != "collection"] + [
                {"rel": "collection", "type": "application/json",
                 "href": str(coll_dir / f"{d['collection']}.json")}]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged_colls = tmp / "collections"
        staged_colls.mkdir()
        for coll in sorted({str(d["collection"]) for d in docs if d.get("collection")}):
            (staged_colls / f"{coll}.json").write_text(
                json.dumps(_collection_doc(coll, docs), indent=1))
        if suffix in (".ndjson", ".jsonl"):
            staged = tmp / out.name
            staged.write_text("".join(json.dumps(d) + "\n" for d in docs))
        elif suffix in (".parquet", ".geoparquet"):
            import rustac

            staged = tmp / out.name
            rustac.write_sync(str(staged), {"type": "FeatureCollection", "features": docs})
        else:
            staged = tmp / "items"
            staged.mkdir()
            for d in docs:
                (staged / f"{d['id']}.json").write_text(json.dumps(d, indent=1))
            os.replace(staged_colls, staged / "collections")
        if is_file:
            if coll_dir.is_dir():
                shutil.rmtree(coll_dir)
            os.replace(staged_colls, coll_dir)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(staged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

"""STAC metadata of the outputs: one Item per tile, one Collection per run.

Items use relative links and asset hrefs (``./glacier_prob.tif``, ``../../collection.json``), so a
run folder can be copied or moved between buckets and still opens in QGIS, titiler or odc-stac.
Provenance (input item ids, model, weights hash, software version, run id) sits in the item
properties under the ``glacierscale:`` prefix, together with a token of the tile's inputs and model:
a rerun skips a tile only when that token and the recorded asset sizes still match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pystac
import shapely
from affine import Affine
from pyproj import Transformer
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from glacierscale.core.footprint import polygon_to_lonlat
from glacierscale.io.store import Store, redact

COLLECTION_ID = "glacierscale-outputs"
COLLECTION_KEY = "collection.json"
PREFIX = "glacierscale"
#: Output file names per asset, fixed by the output layout.
ASSET_FILES = {"prob": "glacier_prob.tif", "mask": "glacier_mask.tif",
               "uncertainty": "glacier_uncertainty.tif", "outlines": "outlines.parquet"}
_ASSET_DEFAULTS: dict[str, dict[str, Any]] = {
    "prob": {"title": "Glacier probability (percent)", "media_type": pystac.MediaType.COG,
             "roles": ["data"], "bands": {"nodata": 255, "data_type": "uint8", "scale": 0.01,
                                          "unit": "1"}},
    "mask": {"title": "Glacier mask (1 glacier, 0 not glacier)", "media_type": pystac.MediaType.COG,
             "roles": ["data"], "bands": {"nodata": 255, "data_type": "uint8"}},
    "uncertainty": {"title": "Glacier probability uncertainty (standard deviation)",
                    "media_type": pystac.MediaType.COG, "roles": ["data"],
                    "bands": {"nodata": "nan", "data_type": "float32"}},
    "outlines": {"title": "Vectorized glacier outlines of the tile core (tile CRS)",
                 "media_type": "application/vnd.apache.parquet", "roles": ["data"]},
}


@dataclass(frozen=True)
class Provenance:
    """Where a tile's outputs come from; recorded in COG tags and STAC properties."""

    input_ids: tuple[str, ...]
    model: str
    weights_hash: str = "none"
    version: str = "unknown"
    run_id: str = ""
    config_token: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def token(self, tile_id: str) -> str:
        """Short hash of tile id, input items, model and settings: what the outputs depend on.

        The run id and software version are left out on purpose, so a resumed or re-launched run
        skips tiles whose inputs and model did not change.
        """
        blob = json.dumps([tile_id, sorted(self.input_ids), self.model, self.weights_hash,
                           self.config_token], separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def tags(self, tile_id: str) -> dict[str, str]:
        """Provenance as GeoTIFF metadata tags (strings)."""
        tags = {"GLACIERSCALE_TILE_ID": tile_id,
                "GLACIERSCALE_INPUT_ITEMS": ",".join(self.input_ids),
                "GLACIERSCALE_MODEL": self.model, "GLACIERSCALE_WEIGHTS_SHA256": self.weights_hash,
                "GLACIERSCALE_VERSION": self.version, "GLACIERSCALE_RUN_ID": self.run_id,
                "GLACIERSCALE_TOKEN": self.token(tile_id)}
        tags |= {f"GLACIERSCALE_{k.upper()}": str(v) for k, v in self.extra.items()}
        return {k: redact(v) for k, v in tags.items()}

    def properties(self, tile_id: str) -> dict[str, Any]:
        """Provenance as STAC item properties."""
        props: dict[str, Any] = {
            f"{PREFIX}:input_items": list(self.input_ids), f"{PREFIX}:model": self.model,
            f"{PREFIX}:weights_sha256": self.weights_hash, f"{PREFIX}:version": self.version,
            f"{PREFIX}:run_id": self.run_id, f"{PREFIX}:token": self.token(tile_id)}
        if self.config_token:
            props[f"{PREFIX}:config_token"] = self.config_token
        props |= {f"{PREFIX}:{k}": v for k, v in self.extra.items()}
        return {k: redact(v) if isinstance(v, str) else v for k, v in props.items()}


def footprint_lonlat(crs: str, transform: Affine, shape_hw: tuple[int, int],
                     geometry: Any | None = None) -> Any:
    """Lon/lat polygon of a grid's extent (or of ``geometry`` in ``crs``), densified edges."""
    h, w = shape_hw
    if geometry is None:
        x0, y0 = transform @ (0, 0)
        x1, y1 = transform @ (w, h)
        geometry = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    step = abs(transform.a) * max(h, w) / 16.0
    geometry = geometry.segmentize(step) if step > 0 else geometry
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    ll = shp_transform(to_ll.transform, geometry)
    if ll.bounds[2] - ll.bounds[0] <= 180.0:
        return ll
    # Across the antimeridian or round a pole the transformed ring jumps by 360°: split it at
    # ±180 / close it along the pole, as every other footprint (core.footprint).
    return shapely.union_all([polygon_to_lonlat(p) for p in shapely.get_parts(ll)])


def _asset(name: str, value: str | pystac.Asset,
           sizes: Mapping[str, tuple[int, str]]) -> pystac.Asset:
    if isinstance(value, pystac.Asset):
        return value
    d = _ASSET_DEFAULTS.get(name, {"media_type": None, "roles": ["data"]})
    extra: dict[str, Any] = {}
    if "bands" in d:
        band = dict(d["bands"])
        extra["raster:bands"] = [band]
    if name in sizes:
        size, checksum = sizes[name]
        extra["file:size"] = int(size)
        extra["file:checksum"] = checksum
    return pystac.Asset(value, title=d.get("title"), media_type=d.get("media_type"),
                        roles=list(d.get("roles", ["data"])), extra_fields=extra)


def tile_item(tile_id: str, *, crs: str, transform: Affine, shape: tuple[int, int],
              provenance: Provenance, datetime_: datetime | None = None,
              start_datetime: datetime | None = None, end_datetime: datetime | None = None,
              assets: Mapping[str, str | pystac.Asset] | None = None,
              asset_sizes: Mapping[str, tuple[int, str]] | None = None,
              geometry: Any | None = None, collection_id: str = COLLECTION_ID) -> pystac.Item:
    """A STAC Item describing one tile's outputs and their inputs.

    ``assets`` maps asset names (prob, mask, uncertainty, outlines, ...) to hrefs relative to the
    item (default: prob, mask and outlines under their layout names) or to ready pystac Assets.
    ``asset_sizes`` adds ``file:size``/``file:checksum`` (multihash sha2-256) per asset; a rerun
    compares them before skipping. ``geometry`` (tile CRS) narrows the footprint to valid data.
    The projection extension carries ``proj:code``, ``proj:shape``, ``proj:transform`` and
    ``proj:bbox`` of the core grid, so odc-stac loads the assets without opening them.
    """
    if datetime_ is None and (start_datetime is None or end_datetime is None):
        raise ValueError("a tile item needs datetime_ or both start_datetime and end_datetime")
    geom_ll = footprint_lonlat(crs, transform, shape, geometry)
    props: dict[str, Any] = provenance.properties(tile_id)
    if start_datetime is not None and end_datetime is not None:
        props["start_datetime"] = _iso(start_datetime)
        props["end_datetime"] = _iso(end_datetime)
    props["created"] = _iso(datetime.now(UTC))
    item = pystac.Item(id=tile_id, geometry=mapping(geom_ll),
                       bbox=[round(v, 8) for v in geom_ll.bounds],
                       datetime=_utc(datetime_) if datetime_ else None, properties=props,
                       collection=None)
    item.collection_id = collection_id
    sizes = asset_sizes or {}
    for name, value in (assets or {k: f"./{ASSET_FILES[k]}" for k in ("prob", "mask",
                                                                        "outlines")}).items():
        item.add_asset(name, _asset(name, value, sizes))
    h, w = shape
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (w, h)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(code=crs, shape=[int(h), int(w)], transform=[float(v) for v in list(transform)[:6]],
               bbox=[min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])
    _add_ext(item, "https://stac-extensions.github.io/raster/v1.1.0/schema.json")
    _add_ext(item, "https://stac-extensions.github.io/file/v2.1.0/schema.json")
    item.add_link(pystac.Link("collection", f"../../{COLLECTION_KEY}",
                              media_type=pystac.MediaType.JSON))
    item.add_link(pystac.Link("parent", f"../../{COLLECTION_KEY}",
                              media_type=pystac.MediaType.JSON))
    return item


def _add_ext(item: pystac.Item, uri: str) -> None:
    if uri not in item.stac_extensions:
        item.stac_extensions.append(uri)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso(dt: datetime) -> str:
    return _utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def item_to_bytes(item: pystac.Item) -> bytes:
    """Serialized item with relative links and no self link (portable between buckets)."""
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    return json.dumps(d, indent=1, default=str).encode()


def sha256_multihash(data: bytes) -> str:
    """``file:checksum`` value: multihash of sha2-256 (0x12, 32 bytes)."""
    return "1220" + hashlib.sha256(data).hexdigest()


def read_items(store: Store, prefix: str = "tiles/") -> list[pystac.Item]:
    """All tile items under ``prefix``, with their self hrefs set so assets resolve."""
    items = []
    for key in store.list(prefix):
        if key.endswith("/item.json"):
            d = json.loads(store.read_bytes(key))
            items.append(pystac.Item.from_dict(d, href=store.url(key), migrate=True))
    return items


def write_collection(store: Store, items: Sequence[pystac.Item], *,
                     collection_id: str = COLLECTION_ID,
                     description: str = "Glacier probability, masks and outlines per tile, "
                                        "mapped by glacierscale.",
                     license: str = "other", key: str = COLLECTION_KEY) -> str:
    """Write the run's STAC Collection (extent from ``items``, relative links to each item)."""
    if not items:
        spatial = pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]])
        temporal = pystac.TemporalExtent([[datetime.now(UTC), None]])
    else:
        b = np.array([it.bbox for it in items if it.bbox], dtype=float)
        spatial = pystac.SpatialExtent([[float(b[:, 0].min()), float(b[:, 1].min()),
                                         float(b[:, 2].max()), float(b[:, 3].max())]])
        times = [t for it in items for t in _item_times(it)]
        temporal = pystac.TemporalExtent([[min(times), max(times)]])
    coll = pystac.Collection(id=collection_id, description=description,
                             extent=pystac.Extent(spatial, temporal), license=license,
                             title="glacierscale outputs")
    coll.stac_extensions = ["https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/file/v2.1.0/schema.json"]
    coll.summaries = pystac.Summaries({"proj:code": sorted({str(it.properties.get("proj:code"))
                                                             for it in items})})
    links = [pystac.Link("item", f"./tiles/{it.id}/item.json", media_type=pystac.MediaType.JSON)
             for it in sorted(items, key=lambda i: i.id)]
    for link in links:
        coll.add_link(link)
    d = coll.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [ln for ln in d["links"] if ln.get("rel") != "root"]
    return store.write_bytes_atomic(key, json.dumps(d, indent=1).encode())


def _item_times(item: pystac.Item) -> list[datetime]:
    out = [item.datetime] if item.datetime else []
    for k in ("start_datetime", "end_datetime"):
        v = item.properties.get(k)
        if v:
            out.append(datetime.fromisoformat(str(v).replace("Z", "+00:00")))
    return [_utc(t) for t in out]


def validate_core(d: Mapping[str, Any]) -> None:
    """Validate a STAC Item or Collection dict against pystac's bundled core schemas (offline).

    Raises ``pystac.errors.STACValidationError`` with the schema's message when invalid.
    """
    from pystac.validation import RegisteredValidator

    data = dict(d)
    if data.get("stac_version") != pystac.get_stac_version():
        # Older documents are migrated as readers would; current ones are checked verbatim.
        data = pystac.read_dict(data).to_dict(include_self_link=False, transform_hrefs=False)
    kind = (pystac.STACObjectType.COLLECTION if data.get("type") == "Collection"
            else pystac.STACObjectType.ITEM)
    RegisteredValidator.get_validator().validate_core(data, kind, data["stac_version"])


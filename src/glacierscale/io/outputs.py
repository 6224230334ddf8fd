"""A tile's outputs under ``tiles/<tile_id>/``: COGs, outlines and the STAC item, in that order.

The item is written last and lists every asset with its size and checksum, so it doubles as the
tile's commit record: a tile is complete exactly when its item exists, carries the expected token
(tile id + inputs + model) and every listed asset exists with the recorded size. ``tile_complete``
checks that, which is what a rerun uses to skip finished tiles.

A tile is written again only when it is not complete, often because its writer was killed: before
writing, the temporary objects that dead writers left for this tile are removed
(:meth:`Store.clean_tmp`, which never touches an upload still in flight), and an output the killed
writer had already published is not written again when it holds the very bytes this attempt made
(outputs are deterministic), so every object of a tile is written once.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
from shapely.geometry import shape as shp_shape

from glacierscale.core.redact import redact
from glacierscale.core.tiles import TileSpec
from glacierscale.io.cog import build_cog
from glacierscale.io.stac import (
    ASSET_FILES,
    PREFIX,
    Provenance,
    item_to_bytes,
    sha256_multihash,
    tile_item,
)
from glacierscale.io.store import Store
from glacierscale.io.vector import geoparquet_bytes

log = logging.getLogger(__name__)

NODATA_U8 = 255


def tile_key(tile_id: str, name: str) -> str:
    """Key of a tile's output relative to the run root, e.g. ``tiles/<id>/glacier_mask.tif``."""
    return f"tiles/{tile_id}/{name}"


def _core(arr: np.ndarray | None, tile: TileSpec, what: str) -> np.ndarray | None:
    """The tile core of ``arr``: accepted as core-sized or halo'd (then cut)."""
    return None if arr is None else _core_of(arr, tile, what)


def _core_of(arr: np.ndarray, tile: TileSpec, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape == (tile.size_px, tile.size_px):
        return arr
    if arr.shape == tile.shape:
        return arr[tile.core_slice]
    raise ValueError(f"{what} has shape {arr.shape}; expected the core {(tile.size_px,) * 2} "
                     f"or core plus halo {tile.shape} of tile {tile.tile_id}")


def encode_prob(prob: np.ndarray) -> np.ndarray:
    """Probability 0..1 (NaN = no data) -> uint8 percent 0..100 with 255 as nodata."""
    valid = np.isfinite(prob)
    pct = np.round(np.clip(np.nan_to_num(prob), 0.0, 1.0) * 100.0)
    return np.where(valid, pct, NODATA_U8).astype("uint8")


def encode_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Probability -> uint8 mask: 1 glacier, 0 not glacier, 255 no data."""
    valid = np.isfinite(prob)
    return np.where(valid, np.nan_to_num(prob) >= threshold, NODATA_U8).astype("uint8")


def _valid_geometry(valid: np.ndarray, tile: TileSpec):  # type: ignore[no-untyped-def]
    if valid.all():
        return None
    from rasterio.features import shapes
    from shapely.ops import unary_union

    parts = [shp_shape(g) for g, v in shapes(valid.astype("uint8"), mask=valid,
                                             transform=tile.core_transform) if v == 1]
    return unary_union(parts).simplify(2 * tile.resolution) if parts else None


def write_tile_outputs(store: Store, tile: TileSpec, prob: np.ndarray, *,
                       provenance: Provenance, when: datetime,
                       uncertainty: np.ndarray | None = None, mask: np.ndarray | None = None,
                       outlines: gpd.GeoDataFrame | None = None, threshold: float = 0.5,
                       end: datetime | None = None,
                       properties: Mapping[str, Any] | None = None) -> pystac.Item:
    """Write a tile's COGs, outlines and STAC item (last); returns the item.

    ``prob`` is float 0..1 with NaN for no data, ``uncertainty`` float (standard deviation),
    ``mask`` uint8 1/0/255 (derived from ``prob >= threshold`` if not given); each may be the core
    or the halo'd array: only the core is written. ``when`` (and ``end`` for a composite over a
    period) dates the item. ``outlines`` are the tile's vectorized polygons in the tile CRS.
    ``properties`` are added to the item (e.g. how its scenes were chosen).
    """
    p = _core_of(np.asarray(prob, dtype="float32"), tile, "prob")
    m = _core(mask, tile, "mask")
    m = encode_mask(p, threshold) if m is None else m.astype("uint8")
    u = _core(uncertainty, tile, "uncertainty")
    tags = provenance.tags(tile.tile_id)
    _clean_leftovers(store, tile.tile_id)
    # Outputs of an interrupted attempt at this tile (one listing; empty the first time).
    earlier = set(store.list(tile_key(tile.tile_id, "")))
    sizes: dict[str, tuple[int, str]] = {}
    with tempfile.TemporaryDirectory(prefix="glacierscale-tile-") as tmp:

        def put_cog(name: str, data: np.ndarray, nodata: float, desc: str, resampling: str) -> None:
            local = build_cog(Path(tmp) / ASSET_FILES[name], data, transform=tile.core_transform,
                              crs=tile.crs, nodata=nodata, tags=tags, descriptions=[desc],
                              overview_resampling=resampling)
            blob = local.read_bytes()
            key = tile_key(tile.tile_id, ASSET_FILES[name])
            if not _holds(store, key, blob, earlier):
                store.put_file_atomic(local, key)
            sizes[name] = (len(blob), sha256_multihash(blob))

        put_cog("prob", encode_prob(p), NODATA_U8, "glacier probability (percent)", "average")
        put_cog("mask", m, NODATA_U8, "glacier mask (1 glacier, 0 not glacier)", "mode")
        if u is not None:
            put_cog("uncertainty", np.where(np.isfinite(p), u, np.nan).astype("float32"),
                    float("nan"), "glacier probability standard deviation", "average")
    if outlines is not None:
        blob = geoparquet_bytes(outlines)
        key = tile_key(tile.tile_id, ASSET_FILES["outlines"])
        if not _holds(store, key, blob, earlier):
            store.write_bytes_atomic(key, blob)
        sizes["outlines"] = (len(blob), sha256_multihash(blob))
    written = {k: ASSET_FILES[k] for k in sizes}
    item = tile_item(tile.tile_id, crs=tile.crs, transform=tile.core_transform,
                     shape=(tile.size_px, tile.size_px), provenance=provenance,
                     datetime_=None if end else when, start_datetime=when if end else None,
                     end_datetime=end, assets={k: f"./{v}" for k, v in written.items()},
                     asset_sizes=sizes, geometry=_valid_geometry(np.isfinite(p), tile))
    item.properties[f"{PREFIX}:glacier_fraction"] = round(float((m == 1).mean()), 6)
    item.properties.update(properties or {})
    store.write_bytes_atomic(tile_key(tile.tile_id, "item.json"), item_to_bytes(item))
    log.info("tile %s written (%s)", tile.tile_id, ", ".join(written))
    return item


def _holds(store: Store, key: str, blob: bytes, earlier: set[str]) -> bool:
    """Whether ``key`` (listed in ``earlier``) already holds exactly ``blob``: published by an
    attempt at this tile that was killed before its item. Read back only when sizes agree."""
    if key not in earlier:
        return False
    try:
        return store.size(key) == len(blob) and store.read_bytes(key) == blob
    except FileNotFoundError:
        return False


def _clean_leftovers(store: Store, tile_id: str) -> None:
    """Remove this tile's temporary objects left by killed writers. Best effort: a leftover is
    hidden from listings and harmless, so failing to remove it must not fail the tile."""
    try:
        store.clean_tmp(prefix=tile_key(tile_id, ""))
    except Exception as exc:
        log.warning("tile %s: could not remove temporary objects of killed writers: %s",
                    tile_id, redact(str(exc)))


def tile_complete(store: Store, tile_id: str, token: str | None = None) -> bool:
    """True if the tile's item exists, matches ``token`` (if given) and all its assets are intact.

    Intact means: present with the size recorded in the item (``file:size``). Anything else
    (missing item, other inputs or model, a missing or truncated asset) means "redo the tile".
    """
    key = tile_key(tile_id, "item.json")
    try:
        record = json.loads(store.read_bytes(key))
    except (FileNotFoundError, ValueError):
        return False
    if token is not None and record.get("properties", {}).get(f"{PREFIX}:token") != token:
        return False
    for asset in record.get("assets", {}).values():
        href = str(asset.get("href", ""))
        if "://" in href or href.startswith("/"):
            continue  # an absolute href points outside the run; not ours to check
        asset_key = tile_key(tile_id, str(Path(href).as_posix()).removeprefix("./"))
        try:
            size = store.size(asset_key)
        except FileNotFoundError:
            return False
        if "file:size" in asset and int(asset["file:size"]) != size:
            return False
    return True

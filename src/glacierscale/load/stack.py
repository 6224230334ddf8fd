"""Items + tile -> one lazy, cloud-free, harmonised ``(y, x)`` Dataset on the tile's halo'd grid.

The tour of :func:`load_tile`:

1. harmonise: every item's assets are mapped to common bands with their scale and offset
   (:mod:`glacierscale.load.bands`);
2. group: items with the same asset layout are read together, and items of one acquisition
   (same collection, same solar day) fuse into one time slice, so granules split across MGRS
   tiles, WRS rows or UTM zones fill the tile together;
3. read lazily with the chosen loader onto the tile GeoBox, chunks aligned with the tile;
4. mask clouds with each sensor's quality band; a pixel is valid where it is clear and every
   band was read;
5. composite over time (median of valid observations, or the best-ranked valid one) and count
   the valid observations per pixel;
6. add the DEM and its derivatives, computed one pixel beyond the halo.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import dask.array as da
import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from glacierscale.core.grid import tile_geobox
from glacierscale.core.tiles import TileSpec
from glacierscale.load.backends import Loader, get_loader
from glacierscale.load.bands import DEM_BANDS, OPTICAL, ItemBands, is_dem_item, resolve
from glacierscale.load.composite import composite as make_composite
from glacierscale.load.dem import derive
from glacierscale.load.env import configure_cloud_reads
from glacierscale.load.masks import clear_mask

log = logging.getLogger(__name__)

#: Tiles up to this many pixels a side are one Dask chunk per band; larger areas use 1024 px.
SINGLE_CHUNK_MAX_PX = 2048
CHUNK_PX = 1024


class MissingBandError(ValueError):
    """A requested band is in none of the items; the message names the band and the fix."""


def _shape(geobox: GeoBox) -> tuple[int, int]:
    return (int(geobox.shape[0]), int(geobox.shape[1]))


def _chunks(shape: tuple[int, int], chunk_px: int | None) -> tuple[int, int]:
    shape = (int(shape[0]), int(shape[1]))
    if chunk_px is not None:
        return (min(chunk_px, shape[0]), min(chunk_px, shape[1]))
    if max(shape) <= SINGLE_CHUNK_MAX_PX:
        return shape
    return (min(CHUNK_PX, shape[0]), min(CHUNK_PX, shape[1]))


def _when(item: pystac.Item) -> datetime:
    when = item.datetime or pystac.utils.str_to_datetime(
        str(item.properties.get("start_datetime", "1970-01-01T00:00:00Z")))
    return when


def _solar_day(item: pystac.Item) -> str:
    """Local solar date of an acquisition: UTC shifted by the scene's longitude."""
    lon = 0.0
    if item.bbox:
        w, _, e, _ = item.bbox[:4] if len(item.bbox) == 4 else (*item.bbox[:2], *item.bbox[3:5])
        lon = (w + e) / 2.0 if w <= e else ((w + e + 360.0) / 2.0 + 180.0) % 360.0 - 180.0
    return (_when(item) + timedelta(hours=lon / 15.0)).date().isoformat()


def _scale_block(raw: np.ndarray, scale: float, offset: float,
                 nodata: float | None) -> np.ndarray:
    """DN -> physical units in one pass; NaN where a source without a nodata tag holds the
    item's declared nodata value (sources with one already read as NaN)."""
    out = np.multiply(raw, np.float32(scale), dtype=np.float32)
    if offset:
        out += np.float32(offset)
    if nodata is not None and not np.isnan(nodata):
        out[raw == np.float32(nodata)] = np.nan
    return out


def _valid_block(kind: str | None, n_quality: int, *arrays: np.ndarray) -> np.ndarray:
    """Clear (per the quality band, if any) and read in every band."""
    quality, bands = arrays[:n_quality], arrays[n_quality:]
    valid = np.isfinite(bands[0])
    for b in bands[1:]:
        valid &= np.isfinite(b)
    if quality and kind is not None:
        valid &= clear_mask(kind, quality[0])
    return valid


def _missing(band: str, items: Sequence[pystac.Item], dem: bool) -> MissingBandError:
    colls = sorted({i.collection_id or "<no collection>" for i in items})
    where = f"any of the {len(items)} items (collections: {colls})" if items else "any item (none)"
    if dem:
        fix = (f"search a DEM collection (e.g. dem_collections=('cop-dem-glo-30',)) and pass its "
               f"items as dem_items, or use a model whose bands do not include {band!r}")
    else:
        fix = ("search a collection that carries it (Sentinel-2 L2A, Landsat C2 L2, HLS), or "
               "register the collection's asset key in glacierscale.load.bands.PROFILES")
    return MissingBandError(f"band {band!r} is not in {where}: {fix}")


def _acquisitions(members: list[tuple[int, pystac.Item]]) -> list[list[tuple[int, pystac.Item]]]:
    """Items of one layout grouped by (collection, solar day); groups in rank order."""
    groups: dict[tuple[str | None, str], list[tuple[int, pystac.Item]]] = {}
    for rank, item in members:
        groups.setdefault((item.collection_id, _solar_day(item)), []).append((rank, item))
    return sorted(groups.values(), key=lambda g: min(r for r, _ in g))


def _read_optical(
    loader: Loader, geobox: GeoBox, chunks: tuple[int, int], needed: Sequence[str],
    layout: ItemBands, acq: list[list[tuple[int, pystac.Item]]], resampling: str,
) -> tuple[dict[str, da.Array], da.Array, bool]:
    """Scaled bands ``(t, y, x)`` and the valid mask of one asset layout's acquisitions."""
    groups = [[item for _, item in g] for g in acq]
    present = [b for b in needed if b in layout.bands]
    keys = [layout.bands[b].key for b in present]
    # With every band's nodata known, read native integers (half the memory of float32) and
    # turn nodata into NaN while scaling; otherwise let the reader mark missing pixels NaN.
    nodatas = [layout.bands[b].nodata for b in present]
    known = all(v is not None and not np.isnan(v) for v in nodatas)
    raw = loader.read(groups, keys, geobox, resampling=resampling,
                      dtype=None if known else "float32", chunks=chunks)
    bands: dict[str, da.Array] = {}
    for b in present:
        spec = layout.bands[b]
        bands[b] = da.map_blocks(_scale_block, raw[spec.key].data, spec.scale, spec.offset,
                                 spec.nodata, dtype=np.float32)
    masked = layout.mask is not None and layout.mask_kind is not None
    quality: list[da.Array] = []
    if layout.mask is not None and layout.mask_kind is not None:
        quality = [loader.read(groups, [layout.mask.key], geobox, resampling="nearest",
                               dtype="float32", chunks=chunks)[layout.mask.key].data]
    valid = da.map_blocks(_valid_block, layout.mask_kind, len(quality), *quality,
                          *bands.values(), dtype=bool)
    return bands, valid, masked


def _optical(
    tile: TileSpec, geobox: GeoBox, chunks: tuple[int, int], requested: list[str],
    items: Sequence[pystac.Item], loader: Loader, method: str, resampling: str,
) -> tuple[dict[str, da.Array], da.Array, list[str], bool]:
    resolved = [(rank, item, resolve(item)) for rank, item in enumerate(items)]
    for b in requested:
        if not any(b in r.bands for _, _, r in resolved):
            raise _missing(b, items, dem=False)
    # Without a requested optical band, validity still needs one band to count observations.
    needed = requested or [next((b for b in OPTICAL if any(b in r.bands for *_, r in resolved)),
                                "")]
    layouts: dict[tuple[Any, ...], tuple[ItemBands, list[tuple[int, pystac.Item]]]] = {}
    for rank, item, r in resolved:
        if any(b in r.bands for b in needed):
            layouts.setdefault(r.signature(), (r, []))[1].append((rank, item))
    slices: list[tuple[int, dict[str, da.Array], da.Array]] = []
    used: list[tuple[int, str]] = []
    all_masked = True
    for layout, members in layouts.values():
        acq = _acquisitions(members)
        bands, valid, masked = _read_optical(loader, geobox, chunks, needed, layout, acq,
                                             resampling)
        all_masked &= masked
        for t, group in enumerate(acq):
            slices.append((min(r for r, _ in group),
                           {b: a[t] for b, a in bands.items()}, valid[t]))
        used += [(rank, item.id) for rank, item in members]
    if not slices:
        empty = da.zeros(_shape(geobox), dtype=np.uint8, chunks=chunks)
        nan = da.full(_shape(geobox), np.nan, dtype=np.float32, chunks=chunks)
        return {b: nan for b in requested}, empty, [], False
    slices.sort(key=lambda s: s[0])
    nan2d = da.full(_shape(geobox), np.nan, dtype=np.float32, chunks=chunks)
    stacks = {b: da.stack([s[1].get(b, nan2d) for s in slices]) for b in needed}
    valid = da.stack([s[2] for s in slices])
    out, count = make_composite(stacks, valid, method)
    return ({b: out[b] for b in requested}, count, [i for _, i in sorted(used)],
            all_masked)


def _grown(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if len(sizes) == 1:
        return (sizes[0] + 2,)
    return (sizes[0] + 1, *sizes[1:-1], sizes[-1] + 1)


def _dem(
    tile: TileSpec, geobox: GeoBox, chunks: tuple[int, int], requested: list[str],
    items: Sequence[pystac.Item], loader: Loader,
) -> tuple[dict[str, da.Array], list[str]]:
    layouts: dict[tuple[Any, ...], tuple[ItemBands, list[pystac.Item]]] = {}
    for item in items:
        r = resolve(item)
        if "elevation" in r.bands:
            layouts.setdefault(r.signature(), (r, []))[1].append(item)
    if not layouts:
        raise _missing(requested[0], items, dem=True)
    padded = geobox.pad(1)
    pchunks = _chunks(_shape(padded), None if chunks == _shape(geobox) else chunks[0])
    # Chunks of the padded grid one pixel larger at both ends, so that once the ring is cut the
    # DEM chunks are exactly the optical chunks (no rechunk copy of the whole tile).
    aligned = tuple(_grown(da.core.normalize_chunks(chunks, _shape(geobox))[i]) for i in (0, 1))
    elevation: da.Array | None = None
    for layout, members in layouts.values():
        spec = layout.bands["elevation"]
        # One slice: DEM tiles mosaic first-valid-wins (they only touch at their edges).
        raw = loader.read([members], [spec.key], padded, resampling="bilinear", dtype="float32",
                          chunks=pchunks)[spec.key].data[0]
        z = da.map_blocks(_scale_block, raw.rechunk(aligned), spec.scale, spec.offset,
                          spec.nodata, dtype=np.float32)
        elevation = z if elevation is None else da.where(da.isnan(elevation), z, elevation)
    assert elevation is not None
    out: dict[str, da.Array] = {}
    if "elevation" in requested:
        out["elevation"] = elevation[1:-1, 1:-1].astype(np.float32)
    derived = tuple(b for b in requested if b != "elevation")
    if derived:
        out |= derive(elevation, abs(tile.resolution), derived)
    return ({b: a.rechunk(chunks) for b, a in out.items()},
            [i.id for _, members in layouts.values() for i in members])


def load_tile(
    tile: TileSpec,
    bands: Sequence[str],
    optical_items: Sequence[pystac.Item],
    dem_items: Sequence[pystac.Item] = (),
    *,
    composite: str = "median",
    loader: str | Loader | None = None,
    resampling: str = "bilinear",
    chunk_px: int | None = None,
) -> xr.Dataset:
    """Lazily load, cloud-mask, harmonise and composite a tile's scenes onto its halo'd grid.

    ``optical_items`` come best-ranked first (as :func:`glacierscale.catalog.select_scenes`
    returns them); DEM items found among them are used as DEM items. Returns a Dask-backed
    Dataset with dims ``(y, x)`` on ``(tile.crs, tile.transform, tile.shape)``: one float32
    variable per requested band (NaN where no clear observation), and ``clear_count`` (uint8).
    ``attrs["item_ids"]`` lists the items used, ``attrs["cloud_masked"]`` whether every optical
    item had a cloud mask asset. ``composite`` is ``"median"`` or ``"best"`` (first valid
    observation in rank order). Raises :class:`MissingBandError` when a band is in no item.
    """
    unknown = [b for b in bands if b not in OPTICAL + DEM_BANDS]
    if unknown:
        raise ValueError(f"unknown bands {unknown}; choose from {list(OPTICAL + DEM_BANDS)}")
    configure_cloud_reads()
    reader = get_loader(loader)
    geobox = tile_geobox(tile)
    chunks = _chunks(_shape(geobox), chunk_px)
    optical = [i for i in optical_items if not is_dem_item(i)]
    dems = list(dem_items) + [i for i in optical_items if is_dem_item(i)]
    want_opt = [b for b in bands if b in OPTICAL]
    want_dem = [b for b in bands if b in DEM_BANDS]

    data, count, used, masked = _optical(tile, geobox, chunks, want_opt, optical, reader,
                                         composite, resampling)
    if want_dem:
        dem_data, dem_used = _dem(tile, geobox, chunks, want_dem, dems, reader)
        data |= dem_data
        used += dem_used
    if not masked and optical:
        log.info("tile %s: no cloud mask asset in %s; clouds are not masked", tile.tile_id,
                    sorted({i.collection_id or "" for i in optical}))
    coords = xr_coords(geobox, crs_coord_name="spatial_ref")
    ds = xr.Dataset(
        {b: (("y", "x"), data[b]) for b in bands} | {"clear_count": (("y", "x"), count)},
        coords=coords,
    )
    ds.attrs.update(
        tile_id=tile.tile_id,
        item_ids=used,
        cloud_masked=bool(masked),
        composite=composite,
        loader=reader.name,
    )
    return ds

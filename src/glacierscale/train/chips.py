"""Training chips: one tile of the product's grid, loaded exactly as inference loads it, labelled.

A chip is a tile of the tile grid (small tiles, e.g. 64-128 px cores at 30 m, with a halo of
context): the catalog search, the lazy odc-stac load, cloud masking, sensor harmonisation,
compositing and DEM derivatives are the very functions ``glacierscale run`` calls
(:func:`glacierscale.catalog.open_catalog`, :func:`glacierscale.load.load_tile`), so a model never
sees pixels prepared any other way than at inference. The labels are the reference outlines
rasterized on the same grid (:mod:`glacierscale.train.labels`).

Extraction is one function of a tile (:func:`extract_chip`), so it runs on Dask workers with
``client.map`` for regional-scale training sets; chips can be cached as COGs in any fsspec store
(a local folder, S3, GCS), keyed by everything that changes them, so a second training run reads
them instead of searching and loading again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glacierscale.core.grid import tile_bbox_lonlat
from glacierscale.core.tiles import TileSpec
from glacierscale.models import ModelCard
from glacierscale.train.labels import (
    UNKNOWN,
    LabelRules,
    excluded_pixels,
    make_labels,
    rasterize_outlines,
)

log = logging.getLogger(__name__)

#: Bands that come from a DEM (searched by place, not by date).
TERRAIN_BANDS = ("elevation", "slope", "aspect", "hillshade")
# Bump when the chip layout changes, so old caches are not trusted.
_CHIP_VERSION = "1"


@dataclass(frozen=True)
class ChipSource:
    """Where the pixels of the chips come from: a catalog, a date window, collections, bands."""

    catalog: str
    bands: tuple[str, ...]
    start: date | None = None
    end: date | None = None
    collections: tuple[str, ...] = ()
    dem_collections: tuple[str, ...] = ("cop-dem-glo-30",)
    composite: str = "median"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat() if self.start else None
        d["end"] = self.end.isoformat() if self.end else None
        return d

    @property
    def needs_dem(self) -> bool:
        return any(b in TERRAIN_BANDS for b in self.bands)


@dataclass
class Chip:
    """A tile's input stack ``(C, H, W)`` float32 in physical units (NaN = no data) and labels."""

    tile: TileSpec
    image: NDArray[np.float32]
    labels: NDArray[np.uint8]
    item_ids: tuple[str, ...] = ()

    @property
    def tile_id(self) -> str:
        return self.tile.tile_id

    def glacier_pixels(self) -> int:
        """Labelled glacier pixels (for balancing folds)."""
        return int(np.count_nonzero((self.labels != UNKNOWN) & ((self.labels & 1) > 0)))

    def labelled_pixels(self) -> int:
        return int(np.count_nonzero(self.labels != UNKNOWN))


def normalise(image: NDArray[np.float32], card: ModelCard) -> NDArray[np.float32]:
    """``(value - mean) / std`` per band in card order; no data becomes 0 (the band mean).

    The same rule as the inference engine, so training and inference see identical inputs.
    """
    mean = np.asarray(card.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(card.std, dtype=np.float32)[:, None, None]
    x = (np.asarray(image, dtype=np.float32) - mean) / std
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def band_statistics(chips: Sequence[Chip]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation over the valid core pixels of all chips."""
    if not chips:
        raise ValueError("no chips to compute normalisation statistics from")
    c = chips[0].image.shape[0]
    n = np.zeros(c)
    s = np.zeros(c)
    s2 = np.zeros(c)
    for chip in chips:
        core = chip.image[(slice(None), *chip.tile.core_slice)].reshape(c, -1).astype(np.float64)
        ok = np.isfinite(core)
        n += ok.sum(axis=1)
        s += np.where(ok, core, 0.0).sum(axis=1)
        s2 += np.where(ok, core * core, 0.0).sum(axis=1)
    if (n == 0).any():
        raise ValueError("a band has no valid pixel in any chip; check the bands and the scenes")
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant band must not divide by zero
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_stack(tile: TileSpec, source: ChipSource) -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """Search and load a tile's bands exactly as inference does: ``(C, H, W)`` and item ids.

    Raises :class:`glacierscale.load.MissingBandError` (naming the fix) when a band is missing,
    e.g. a DEM band with no DEM collection in the catalog.
    """
    from glacierscale.catalog import open_catalog
    from glacierscale.load import load_tile

    catalog = open_catalog(source.catalog)
    bbox = tile_bbox_lonlat(tile)
    optical = catalog.search(bbox, source.start, source.end, source.collections)
    dem = catalog.search(bbox, None, None, source.dem_collections) if source.needs_dem else []
    if not optical:
        return np.full((len(source.bands), *tile.shape), np.nan, np.float32), ()
    ds = load_tile(tile, source.bands, optical, dem, composite=source.composite).compute()
    image = np.stack([ds[b].values.astype(np.float32, copy=False) for b in source.bands])
    return image, tuple(ds.attrs.get("item_ids", [i.id for i in optical]))


def extract_chip(tile: TileSpec, source: ChipSource, geoms_wkb: Sequence[bytes],
                 rules: LabelRules) -> Chip | None:
    """Load one tile and label it from outlines (WKB in the tile CRS); None without labels."""
    from shapely import wkb

    image, item_ids = load_stack(tile, source)
    valid: NDArray[np.bool_] = np.asarray(np.isfinite(image).all(axis=0))
    glacier = rasterize_outlines([wkb.loads(g) for g in geoms_wkb], tile)
    labels = make_labels(glacier, valid, rules, resolution=tile.resolution, core=tile.core_slice)
    if rules.exclude:
        labels[excluded_pixels(tile, rules.exclude)] = UNKNOWN
    if not (labels != UNKNOWN).any():
        return None
    return Chip(tile, image, labels, item_ids)


def outlines_per_tile(outlines: Any, tiles: Sequence[TileSpec]) -> list[list[bytes]]:
    """WKB geometries of the outlines touching each tile (with halo), in the tile's CRS."""
    from shapely.geometry import box

    out: list[list[bytes]] = []
    by_crs: dict[str, Any] = {}
    for t in tiles:
        if t.crs not in by_crs:
            by_crs[t.crs] = outlines.to_crs(t.crs)
        gdf = by_crs[t.crs]
        hits = gdf.sindex.query(box(*t.bounds), predicate="intersects")
        out.append([g.wkb for g in gdf.geometry.iloc[hits] if g is not None])
    return out


def cache_key(source: ChipSource, rules: LabelRules, outlines_digest: str, tile: TileSpec) -> str:
    """Cache key prefix of a chip: a digest of everything that changes its pixels or labels."""
    blob = json.dumps({"v": _CHIP_VERSION, "source": source.to_dict(), "rules": rules.to_dict(),
                       "outlines": outlines_digest, "size": tile.size_px, "res": tile.resolution,
                       "halo": tile.halo_px}, sort_keys=True)
    return f"chips/{hashlib.sha256(blob.encode()).hexdigest()[:16]}/{tile.tile_id}"


def _cached(store: Any, prefix: str, tile: TileSpec) -> Chip | bool | None:
    """A cached chip, None for a tile cached as empty, or False when not cached."""
    import rasterio

    if store.exists(f"{prefix}.empty"):
        return None
    if not store.exists(f"{prefix}.labels.tif"):
        return False
    with rasterio.MemoryFile(store.read_bytes(f"{prefix}.image.tif")) as mem, mem.open() as ds:
        image = ds.read().astype(np.float32)
        items = tuple(i for i in ds.tags().get("item_ids", "").split(",") if i)
    with rasterio.MemoryFile(store.read_bytes(f"{prefix}.labels.tif")) as mem, mem.open() as ds:
        labels = ds.read(1).astype(np.uint8)
    return Chip(tile, image, labels, items)


def _cache_put(store: Any, prefix: str, chip: Chip | None, bands: Sequence[str]) -> None:
    from glacierscale.io import write_cog

    if chip is None:
        store.write_bytes_atomic(f"{prefix}.empty", b"no labelled pixels\n")
        return
    t = chip.tile
    write_cog(store, f"{prefix}.image.tif", chip.image, transform=t.transform, crs=t.crs,
              nodata=float("nan"), descriptions=list(bands),
              tags={"item_ids": ",".join(chip.item_ids)})
    # Labels last: their presence marks the chip complete.
    write_cog(store, f"{prefix}.labels.tif", chip.labels, transform=t.transform, crs=t.crs,
              nodata=None, descriptions=["glacier label (bit0 glacier, bit1 ring, 255 unknown)"])


def chip_task(tile: TileSpec, source: ChipSource, geoms_wkb: Sequence[bytes], rules: LabelRules,
              cache: str | None, outlines_digest: str) -> Chip | None:
    """:func:`extract_chip` through the chip cache (the unit of work sent to Dask workers)."""
    if cache is None:
        return extract_chip(tile, source, geoms_wkb, rules)
    from glacierscale.io import Store

    store = Store(cache)
    prefix = cache_key(source, rules, outlines_digest, tile)
    hit = _cached(store, prefix, tile)
    if hit is not False:
        return hit  # type: ignore[return-value]
    chip = extract_chip(tile, source, geoms_wkb, rules)
    _cache_put(store, prefix, chip, source.bands)
    return chip


def outlines_digest(outlines: Any) -> str:
    """sha256 of outlines' geometries (WKB, EPSG:4326), naming them in caches and model cards."""
    h = hashlib.sha256()
    for g in outlines.to_crs("EPSG:4326").geometry:
        if g is not None:
            h.update(g.wkb)
    return h.hexdigest()


def build_chips(tiles: Sequence[TileSpec], source: ChipSource, outlines: Any, rules: LabelRules,
                *, client: Any = None, cache: str | None = None) -> list[Chip]:
    """Chips of every tile holding labels, in tile order; on a Dask ``client`` when given.

    ``outlines``: a GeoDataFrame of reference outlines (any CRS). ``cache``: an fsspec URL where
    chips are kept as COGs and reused by later runs.
    """
    geoms = outlines_per_tile(outlines, tiles)
    digest = outlines_digest(outlines)
    if client is not None:
        futures = client.map(chip_task, list(tiles), [source] * len(tiles), geoms,
                             [rules] * len(tiles), [cache] * len(tiles), [digest] * len(tiles),
                             pure=False)
        results = client.gather(futures)
    else:
        results = [chip_task(t, source, g, rules, cache, digest)
                   for t, g in zip(tiles, geoms, strict=True)]
    chips = [c for c in results if c is not None]
    log.info("%d of %d tiles hold labelled pixels", len(chips), len(tiles))
    return chips

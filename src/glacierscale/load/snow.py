"""Seasonal snow outside glaciers per scene: the pixel evidence for ranking scenes.

Snow left from winter (or fresh snow) outside the glacier outlines is the main source of false
glacier pixels; scenes of the end of the ablation season with the least of it are the ones to map
from. For each candidate scene this reads green and SWIR1 on a coarse version of the tile grid
(overviews make it a small read), masks clouds, and returns the fraction of clear pixels outside
the given glacier outlines whose NDSI = (green - swir16) / (green + swir16) exceeds 0.4.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pystac
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform as shp_transform

from glacierscale.core.tiles import TileSpec
from glacierscale.load.backends import Loader, get_loader
from glacierscale.load.bands import ItemBands, resolve
from glacierscale.load.env import configure_cloud_reads
from glacierscale.load.masks import clear_mask

NDSI_SNOW = 0.4


def _glacier_mask(geobox: GeoBox, outlines: Iterable[BaseGeometry], crs: str) -> np.ndarray:
    from rasterio.features import rasterize

    to_tile = Transformer.from_crs(crs, str(geobox.crs), always_xy=True)
    shapes = [mapping(shp_transform(to_tile.transform, g)) for g in outlines if not g.is_empty]
    if not shapes:
        return np.zeros(geobox.shape, dtype=bool)
    return rasterize(shapes, out_shape=geobox.shape, transform=geobox.transform, fill=0,
                     default_value=1, all_touched=False, dtype="uint8").astype(bool)


def scene_snow_fraction(
    items: Sequence[pystac.Item],
    tile: TileSpec,
    outlines: Iterable[BaseGeometry] = (),
    *,
    outlines_crs: str = "EPSG:4326",
    factor: int = 8,
    loader: str | Loader | None = None,
) -> dict[str, float]:
    """Fraction (0..1) of clear pixels outside ``outlines`` that are snow, per item id.

    Items without green or SWIR1 are left out; an item with no clear pixel outside the glaciers
    maps to NaN (unknown, not "snow-free").
    """
    configure_cloud_reads()
    reader = get_loader(loader)
    geobox = GeoBox(tile.shape, tile.transform, tile.crs).zoom_out(factor)
    shape = (int(geobox.shape[0]), int(geobox.shape[1]))
    outside = ~_glacier_mask(geobox, list(outlines), outlines_crs)
    layouts: dict[tuple[Any, ...], tuple[ItemBands, list[pystac.Item]]] = {}
    for item in items:
        r = resolve(item)
        if "green" in r.bands and "swir16" in r.bands:
            layouts.setdefault(r.signature(), (r, []))[1].append(item)
    out: dict[str, float] = {}
    for layout, members in layouts.values():
        keys = [layout.bands["green"].key, layout.bands["swir16"].key]
        groups = [[i] for i in members]
        raw = reader.read(groups, keys, geobox, resampling="average", dtype="float32",
                          chunks=shape).compute()
        g = raw[keys[0]].values * layout.bands["green"].scale + layout.bands["green"].offset
        s = raw[keys[1]].values * layout.bands["swir16"].scale + layout.bands["swir16"].offset
        ok = np.isfinite(g) & np.isfinite(s) & outside[None]
        if layout.mask is not None and layout.mask_kind is not None:
            q = reader.read(groups, [layout.mask.key], geobox, resampling="nearest",
                            dtype="float32", chunks=shape).compute()
            ok &= clear_mask(layout.mask_kind, q[layout.mask.key].values)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndsi = (g - s) / (g + s)
        for t, item in enumerate(members):
            n = int(ok[t].sum())
            out[item.id] = float((ndsi[t][ok[t]] > NDSI_SNOW).sum() / n) if n else float("nan")
    return out

"""Tiny seeded rasters and STAC items for the load tests, and items for the real Athabasca files."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine

from glacierscale.catalog.index import raster_asset, raster_item
from glacierscale.core.tiles import TileSpec


def write_cog(path: Path, data: np.ndarray, crs: str, transform: Affine,
              nodata: float | None = None, blocksize: int = 256) -> Path:
    """A single-band COG (deflate, internal overviews) of ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="COG", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, transform=transform, nodata=nodata,
                       blocksize=blocksize, compress="deflate", num_threads="ALL_CPUS",
                       overview_resampling="nearest") as ds:
        ds.write(data, 1)
    return path


def make_item(item_id: str, collection: str, when: datetime, assets: dict[str, Path],
              *, raster: dict[str, dict[str, Any]] | None = None,
              properties: dict[str, Any] | None = None) -> pystac.Item:
    """A STAC 1.1 item with projection and raster extensions describing local files."""
    raster = raster or {}
    docs: dict[str, Any] = {}
    crs = bounds = None
    for key, path in assets.items():
        with rasterio.open(path) as ds:
            docs[key] = raster_asset(ds, str(path), band=raster.get(key), cog=False)
            crs, bounds = crs or ds.crs.to_string(), bounds or ds.bounds
    assert crs is not None and bounds is not None, "make_item needs at least one asset"
    return raster_item(item_id, collection, when, docs, crs, bounds, properties=properties)


def tile_at(epsg: int, x: float, y: float, size_px: int = 32, resolution: float = 10.0,
            halo_px: int = 4) -> TileSpec:
    """The grid tile whose core contains projected point (x, y)."""
    from glacierscale.core.tiles import grid_origin

    ox, oy = grid_origin(epsg)
    size = size_px * resolution
    return TileSpec(epsg, int((x - ox) // size), int((oy - y) // size), size_px, resolution,
                    halo_px)


ATHABASCA = {
    "hls_s30_2020-09-09": ("HLSS30_2.0", datetime(2020, 9, 9, 18, 30),
                           {"B02": "B02", "B03": "B03", "B04": "B04", "B8A": "B8A",
                            "B11": "B11", "B12": "B12"}),
    "hls_l30_2020-08-16": ("HLSL30_2.0", datetime(2020, 8, 16, 18, 30),
                           {"B02": "B02", "B03": "B03", "B04": "B04", "B05": "B05",
                            "B06": "B06", "B07": "B07"}),
    "s2_2020-09-11": ("sentinel-2-l2a", datetime(2020, 9, 11, 18, 40),
                      {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A",
                       "swir16": "B11", "swir22": "B12"}),
}


def athabasca_items(root: Path) -> tuple[list[pystac.Item], pystac.Item]:
    """Items (Earth Search / HLS asset keys, int16 x 0.0001) for the real Athabasca rasters."""
    optical = []
    for folder, (collection, when, keys) in ATHABASCA.items():
        files = {key: next((root / folder).glob(f"*_{band}_*.tif")) for key, band in keys.items()}
        raster = {k: {"scale": 1e-4, "offset": 0.0} for k in files}
        optical.append(make_item(folder, collection, when, files, raster=raster,
                                 properties={"platform": "sentinel-2a"}))
    dem = make_item("athabasca-dem", "cop-dem-glo-30", datetime(2021, 4, 22),
                    {"data": root / "dem.tif"})
    return optical, dem

"""Tiny seeded rasters and STAC items for the load tests, and items for the real Athabasca files."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon, mapping

from glacierscale.catalog.geometry import unwrap_polygon
from glacierscale.core.tiles import TileSpec

PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"


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


def _footprint(crs: str, transform: Affine, shape: tuple[int, int]) -> Polygon:
    h, w = shape
    t = np.linspace(0, 1, 9)
    cols = np.concatenate([t * w, np.full_like(t, w), w - t * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), h - t * h])
    xs, ys = transform * (cols, rows)  # type: ignore[operator]  # Affine maps arrays too
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return unwrap_polygon(Polygon(list(zip(lon, lat, strict=True))))


def make_item(item_id: str, collection: str, when: datetime, assets: dict[str, Path],
              *, raster: dict[str, dict[str, Any]] | None = None,
              properties: dict[str, Any] | None = None) -> pystac.Item:
    """A STAC 1.1 item with projection and raster extensions describing local files."""
    raster = raster or {}
    docs: dict[str, Any] = {}
    geom = None
    for key, path in assets.items():
        with rasterio.open(path) as ds:
            t, crs, shape = ds.transform, ds.crs.to_string(), ds.shape
            band = {"data_type": ds.dtypes[0], **({"nodata": ds.nodata} if ds.nodata is not None
                                                 else {})}
        band.update(raster.get(key, {}))
        docs[key] = {"href": str(path), "type": "image/tiff; application=geotiff",
                     "roles": ["data"], "proj:code": crs, "proj:shape": list(shape),
                     "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f], "raster:bands": [band]}
        geom = geom or _footprint(crs, t, shape)
    assert geom is not None
    minx, miny, maxx, maxy = geom.bounds
    bbox = [minx, miny, maxx, maxy]
    if geom.geom_type == "MultiPolygon" and minx <= -179.999 and maxx >= 179.999:
        bbox = [max(g.bounds[0] for g in geom.geoms if g.bounds[0] > 0), miny,
                min(g.bounds[2] for g in geom.geoms if g.bounds[2] < 0), maxy]
    doc = {"type": "Feature", "stac_version": "1.1.0", "stac_extensions": [PROJ_EXT, RASTER_EXT],
           "id": item_id, "collection": collection, "geometry": mapping(geom), "bbox": bbox,
           "properties": {"datetime": when.isoformat().replace("+00:00", "Z"),
                          **(properties or {})},
           "assets": docs, "links": []}
    return pystac.Item.from_dict(doc, preserve_dict=False)


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

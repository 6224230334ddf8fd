"""The Everest Landsat 7 sample as a local STAC catalog, so training reads it like any other scene.

The sample (Landsat 7 ETM+, 2000-10-30, Khumbu/Everest, 30 m, EPSG:32645) is an RGB GeoTIFF and a
NIR GeoTIFF of 8-bit digital numbers: not reflectance, and no SWIR. Each band becomes a COG in the
cache folder and one STAC item describes them with common band names (``eo:bands``) and
``raster:bands`` scale 1/255, so the loader turns DN into a "reflectance-like" 0..1 value. That
scale is NOT surface reflectance (no gain, sun angle or atmosphere correction): a model trained
on it is only meaningful on the same kind of 8-bit product, which its model card says.

The 86 RGI 6.0 outlines beside the scene are complete for the area (every glacier is outlined,
debris-covered tongues included) and dated the same day as the scene.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from glacierscale.demo import SampleCatalog, build_once

SCENE = "LE71400412000304SGS00"
COLLECTION = "landsat-7-etm-dn"
DAY = date(2000, 10, 30)
#: (asset key, file suffix, band index in the file, common name, ETM+ band name)
_BANDS = (
    ("B1", "_RGB.tif", 3, "blue", "ETM+ B1"),
    ("B2", "_RGB.tif", 2, "green", "ETM+ B2"),
    ("B3", "_RGB.tif", 1, "red", "ETM+ B3"),
    ("B4", "_B4.tif", 1, "nir", "ETM+ B4"),
)
_VERSION = "1"
_EXT = ["https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json"]


def everest_sample(data_dir: Path, cache: Path) -> SampleCatalog:
    """Build (once) the Everest catalog under ``cache`` from the sample data in ``data_dir``.

    The sample's ``reference`` is the path of its 86 RGI 6.0 outlines.
    """
    src = data_dir / "everest"
    if not (src / f"{SCENE}_RGB.tif").is_file():
        raise FileNotFoundError(f"the Everest sample is not in {src}: set GLACIERSCALE_SAMPLE_DATA "
                                "to the folder holding everest/")
    dest = cache / "samples" / f"everest-v{_VERSION}"
    build_once(dest, _VERSION, lambda tmp: _build(src, tmp, dest))
    items = dest / "items"
    item = json.loads(next(items.glob("*.json")).read_text())
    # A box a little inside the scene, so no tile of the plan reaches beyond the pixels.
    w, s, e, n = item["bbox"]
    inset = 0.002
    return SampleCatalog(str(items), (w + inset, s + inset, e - inset, n - inset), DAY, DAY,
                         (COLLECTION,), str(src / "15_rgi60_glacier_outlines.gpkg"), offline=True)


def _build(src: Path, tmp: Path, dest: Path) -> None:
    """The COGs and the item, written into ``tmp`` with hrefs at ``dest`` where they will live."""
    assets = {}
    meta: dict = {}
    for key, suffix, index, common, name in _BANDS:
        cog = tmp / "cogs" / f"{key}.tif"
        cog.parent.mkdir(parents=True, exist_ok=True)
        single = tmp / f"{key}-band.tif"
        with rasterio.open(src / f"{SCENE}{suffix}") as ds:
            profile = ds.profile | {"count": 1, "nodata": 0}
            meta = {"crs": ds.crs, "shape": ds.shape, "transform": ds.transform,
                    "bounds": ds.bounds}
            with rasterio.open(single, "w", **profile) as out:
                out.write(ds.read(index), 1)
        profile = cog_profiles.get("deflate")
        profile.update(blockxsize=256, blockysize=256)
        cog_translate(str(single), str(cog), profile, quiet=True, overview_resampling="nearest")
        single.unlink()
        assets[key] = {
            "href": str(dest / "cogs" / f"{key}.tif"),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "eo:bands": [{"name": name, "common_name": common}],
            # 8-bit DN / 255: a reflectance-like 0..1 scale, not surface reflectance.
            "raster:bands": [{"data_type": "uint8", "nodata": 0, "scale": 1.0 / 255.0,
                              "offset": 0.0}],
        }
    (tmp / "items").mkdir()
    (tmp / "items" / f"{SCENE}.json").write_text(json.dumps(_item(dest, assets, meta), indent=1))


def _item(dest: Path, assets: dict, meta: dict) -> dict:
    b = meta["bounds"]
    to_ll = Transformer.from_crs(meta["crs"], "EPSG:4326", always_xy=True)
    xs, ys = to_ll.transform([b.left, b.right, b.right, b.left], [b.top, b.top, b.bottom, b.bottom])
    ring = [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]
    t = meta["transform"]
    return {
        "type": "Feature", "stac_version": "1.1.0", "stac_extensions": _EXT,
        "id": SCENE, "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
        "bbox": [float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys))],
        "properties": {
            "datetime": f"{DAY.isoformat()}T04:30:00Z", "platform": "landsat-7",
            "instruments": ["etm+"], "eo:cloud_cover": 0.0,
            "proj:code": str(meta["crs"]), "proj:shape": list(meta["shape"]),
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "description": "8-bit DN of Landsat 7 ETM+ (GlacioHack geoutils-data sample); "
                           "scale 1/255 gives a reflectance-like value, not reflectance",
        },
        "assets": assets,
        "links": [],
    }

"""Sensor harmonisation: which asset of an item holds which common band, and how to scale it.

Every collection names its assets differently (Earth Search ``nir08``, Planetary Computer ``B8A``,
USGS ``SR_B5.TIF``, HLS ``B05``) and stores reflectance with its own scale and offset. This table
maps them all to the common names ``blue, green, red, nir, swir16, swir22`` (plus ``elevation``)
so that a model sees the same physical quantity whatever the sensor:

- Sentinel-2 L2A: DN x 0.0001, and from processing baseline 04.00 (25 Jan 2022) an offset of
  -0.1 (BOA_ADD_OFFSET = -1000 DN), read from ``s2:processing_baseline`` or the product id unless
  the asset's ``raster:bands`` states its own offset (Earth Search v1 harmonises old scenes).
- Landsat Collection 2 L2: DN x 0.0000275 - 0.2; the QA_PIXEL bit mask marks clouds.
- HLS v2.0 (S30 and L30): DN x 0.0001, nodata -9999; the Fmask bit mask marks clouds.
- Copernicus DEM and other DEMs: metres, unscaled.

``nir`` is the narrow NIR (Sentinel-2 B8A, 865 nm) everywhere, because that is the band Landsat
OLI and HLS share; B08 is broader and would shift band ratios between sensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pystac

MaskKind = Literal["scl", "qa_pixel", "fmask"]

#: Common optical band names, in the order models expect them.
OPTICAL = ("blue", "green", "red", "nir", "swir16", "swir22")
#: Bands computed from a DEM.
DEM_BANDS = ("elevation", "slope", "aspect", "hillshade")

# eo:bands common names (STAC eo extension) that mean one of our common bands.
_EO_COMMON = {
    "blue": "blue", "green": "green", "red": "red", "nir08": "nir", "nir": "nir",
    "swir16": "swir16", "swir22": "swir22",
}


@dataclass(frozen=True)
class Profile:
    """How one family of collections stores its bands.

    ``bands`` maps a common name to candidate asset keys, tried in order (the first key present in
    an item wins), so one profile serves providers that publish the same product under different
    asset names.
    """

    name: str
    collections: tuple[str, ...]
    bands: Mapping[str, tuple[str, ...]]
    mask_keys: tuple[str, ...] = ()
    mask_kind: MaskKind | None = None
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    mask_nodata: float | None = None
    s2_baseline_offset: bool = False
    aliases: tuple[str, ...] = field(default=())


_S2 = {
    "blue": ("blue", "B02", "B02_10m"), "green": ("green", "B03", "B03_10m"),
    "red": ("red", "B04", "B04_10m"), "nir": ("nir08", "B8A", "B8A_20m"),
    "swir16": ("swir16", "B11", "B11_20m"), "swir22": ("swir22", "B12", "B12_20m"),
}
_LANDSAT = {
    "blue": ("blue",), "green": ("green",), "red": ("red",), "nir": ("nir08",),
    "swir16": ("swir16",), "swir22": ("swir22",),
}
# USGS landsatlook items name assets after files; OLI (Landsat 8/9) bands sit one number higher
# than TM/ETM+ (Landsat 4/5/7), whose SWIR2 is band 7 after the thermal band 6.
_USGS_OLI = {
    "blue": ("SR_B2.TIF", "SR_B2"), "green": ("SR_B3.TIF", "SR_B3"), "red": ("SR_B4.TIF", "SR_B4"),
    "nir": ("SR_B5.TIF", "SR_B5"), "swir16": ("SR_B6.TIF", "SR_B6"),
    "swir22": ("SR_B7.TIF", "SR_B7"),
}
_USGS_TM = {
    "blue": ("SR_B1.TIF", "SR_B1"), "green": ("SR_B2.TIF", "SR_B2"), "red": ("SR_B3.TIF", "SR_B3"),
    "nir": ("SR_B4.TIF", "SR_B4"), "swir16": ("SR_B5.TIF", "SR_B5"),
    "swir22": ("SR_B7.TIF", "SR_B7"),
}
_LANDSAT_COLLECTIONS = ("landsat-c2-l2", "landsat-c2l2-sr", "landsat-c2l2_sr")
_DEM_KEYS = {"elevation": ("data", "elevation", "dem", "DEM")}

PROFILES: tuple[Profile, ...] = (
    Profile("sentinel-2-l2a",
            ("sentinel-2-l2a", "sentinel-2-c1-l2a", "sentinel-s2-l2a-cogs", "sentinel-s2-l2a"),
            _S2, ("scl", "SCL", "SCL_20m"), "scl", 1e-4, 0.0, 0.0, 0.0, s2_baseline_offset=True),
    Profile("landsat-c2-l2-oli", _LANDSAT_COLLECTIONS, _LANDSAT, ("qa_pixel",), "qa_pixel",
            2.75e-5, -0.2, 0.0, 1.0),
    Profile("usgs-landsat-oli", _LANDSAT_COLLECTIONS, _USGS_OLI,
            ("QA_PIXEL.TIF", "QA_PIXEL"), "qa_pixel", 2.75e-5, -0.2, 0.0, 1.0),
    Profile("usgs-landsat-tm-etm", _LANDSAT_COLLECTIONS, _USGS_TM,
            ("QA_PIXEL.TIF", "QA_PIXEL"), "qa_pixel", 2.75e-5, -0.2, 0.0, 1.0),
    Profile("hls-s30", ("hlss30_2.0", "hlss30.v2.0", "hls2-s30", "hls-s30"),
            {"blue": ("B02",), "green": ("B03",), "red": ("B04",), "nir": ("B8A",),
             "swir16": ("B11",), "swir22": ("B12",)},
            ("Fmask", "fmask"), "fmask", 1e-4, 0.0, -9999.0, 255.0),
    Profile("hls-l30", ("hlsl30_2.0", "hlsl30.v2.0", "hls2-l30", "hls-l30"),
            {"blue": ("B02",), "green": ("B03",), "red": ("B04",), "nir": ("B05",),
             "swir16": ("B06",), "swir22": ("B07",)},
            ("Fmask", "fmask"), "fmask", 1e-4, 0.0, -9999.0, 255.0),
    Profile("dem", ("cop-dem-glo-30", "cop-dem-glo-90", "nasadem", "alos-dem", "srtm", "dem"),
            _DEM_KEYS),
)
_GENERIC = Profile("generic", (), {})


@dataclass(frozen=True)
class AssetBand:
    """One asset read as one common band: key, and how to turn its DN into physical units."""

    key: str
    scale: float
    offset: float
    nodata: float | None


@dataclass(frozen=True)
class ItemBands:
    """What an item offers after harmonisation: common band -> asset, plus its cloud mask."""

    profile: str
    bands: Mapping[str, AssetBand]
    mask: AssetBand | None
    mask_kind: MaskKind | None

    def signature(self) -> tuple[Any, ...]:
        """Items with equal signatures can be read in one call (same keys, scales and mask)."""
        return (self.profile, tuple(sorted(self.bands.items())), self.mask, self.mask_kind)


def _landsat_oli(item: pystac.Item) -> bool:
    platform = str(item.properties.get("platform") or item.properties.get("eo:platform") or "")
    digits = re.findall(r"\d+", platform)
    if digits:
        return int(digits[-1]) >= 8
    return item.id[:4].upper() in ("LC08", "LC09", "LO08", "LO09")


def profile_for(item: pystac.Item) -> Profile:
    """The profile of an item: by collection id, then by the asset keys it carries."""
    coll = (item.collection_id or "").lower()
    keys = set(item.assets)
    candidates = [p for p in PROFILES if coll in p.collections]
    if coll in _LANDSAT_COLLECTIONS:
        oli = _landsat_oli(item)
        if "SR_B2.TIF" in keys or "SR_B2" in keys:
            name = "usgs-landsat-oli" if oli else "usgs-landsat-tm-etm"
        else:
            name = "landsat-c2-l2-oli"
        candidates = [p for p in PROFILES if p.name == name]
    if candidates:
        return candidates[0]
    # Unknown collection: choose the profile whose asset keys the item carries most of, so that
    # a local catalog of e.g. HLS files under another collection id still maps correctly.
    best, best_hits = _GENERIC, 0
    for p in PROFILES:
        hits = sum(any(k in keys for k in ks) for ks in p.bands.values())
        if hits > best_hits and hits >= min(3, len(p.bands)):
            best, best_hits = p, hits
    return best


def _s2_baseline(item: pystac.Item) -> float | None:
    props = item.properties
    raw = props.get("s2:processing_baseline")
    if raw is not None:
        try:
            return float(raw)
        except (TypeError, ValueError):
            return None
    for key in ("s2:product_uri", "sentinel:product_id", "s2:product_id"):
        m = re.search(r"_N(\d{2})(\d{2})_", str(props.get(key, "")))
        if m:
            return float(f"{m.group(1)}.{m.group(2)}")
    return None


def _raster_band(asset: pystac.Asset) -> dict[str, Any]:
    bands = asset.extra_fields.get("raster:bands")
    if isinstance(bands, list) and bands and isinstance(bands[0], dict):
        return bands[0]
    return {}


def _eo_common(item: pystac.Item, asset: pystac.Asset) -> str | None:
    eo = asset.extra_fields.get("eo:bands")
    if isinstance(eo, list) and eo:
        first = eo[0]
        if isinstance(first, int):  # old STAC: an index into the item's eo:bands
            item_eo = item.properties.get("eo:bands") or []
            first = item_eo[first] if 0 <= first < len(item_eo) else {}
        if isinstance(first, dict):
            return _EO_COMMON.get(str(first.get("common_name", "")))
    return None


def _scaling(item: pystac.Item, asset: pystac.Asset, profile: Profile) -> tuple[float, float, Any]:
    rb = _raster_band(asset)
    scale = float(rb["scale"]) if rb.get("scale") is not None else profile.scale
    if rb.get("offset") is not None:
        offset = float(rb["offset"])
    else:
        offset = profile.offset
        if profile.s2_baseline_offset:
            baseline = _s2_baseline(item)
            # Baseline 04.00 added 1000 DN to every L2A pixel so that dark surfaces keep
            # negative reflectance; without undoing it, all reflectance is 0.1 too high.
            if baseline is not None and baseline >= 4.0:
                offset = -1000.0 * scale
    nodata = rb.get("nodata", profile.nodata)
    return scale, offset, nodata


def resolve(item: pystac.Item) -> ItemBands:
    """Map an item's assets to common bands with their scale, offset and nodata."""
    profile = profile_for(item)
    found: dict[str, AssetBand] = {}
    for common, keys in profile.bands.items():
        for key in keys:
            if key in item.assets:
                scale, offset, nodata = _scaling(item, item.assets[key], profile)
                found[common] = AssetBand(key, scale, offset, _num(nodata))
                break
    if profile.name != "dem":
        # Any remaining common band declared through eo:bands (e.g. a locally indexed catalog).
        for key, asset in item.assets.items():
            eo_name = _eo_common(item, asset)
            if eo_name and eo_name not in found and eo_name in OPTICAL:
                scale, offset, nodata = _scaling(item, asset, profile)
                found[eo_name] = AssetBand(key, scale, offset, _num(nodata))
    mask = None
    for key in profile.mask_keys:
        if key in item.assets:
            nodata = _raster_band(item.assets[key]).get("nodata", profile.mask_nodata)
            mask = AssetBand(key, 1.0, 0.0, _num(nodata))
            break
    return ItemBands(profile.name, found, mask, profile.mask_kind if mask else None)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):  # STAC allows "nan", "inf", "-inf"
        return float(v)
    return float(v)


def is_dem_item(item: pystac.Item) -> bool:
    """Whether an item is a DEM (static: searched by place, never by date)."""
    return profile_for(item).name == "dem"

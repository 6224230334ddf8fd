"""Cloud-Optimized GeoTIFF writer: array -> local COG -> validated -> atomic upload.

The COG is built locally with GDAL's COG driver (512 px tiles, DEFLATE with a predictor,
overviews, nodata, band descriptions, provenance tags), checked with
``rio_cogeo.cogeo.cog_validate`` (whose *result* is checked: the ``rio cogeo validate`` command
exits 0 even for invalid files), then published with one atomic put. Building locally keeps GDAL
away from random writes on object stores and makes the upload the only step that touches the
network.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.io import MemoryFile

from glacierscale.io.store import Store, redact

log = logging.getLogger(__name__)

BLOCKSIZE = 512


class CogValidationError(RuntimeError):
    """GDAL produced a file that is not a valid COG (never published)."""


def _overview_resampling(dtype: np.dtype, resampling: str | None) -> str:
    if resampling:
        return resampling.upper()
    # Averaging class codes invents classes; averaging probabilities is what a viewer expects.
    return "AVERAGE" if np.issubdtype(dtype, np.floating) else "NEAREST"


def _clean_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (tags or {}).items():
        key = str(k).strip().replace(" ", "_")
        if not key:
            raise ValueError("COG tag names must be non-empty")
        # Belt and braces: a secret passed by mistake is masked, never embedded in a COG.
        out[key] = redact(str(v))
    return out


def build_cog(path: str | Path, data: np.ndarray, *, transform: Affine, crs: str,
              nodata: float | int | None, tags: Mapping[str, object] | None = None,
              descriptions: Sequence[str] | None = None, overview_resampling: str | None = None,
              compress: str = "DEFLATE") -> Path:
    """Write ``data`` ((H, W) or (B, H, W)) as a validated COG at a local ``path``."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"COG data must be (H, W) or (B, H, W) with H, W > 0, got {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype("uint8")
    count, height, width = arr.shape
    if descriptions is not None and len(descriptions) != count:
        raise ValueError(f"{len(descriptions)} band descriptions for {count} band(s)")
    if nodata is not None and isinstance(nodata, float) and math.isnan(nodata) \
            and not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"nodata=nan needs a float array, got {arr.dtype}; pick an integer nodata")
    profile = {"driver": "GTiff", "height": height, "width": width, "count": count,
               "dtype": arr.dtype.name, "crs": crs, "transform": transform, "nodata": nodata}
    path = Path(path)
    opts = {"COMPRESS": compress, "BLOCKSIZE": BLOCKSIZE, "OVERVIEWS": "AUTO",
            "OVERVIEW_RESAMPLING": _overview_resampling(arr.dtype, overview_resampling),
            "PREDICTOR": "YES", "BIGTIFF": "IF_SAFER"}
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(arr)
            ds.update_tags(**_clean_tags(tags))
            for i, desc in enumerate(descriptions or (), start=1):
                ds.set_band_description(i, str(desc))
        with mem.open() as src:
            rasterio.shutil.copy(src, str(path), driver="COG", **opts)
    validate_cog_file(path)
    return path


def validate_cog_file(path: str | Path) -> None:
    """Raise CogValidationError unless ``path`` is a valid COG (errors, not warnings, count)."""
    from rio_cogeo.cogeo import cog_validate

    ok, errors, _warnings = cog_validate(str(path), quiet=True)
    if not ok:
        raise CogValidationError(f"{path} is not a valid COG: {'; '.join(errors)}")


def write_cog(store: Store, key: str, data: np.ndarray, *, transform: Affine, crs: str,
              nodata: float | int | None, tags: dict[str, str] | None = None,
              descriptions: Sequence[str] | None = None,
              overview_resampling: str | None = None) -> str:
    """Write ``data`` ((H, W) or (B, H, W)) as a COG at ``key`` of ``store``; returns its URL.

    Local temporary file -> COG (512 px tiles, DEFLATE + predictor, overviews, nodata, band
    descriptions, tags) -> ``cog_validate`` -> atomic upload. Overviews average float bands and
    take the nearest value for integer bands unless ``overview_resampling`` says otherwise.
    Only what is passed is written: pass the tile core, not the halo.
    """
    with tempfile.TemporaryDirectory(prefix="glacierscale-cog-") as tmp:
        local = build_cog(Path(tmp) / "out.tif", data, transform=transform, crs=crs,
                          nodata=nodata, tags=tags, descriptions=descriptions,
                          overview_resampling=overview_resampling)
        url = store.put_file_atomic(local, key)
    log.debug("wrote COG %s", key)
    return url


def validate_cog(store: Store, key: str) -> bool:
    """True if the object at ``key`` exists and is a valid COG (downloads it to check)."""
    if not store.exists(key):
        return False
    with tempfile.TemporaryDirectory(prefix="glacierscale-cog-") as tmp:
        local = store.get_file(key, Path(tmp) / "check.tif")
        try:
            validate_cog_file(local)
        except (CogValidationError, rasterio.errors.RasterioIOError):
            return False
    return True

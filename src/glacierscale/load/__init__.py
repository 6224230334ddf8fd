"""Items + tile grid -> lazy, cloud-masked, harmonised composite (odc-stac or stackstac).

Public API:

- :func:`load_tile` - the tile's bands (common names) and DEM derivatives as a lazy Dataset;
- :class:`MissingBandError` - a requested band is in none of the items (message names the fix);
- :func:`configure_cloud_reads` - GDAL settings for cloud reads; call on every worker;
- :func:`resolve` / :data:`PROFILES` - the band mapping table of every supported collection;
- :class:`Loader`, :func:`get_loader` - the reader seam (``odc-stac`` default, ``stackstac``);
- :func:`scene_snow_fraction` - seasonal snow outside glaciers, for scene ranking.
"""

from __future__ import annotations

from glacierscale.load.backends import (
    DEFAULT_LOADER,
    LOADERS,
    Loader,
    OdcStacLoader,
    StackstacLoader,
    get_loader,
)
from glacierscale.load.bands import (
    DEM_BANDS,
    OPTICAL,
    PROFILES,
    AssetBand,
    ItemBands,
    Profile,
    is_dem_item,
    resolve,
)
from glacierscale.load.env import CLOUD_READ_DEFAULTS, cloud_read_settings, configure_cloud_reads
from glacierscale.load.signing import fresh_href
from glacierscale.load.snow import scene_snow_fraction
from glacierscale.load.stack import MissingBandError, load_tile

__all__ = [
    "CLOUD_READ_DEFAULTS",
    "DEFAULT_LOADER",
    "DEM_BANDS",
    "LOADERS",
    "OPTICAL",
    "PROFILES",
    "AssetBand",
    "ItemBands",
    "Loader",
    "MissingBandError",
    "OdcStacLoader",
    "Profile",
    "StackstacLoader",
    "cloud_read_settings",
    "configure_cloud_reads",
    "fresh_href",
    "get_loader",
    "is_dem_item",
    "load_tile",
    "resolve",
    "scene_snow_fraction",
]

"""STAC sources behind one Protocol, and scene selection per tile (no pixels are read here).

Public API:

- :class:`CatalogSource` and :func:`open_catalog` - any STAC API (pystac-client; ``earth-search``
  and ``planetary-computer`` presets), a folder of item JSON files, ``.ndjson`` or stac-geoparquet;
- :func:`select_scenes` -> :class:`Selection` - end-of-ablation window per latitude, cloud filter,
  snow-aware ranking, with a record of why each acquisition was chosen or rejected;
- :func:`season_window` / :func:`season_dates` - the window of a latitude;
- :func:`describe_rasters` / :func:`write_items` - local rasters as STAC items.
"""

from __future__ import annotations

from glacierscale.catalog.geometry import coverage, item_footprint
from glacierscale.catalog.index import describe_rasters, guess_sensor, write_items
from glacierscale.catalog.selection import (
    DEFAULT_SEASONS,
    Acquisition,
    SeasonBand,
    SeasonWindow,
    Selection,
    season_dates,
    season_window,
    select_scenes,
)
from glacierscale.catalog.sources import (
    PRESETS,
    CatalogSource,
    LocalSource,
    StacApiSource,
    open_catalog,
    read_items,
)

__all__ = [
    "DEFAULT_SEASONS",
    "PRESETS",
    "Acquisition",
    "CatalogSource",
    "LocalSource",
    "SeasonBand",
    "SeasonWindow",
    "Selection",
    "StacApiSource",
    "coverage",
    "describe_rasters",
    "guess_sensor",
    "item_footprint",
    "open_catalog",
    "read_items",
    "season_dates",
    "season_window",
    "select_scenes",
    "write_items",
]

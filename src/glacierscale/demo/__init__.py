"""The laptop demo's inputs: real sample rasters turned into a local STAC catalog of COGs.

``glacierscale demo`` uses :func:`athabasca_sample`; training uses the same builders for its own
samples.
"""

from glacierscale.demo.sample import (
    ATHABASCA_BBOX,
    ATHABASCA_WINDOW,
    EARTH_SEARCH,
    SampleCatalog,
    athabasca_sample,
    build_catalog,
    build_once,
)

__all__ = [
    "ATHABASCA_BBOX",
    "ATHABASCA_WINDOW",
    "EARTH_SEARCH",
    "SampleCatalog",
    "athabasca_sample",
    "build_catalog",
    "build_once",
]

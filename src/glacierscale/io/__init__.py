"""Storage and output writers: fsspec stores with atomic writes, COGs, GeoParquet, STAC items.

Everything a run keeps goes through here, to a local folder or any object store fsspec knows.
"""

from __future__ import annotations

from glacierscale.io.cloud import (
    BucketNotFoundError,
    check_bucket,
    gdal_env_for,
    s3_endpoint,
    to_gdal_path,
)
from glacierscale.io.cog import CogValidationError, build_cog, validate_cog, write_cog
from glacierscale.io.outputs import tile_complete, tile_key, write_tile_outputs
from glacierscale.io.stac import Provenance, read_items, tile_item, validate_core, write_collection
from glacierscale.io.store import Store, redact, redact_url
from glacierscale.io.vector import read_geoparquet, write_geoparquet, write_vector

__all__ = [
    "BucketNotFoundError",
    "CogValidationError",
    "Provenance",
    "Store",
    "build_cog",
    "check_bucket",
    "gdal_env_for",
    "read_geoparquet",
    "read_items",
    "redact",
    "redact_url",
    "s3_endpoint",
    "tile_complete",
    "tile_item",
    "tile_key",
    "to_gdal_path",
    "validate_cog",
    "validate_core",
    "write_cog",
    "write_collection",
    "write_geoparquet",
    "write_tile_outputs",
    "write_vector",
]

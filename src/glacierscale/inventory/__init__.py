"""From tile masks to a glacier inventory: vectorize, merge across tiles, RGI identity, accuracy."""

from __future__ import annotations

from glacierscale.inventory.build import rebuild_inventory
from glacierscale.inventory.evaluate import evaluate
from glacierscale.inventory.merge import equal_area_crs, glims_like_id, merge_tiles
from glacierscale.inventory.outlines import read_outlines
from glacierscale.inventory.rgi import (
    attach_rgi,
    has_rgi_ids,
    missing_reference,
    parse_rgi_date,
    reference_ids,
)
from glacierscale.inventory.summary import region_summary
from glacierscale.inventory.vectorize import empty_outlines, vectorize_tile

__all__ = [
    "attach_rgi",
    "empty_outlines",
    "equal_area_crs",
    "evaluate",
    "glims_like_id",
    "has_rgi_ids",
    "merge_tiles",
    "missing_reference",
    "parse_rgi_date",
    "read_outlines",
    "rebuild_inventory",
    "reference_ids",
    "region_summary",
    "vectorize_tile",
]

"""Tile functions for orchestration tests: real outputs through fsspec, seeded, fast.

``synthetic_tile`` writes what the pipeline writes for a tile (probability and mask COGs, outlines
GeoParquet, then the item JSON last), from a seeded elliptical "glacier" in the tile core, so the
real merge/report step runs on its outputs. Each call also leaves a journal record
(``journal/<tile_id>/<status>-<uuid>``), which lets tests count how often every tile was processed.

``GLACIERSCALE_TEST_TILE_SLEEP`` (seconds) slows each processed tile down so a test can act
mid-run (cancel the flow, kill a worker).
"""

from __future__ import annotations

import os
import time
import uuid
import zlib
from datetime import UTC, datetime

import numpy as np

from glacierscale.config import RunConfig
from glacierscale.core.tiles import TileSpec
from glacierscale.inventory import vectorize_tile
from glacierscale.io import Provenance, Store, tile_complete, write_tile_outputs
from glacierscale.pipeline import TileResult


def _journal(store: Store, tile_id: str, status: str) -> None:
    store.write_bytes_atomic(f"journal/{tile_id}/{status}-{uuid.uuid4().hex}", b"")


def journal_counts(store: Store) -> dict[str, dict[str, int]]:
    """Per tile, how many times each status was recorded in the journal."""
    out: dict[str, dict[str, int]] = {}
    for key in store.list("journal"):
        parts = key.strip("/").split("/")
        tile_id, status = parts[-2], parts[-1].rsplit("-", 1)[0]
        out.setdefault(tile_id, {}).setdefault(status, 0)
        out[tile_id][status] += 1
    return out


def synthetic_tile(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """Write a seeded glacier-like blob for ``tile`` with the pipeline's own tile writer."""
    store = Store(cfg.out)
    prov = Provenance(input_ids=("synthetic",), model="synthetic", config_token=cfg.token())
    if tile_complete(store, tile.tile_id, prov.token(tile.tile_id)):
        _journal(store, tile.tile_id, "skipped")
        return TileResult(tile.tile_id, "skipped", "valid outputs already exist")
    t0 = time.perf_counter()
    time.sleep(float(os.environ.get("GLACIERSCALE_TEST_TILE_SLEEP", "0")))
    n = tile.size_px
    rng = np.random.default_rng(zlib.crc32(tile.tile_id.encode()))
    yy, xx = np.mgrid[0:n, 0:n] / n
    cy, cx, ry, rx = rng.uniform(0.35, 0.65, 2).tolist() + rng.uniform(0.15, 0.3, 2).tolist()
    prob = np.clip(1.2 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2, 0, 1).astype("float32")
    mask = (prob >= cfg.infer.threshold).astype("uint8")
    polys = vectorize_tile(mask, prob, transform=tile.core_transform, crs=tile.crs,
                           tile_id=tile.tile_id, min_area_m2=0.0)
    write_tile_outputs(store, tile, prob, provenance=prov, mask=mask, outlines=polys,
                       threshold=cfg.infer.threshold, when=datetime(2020, 9, 9, tzinfo=UTC))
    _journal(store, tile.tile_id, "done")
    km2 = float(polys.geometry.area.sum() / 1e6)
    return TileResult(tile.tile_id, "done", "", {"write": time.perf_counter() - t0}, km2,
                      prov.input_ids)


def noop_tile(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """Does nothing and writes nothing: measures orchestration alone."""
    return TileResult(tile.tile_id, "no-data", "no-op tile function")

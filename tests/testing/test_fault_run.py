"""A real run through faulty services: COG reads, STAC searches and S3 writes that fail.

The Athabasca sample is served over HTTP by the range server, its items by ``rustac serve`` behind
the fault proxy, and the outputs go to moto behind the fault proxy. A fault-free run and a run with
15 % of read requests, 15 % of searches and 5 % of writes failing (503, 429, dropped and truncated
connections, plus slow answers) must both finish every tile, with identical masks and
probabilities. A corrupt COG block fails the tiles that read it at once, with no retry spent, and
after the repair only those tiles are computed again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from glacierscale.config import GridConfig, RunConfig
from glacierscale.core import faults
from glacierscale.core.tiles import TileSpec
from glacierscale.demo.sample import athabasca_sample
from glacierscale.io.store import TMP_PREFIX
from glacierscale.pipeline import TileResult, process_tile
from glacierscale.plan import plan_tiles
from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import FaultLog, FaultPlan, final_puts
from glacierscale.testing.rangeserver import range_server
from glacierscale.testing.services import aws_environment, stac_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = GridConfig(tile_size_px=96, resolution=30.0, halo_px=8)  # 3 x 3 tiles over the sample
# Short waits, so faults cost a test seconds rather than minutes; the counts are the defaults'.
FAST = faults.FaultSettings(
    search=faults.RetrySettings(attempts=8, base_delay_s=0.02, max_delay_s=0.3),
    read=faults.RetrySettings(attempts=8, base_delay_s=0.02, max_delay_s=0.3),
    write=faults.RetrySettings(attempts=8, base_delay_s=0.02, max_delay_s=0.3),
    search_rate_per_s=200.0, search_burst=50, search_timeout_s=20.0,
    gdal_http_retries=5, gdal_http_retry_delay_s=0.02, gdal_http_timeout_s=20.0)


def _plan(share: float, seed: int, **kw: object) -> FaultPlan:
    """``share`` of the requests fail (503, 429, dropped, truncated); 5 % more come late."""
    return FaultPlan(error=0.4 * share, throttle=0.2 * share, drop=0.2 * share,
                     truncate=0.2 * share, slow=0.05, slow_s=0.2, retry_after_s=0, seed=seed,
                     **kw)  # type: ignore[arg-type]


READ_FAULTS = _plan(0.15, 14, path="^/faulty/")
SEARCH_FAULTS = _plan(0.15, 15)
# Half of the failed writes reach the store before the answer is lost.
WRITE_FAULTS = _plan(0.05, 16, methods=("PUT", "POST", "DELETE"), late=0.5)


def _items_ndjson(catalog: Path, root: Path, base: str, dest: Path) -> Path:
    """The sample's items with asset hrefs under ``base`` (``http://.../PREFIX/files``)."""
    lines = []
    for f in sorted(catalog.glob("*.json")):
        doc = json.loads(f.read_text())
        for asset in doc["assets"].values():
            rel = Path(urlsplit(asset["href"]).path).relative_to(root)
            asset["href"] = f"{base}/{rel.as_posix()}"
        lines.append(json.dumps(doc))
    dest.write_text("\n".join(lines) + "\n")
    return dest


def _run(cfg: RunConfig, tiles: list[TileSpec]) -> list[TileResult]:
    with faults.configured(FAST):
        return [process_tile(t, cfg) for t in tiles]


def _read_cog(fs: Any, path: str) -> tuple[np.ndarray, Any, Any, Any]:
    with MemoryFile(fs.cat_file(path)) as mem, mem.open() as ds:
        return ds.read(), ds.transform, ds.crs, ds.nodata


@dataclass
class Faulty:
    files: str
    catalog_clean: str
    catalog_faulty: str
    bucket: str
    reads: FaultLog
    searches: FaultLog
    writes: FaultLog


@pytest.fixture
def faulty_services(shared_data: Path, sample_cache: Path, s3_server: str,
                    tmp_path: Path) -> Iterator[Faulty]:
    """Range server, two STAC APIs (one behind the fault proxy) and S3 behind the fault proxy."""
    sample = athabasca_sample(shared_data, sample_cache)
    catalog = Path(sample.catalog)
    root = catalog.parent
    with range_server(root, faults=READ_FAULTS) as (files, read_log):
        clean = _items_ndjson(catalog, root, f"{files}/clean/files", tmp_path / "clean.ndjson")
        faulty = _items_ndjson(catalog, root, f"{files}/faulty/files", tmp_path / "faulty.ndjson")
        with stac_api([clean]) as clean_api, stac_api([faulty]) as faulty_up, \
                fault_proxy(faulty_up) as (faulty_api, search_log), \
                fault_proxy(s3_server, kind="s3") as (s3_url, write_log), \
                aws_environment(s3_url):
            import boto3

            bucket = f"faults-{uuid.uuid4().hex[:10]}"
            boto3.client("s3").create_bucket(Bucket=bucket)
            yield Faulty(files, clean_api, faulty_api, bucket, read_log, search_log, write_log)


def test_run_with_faulty_reads_searches_and_writes_matches_a_clean_run(
        faulty_services: Faulty, shared_data: Path, sample_cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    svc = faulty_services
    sample = athabasca_sample(shared_data, sample_cache)

    def cfg(catalog: str, name: str) -> RunConfig:
        return RunConfig(aoi=",".join(map(str, sample.bbox)), catalog=catalog, start=sample.start,
                         end=sample.end, collections=sample.collections, grid=GRID,
                         out=f"s3://{svc.bucket}/{name}", run_id="faults")

    # The sample's COGs are one block each, so GDAL would fetch them once for all tiles; a run
    # over large scenes reads new blocks for every tile. Not caching the faulty copy makes every
    # tile read it over the network again, as such a run would.
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", f"/vsicurl/{svc.files}/faulty/")
    tiles = list(plan_tiles(cfg(svc.catalog_clean, "clean").aoi, GRID).tiles)
    assert len(tiles) >= 6
    clean = _run(cfg(svc.catalog_clean, "clean"), tiles)
    assert [r.status for r in clean] == ["done"] * len(tiles), [r.reason for r in clean]
    assert not svc.reads.faults()  # the clean prefix is spared

    svc.searches.plan = SEARCH_FAULTS
    svc.writes.plan = WRITE_FAULTS
    faults.reset_retry_stats()
    faulty = _run(cfg(svc.catalog_faulty, "faulty"), tiles)
    retries = faults.retry_stats()
    svc.writes.plan = FaultPlan()  # count, no longer fail
    assert [r.status for r in faulty] == ["done"] * len(tiles), [r.reason for r in faulty]

    counted = {name: log.summary() for name, log in
               (("reads", svc.reads), ("searches", svc.searches), ("writes", svc.writes))}
    failing = [r for r in svc.reads.snapshot() if r.path.startswith("/faulty/")]
    counted["reads"]["faulty_run"] = {"requests": len(failing), "failed": sum(
        1 for r in failing if r.fault not in (None, "slow"))}
    print("\nFAULT RUN", json.dumps({"tiles": len(tiles), "servers": counted,
                                     "client_retries": retries}))
    for name, summary in counted.items():
        injected = {k: v for k, v in dict(summary["faults"]).items() if k != "slow"}
        assert sum(injected.values()) > 0, (name, summary)

    fs = s3fs.S3FileSystem()
    for t in tiles:
        for name in ("glacier_mask.tif", "glacier_prob.tif"):
            a = _read_cog(fs, f"{svc.bucket}/clean/tiles/{t.tile_id}/{name}")
            b = _read_cog(fs, f"{svc.bucket}/faulty/tiles/{t.tile_id}/{name}")
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1:] == b[1:], (t.tile_id, name)  # transform, CRS, nodata
    keys = fs.find(f"{svc.bucket}/faulty")
    assert not [k for k in keys if TMP_PREFIX in k], "temporary objects left behind"
    # Every final object was published once, as the clients saw it.
    puts = final_puts(svc.writes, f"/{svc.bucket}/faulty/tiles/")
    assert len(puts) == 4 * len(tiles) and set(puts.values()) == {1}, puts


def _reencode_with_small_blocks(path: Path, block: int) -> None:
    """Rewrite a COG in place with ``block`` px tiles (same pixels), as large real scenes have."""
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    profile.update(driver="GTiff", tiled=True, blockxsize=block, blockysize=block,
                   compress="deflate", predictor=2)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _corrupt_block(path: Path, col: int, row: int) -> bytes:
    """Overwrite the compressed bytes of one block with noise; returns the file's old bytes."""
    good = path.read_bytes()
    with rasterio.open(path) as ds:
        off = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    bad = bytearray(good)
    bad[off:off + size] = np.random.default_rng(7).integers(0, 256, size, np.uint8).tobytes()
    path.write_bytes(bytes(bad))
    return good


def test_a_corrupt_cog_fails_its_tiles_at_once_and_a_rerun_redoes_only_them(
        shared_data: Path, sample_cache: Path, tmp_path: Path) -> None:
    import shutil

    sample = athabasca_sample(shared_data, sample_cache)
    catalog = Path(sample.catalog)
    root = tmp_path / "sample"
    shutil.copytree(catalog.parent / "cogs", root / "cogs")
    victim = root / "cogs" / "hls_s30_2020-09-09" / "B04.tif"
    _reencode_with_small_blocks(victim, 64)
    with range_server(root) as (files, _log):
        items = _items_ndjson(catalog, catalog.parent, f"{files}/files", tmp_path / "items.ndjson")
        run = RunConfig(aoi=",".join(map(str, sample.bbox)), catalog=str(items),
                        start=sample.start, end=sample.end, collections=sample.collections,
                        grid=GRID, out=str(tmp_path / "out"))
        tiles = list(plan_tiles(run.aoi, GRID).tiles)
        good = _corrupt_block(victim, 1, 1)
        faults.reset_retry_stats()
        first = {r.tile_id: r for r in _run(run, tiles)}
        failed = {t for t, r in first.items() if r.status == "failed"}
        assert 0 < len(failed) < len(tiles), {t: r.status for t, r in first.items()}
        assert {r.status for t, r in first.items() if t not in failed} == {"done"}
        stats = faults.retry_stats()
        assert stats.get("read.retries", 0) == 0 and stats["read.permanent"] >= len(failed)
        for t in failed:
            reason = first[t].reason
            assert "B04.tif" in reason and "Decoding error" in reason, reason
            assert "(permanent)" in reason and "\n" not in reason, reason

        victim.write_bytes(good)  # repaired
        second = {r.tile_id: r for r in _run(run, tiles)}
    assert {t: r.status for t, r in second.items()} == {
        t: ("done" if t in failed else "skipped") for t in first}

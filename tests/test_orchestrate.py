"""Orchestration helpers: batching, regions, tile-function loading, retries, parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glacierscale.config import GridConfig, RunConfig
from glacierscale.core import faults
from glacierscale.core.tiles import TileSpec
from glacierscale.orchestrate import (
    config_from_parameters,
    group_by_region,
    make_batches,
    plan_regions,
    resolve_tile_fn,
    run_tile,
)
from glacierscale.orchestrate.artifacts import artifact_key, quicklook_data_uri, tally
from glacierscale.pipeline import TileResult, process_tile

CFG = RunConfig(aoi="-117.32,52.156,-117.232,52.21", catalog="unused",
                grid=GridConfig(tile_size_px=64, resolution=30, halo_px=0))


@given(st.integers(0, 2500), st.integers(1, 300))
def test_batches_cover_every_tile_once_in_order(n: int, size: int) -> None:
    ids = [f"32611_{i:04d}_0001" for i in range(n)]
    batches = make_batches("01", ids, size)
    assert [t for b in batches for t in b.tile_ids] == ids
    assert all(0 < len(b.tile_ids) <= size for b in batches)
    assert len(batches) == -(-n // size)


def test_ten_thousand_tiles_take_at_most_a_thousand_task_runs() -> None:
    ids = [f"32611_{i % 100:04d}_{i // 100:04d}" for i in range(10_000)]
    assert len(make_batches("01", ids, CFG.tiles_per_task)) == 100
    with pytest.raises(ValueError, match="tiles_per_task must be >= 1"):
        make_batches("01", ids, 0)


def test_tiles_without_a_region_group_by_projection() -> None:
    tiles = [TileSpec(32611, 1, 2), TileSpec(32612, 1, 2), TileSpec(32611, 2, 2)]
    assert group_by_region(tiles) == {"zone-32611": ["32611_0001_0002", "32611_0002_0002"],
                                      "zone-32612": ["32612_0001_0002"]}
    assert group_by_region(tiles, ["11", "", "11"]) == {
        "11": ["32611_0001_0002", "32611_0002_0002"], "zone-32612": ["32612_0001_0002"]}


@pytest.mark.integration
def test_real_rgi_outlines_group_by_their_region(shared_data: Path) -> None:
    outlines = shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"
    cfg = RunConfig(aoi=str(outlines), catalog="unused")
    groups = plan_regions(cfg)
    assert list(groups) == ["15"], groups
    assert len(groups["15"]) >= 1 and all(t.startswith("32645_") for t in groups["15"])


def test_tile_functions_load_by_path_with_clear_errors() -> None:
    assert resolve_tile_fn(None) is process_tile
    assert resolve_tile_fn("glacierscale.pipeline:process_tile") is process_tile
    with pytest.raises(ValueError, match=r"package\.module:function"):
        resolve_tile_fn("glacierscale.pipeline.process_tile")
    with pytest.raises(TypeError, match="not callable"):
        resolve_tile_fn("glacierscale.pipeline:log")


_CALLS: dict[str, int] = {}
#: Three tries, no waiting: the tile-level retry of the fault settings, made quick for a test.
_QUICK = faults.FaultSettings(tile=faults.RetrySettings(attempts=3, base_delay_s=0.0,
                                                         max_delay_s=0.0))


def _flaky(tile: TileSpec, cfg: RunConfig) -> TileResult:
    """Fails twice with a transient error, then works (retry with backoff)."""
    _CALLS[tile.tile_id] = _CALLS.get(tile.tile_id, 0) + 1
    if _CALLS[tile.tile_id] < 3:
        raise ConnectionError("connection reset by peer")
    return TileResult(tile.tile_id, "done")


def _broken(tile: TileSpec, cfg: RunConfig) -> TileResult:
    _CALLS[tile.tile_id] = _CALLS.get(tile.tile_id, 0) + 1
    raise KeyError("band 'swir16'")


def _always_down(tile: TileSpec, cfg: RunConfig) -> TileResult:
    raise TimeoutError("read timed out")


def test_transient_errors_are_retried_and_bugs_recorded() -> None:
    with faults.configured(_QUICK):
        assert run_tile("32611_0001_0002", CFG, _flaky).status == "done"
        assert _CALLS["32611_0001_0002"] == 3
        broken = run_tile("32611_0001_0004", CFG, _broken)
        down = run_tile("32611_0001_0003", CFG, _always_down)
    # a bug or bad input is not retried: one try, one line naming the cause
    assert broken.status == "failed" and "KeyError" in broken.reason
    assert _CALLS["32611_0001_0004"] == 1
    assert down.status == "failed" and "gave up after 3 attempts" in down.reason


def test_flow_parameters_become_a_run_config() -> None:
    cfg = config_from_parameters(
        out="s3://b/run", catalog="earth-search", outlines="rgi.zip", bbox=None, start=None,
        end=None, sensors=["sentinel-2-l2a"], model="band-ratio", tiles_per_task=50,
        reference=None, settings={"grid": {"tile_size_px": 512}, "workers": 4})
    assert (cfg.aoi, cfg.collections, cfg.tiles_per_task) == ("rgi.zip", ("sentinel-2-l2a",), 50)
    assert cfg.grid.tile_size_px == 512 and cfg.workers == 4
    with pytest.raises(ValueError, match="outlines=PATH_OR_URL"):
        config_from_parameters(out="o", catalog="c", outlines=None, bbox=None, start=None,
                               end=None, sensors=None, model="m", tiles_per_task=1,
                               reference=None, settings=None)


def test_artifact_helpers() -> None:
    assert artifact_key("region", "Zone 32611", "progress") == "region-zone-32611-progress"
    rs = [TileResult("a", "done", glacier_km2=1.25), TileResult("b", "failed", "x"),
          TileResult("c", "skipped"), TileResult("d", "no-data")]
    assert tally(rs) == {"done": 1, "skipped": 1, "no-data": 1, "failed": 1, "km2_mapped": 1.25}
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((2000, 1000, 3), dtype="uint8")).save(buf, format="PNG")
    uri = quicklook_data_uri(buf.getvalue(), max_px=500)
    import base64

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (250, 500)

"""The laptop demo end to end on the real Athabasca sample: every layer, real data, real outputs."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box
from typer.testing import CliRunner

from glacierscale.cli import app
from glacierscale.demo.sample import ATHABASCA_BBOX

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory, shared_data: Path,
             sample_cache: Path) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {"GLACIERSCALE_SAMPLE_DATA": str(shared_data), "GLACIERSCALE_CACHE": str(sample_cache)}
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--workers", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert "evaluation:" in result.output
    return out


def test_outputs_follow_the_layout(demo_out: Path) -> None:
    manifest = json.loads((demo_out / "manifest.json").read_text())
    statuses = {t["tile_id"]: t["status"] for t in manifest["tiles"]}
    assert len(statuses) == 4 and set(statuses.values()) == {"done"}, statuses
    for tid in statuses:
        tile = demo_out / "tiles" / tid
        for name in ("glacier_prob.tif", "glacier_mask.tif", "item.json", "outlines.parquet"):
            assert (tile / name).is_file(), f"{tid}/{name} missing"
        item = json.loads((tile / "item.json").read_text())
        assert item["properties"]["glacierscale:input_items"], "input item ids recorded"
        assert item["properties"]["glacierscale:model"] == "band-ratio"
    report = (demo_out / "report.md").read_text()
    assert "## Evaluation" in report and "## Time per stage" in report
    assert (demo_out / "quicklook.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_cog_validates_and_has_the_contracted_encoding(demo_out: Path) -> None:
    cogs = sorted(demo_out.glob("tiles/*/glacier_*.tif"))
    assert len(cogs) == 8
    for path in cogs:
        is_valid, errors, _warnings = cog_validate(str(path), quiet=True)
        assert is_valid, (path, errors)
        with rasterio.open(path) as ds:
            assert ds.dtypes[0] == "uint8" and ds.nodata == 255
            values = np.unique(ds.read(1))
        if path.name == "glacier_mask.tif":
            assert set(values.tolist()) <= {0, 1, 255}
        else:
            assert values[values != 255].max() <= 100


def test_masks_cover_the_sample_box(demo_out: Path) -> None:
    """The union of valid mask pixels covers the whole sample box (no holes, no seams)."""
    covered = []
    for path in sorted(demo_out.glob("tiles/*/glacier_mask.tif")):
        with rasterio.open(path) as ds:
            arr = ds.read(1)
            rows, cols = np.nonzero(arr != 255)
            xs, ys = rasterio.transform.xy(ds.transform, rows, cols)
            covered.append(gpd.GeoSeries(gpd.points_from_xy(xs, ys), crs=ds.crs))
    pts = gpd.GeoSeries(np.concatenate([c.values for c in covered]), crs=covered[0].crs)
    sample_box = gpd.GeoSeries([box(*ATHABASCA_BBOX)], crs=4326).to_crs(pts.crs).iloc[0]
    inside = pts[pts.within(sample_box)]
    expected = sample_box.area / 100.0  # 10 m pixels
    assert len(inside) / expected > 0.99


def test_band_ratio_accuracy_on_real_pixels(demo_out: Path, shared_data: Path) -> None:
    inv = gpd.read_parquet(demo_out / "inventory" / "glaciers.parquet")
    assert "area_km2" in inv.columns and len(inv) > 0 and inv.crs.to_epsg() == 4326
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--inventory",
                                 str(demo_out / "inventory" / "glaciers.parquet"), "--reference",
                                 str(shared_data / "athabasca" / "athabasca_outline.shp")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["recall_in_reference"] >= 0.9
    assert metrics["iou"] >= 0.48
    assert 0.0 <= metrics["fp_fraction_ring"] <= 1.0

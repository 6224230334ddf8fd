"""A run says where its model has not been: tiles outside the card's training domain are flagged
per tile, counted in the report, and the run logs one warning; tiles inside it pass quietly.

The same generated Sentinel-2 L2A scene (ice over rock, six bands, uint16 reflectance) is mapped
by the shipped ``default`` model through ``process_tile`` and ``finalize``, once inside the box
of its Athabasca training labels and once in the Alps, where it has never been.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from glacierscale.config import GridConfig, RunConfig
from glacierscale.pipeline import process_tile
from glacierscale.run import finalize, plan
from glacierscale.testing.rasters import make_item, write_cog

pytestmark = pytest.mark.integration

STEP = 0.0002  # degrees: ~14 m east-west, ~22 m north-south at 52N
#: reflectance of ice and rock per band (blue, green, red, nir, swir16, swir22)
ICE = {"blue": 0.75, "green": 0.72, "red": 0.68, "nir": 0.55, "swir16": 0.06, "swir22": 0.04}
ROCK = {"blue": 0.10, "green": 0.13, "red": 0.16, "nir": 0.24, "swir16": 0.30, "swir22": 0.25}


def _catalog(root: Path, box: tuple[float, float, float, float]) -> Path:
    """A one-item catalog of a scene over ``box``: the western half ice, the rest rock."""
    w, s, e, n = box
    shape = (round((n - s) / STEP), round((e - w) / STEP))
    tr = Affine(STEP, 0, w, 0, -STEP, n)
    ice = np.zeros(shape, bool)
    ice[:, : shape[1] // 2] = True
    # Earth Search's asset keys: the narrow NIR (B8A) is ``nir08``
    files = {"nir08" if b == "nir" else b: write_cog(root / "scene" / f"{b}.tif",
                          (np.where(ice, ICE[b], ROCK[b]) * 1e4).astype("uint16"),
                          "EPSG:4326", tr, nodata=0) for b in ICE}
    item = make_item("scene", "sentinel-2-l2a", datetime(2024, 9, 10, 18, 0, tzinfo=UTC), files,
                     raster={b: {"scale": 1e-4, "offset": 0.0} for b in files},
                     properties={"eo:cloud_cover": 0.0, "platform": "sentinel-2b"})
    path = root / "items" / "scene.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(item.to_dict()))
    return path.parent


def _run(tmp: Path, name: str, aoi: tuple[float, float, float, float],
         caplog: pytest.LogCaptureFixture) -> tuple[list[tuple[str, ...]], str, list[str]]:
    pad = 0.02
    catalog = _catalog(tmp / name / "catalog", (aoi[0] - pad, aoi[1] - pad, aoi[2] + pad,
                                                 aoi[3] + pad))
    cfg = RunConfig(aoi=",".join(f"{v:g}" for v in aoi), catalog=str(catalog),
                    start=datetime(2024, 9, 1).date(), end=datetime(2024, 9, 30).date(),
                    collections=("sentinel-2-l2a",), model="default", out=str(tmp / name / "out"),
                    grid=GridConfig(tile_size_px=128, resolution=30.0, halo_px=16))
    results = [process_tile(t, cfg) for t in plan(cfg)]
    assert {r.status for r in results} == {"done"}, [r.reason for r in results]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="glacierscale.run"):
        summary = finalize(cfg, results, {})
    warnings = [r.getMessage() for r in caplog.records if r.name == "glacierscale.run"]
    return [r.out_of_domain for r in results], summary.report_md, warnings


def test_tiles_inside_the_training_domain_pass_quietly(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    flags, report, warnings = _run(tmp_path, "athabasca", (-117.30, 52.165, -117.24, 52.205),
                                   caplog)
    assert flags and all(f == () for f in flags)
    assert "## Model domain" not in report
    assert not [w for w in warnings if "training domain" in w]


def test_tiles_outside_are_flagged_counted_and_warned_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flags, report, warnings = _run(tmp_path, "alps", (7.95, 46.50, 8.01, 46.54), caplog)
    assert flags and all(any("region not seen" in r for r in f) for f in flags)
    domain = [w for w in warnings if "training domain" in w]
    assert len(domain) == 1, warnings
    assert domain[0].startswith(f"{len(flags)} of {len(flags)} tiles lie outside")
    assert "## Model domain" in report and f"{len(flags)} of {len(flags)} tiles" in report
    manifest = json.loads(Path(tmp_path / "alps" / "out" / "manifest.json").read_text())
    assert all(t["out_of_domain"] for t in manifest["tiles"])

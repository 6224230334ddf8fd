"""The generated retreat scene through the real pipeline: imagery -> two runs -> change.

Reflectance rasters (red bright and SWIR dark on ice) of the two epochs of the zone-border scene
are indexed as a local STAC catalog and mapped by the band-ratio model through ``process_tile``
and ``finalize``, as ``glacierscale run`` does, on tiles of UTM zones 10 and 11: the catalog
search, the reprojection of one source onto both zones' grids, the tile outputs and the manifest
are all the real ones. The change must still be within 2 % of the geodesic truth.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.features import rasterize
from test_change_scene import G1, G1_B, G2, IDS, ground_km2, outlines_file

from glacierscale.config import GridConfig, RunConfig
from glacierscale.inventory.change import compare
from glacierscale.pipeline import process_tile
from glacierscale.run import finalize, plan
from glacierscale.testing.rasters import make_item, write_cog

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEP = 0.00005  # source pixel in degrees: ~3.6 m east-west, ~5.6 m north-south at 50N
BOX = (-120.03, 49.985, -119.92, 50.015)


def _scene_item(root: Path, name: str, ice: list[object], when: datetime) -> Path:
    """A Sentinel-2 L2A-like item of ``ice`` over rock, in lon/lat, as uint16 reflectance."""
    w, s, e, n = BOX
    shape = (round((n - s) / STEP), round((e - w) / STEP))
    tr = Affine(STEP, 0, w, 0, -STEP, n)
    on = rasterize(((g, 1) for g in ice), out_shape=shape, transform=tr, dtype="uint8") == 1
    red = np.where(on, 6000, 1500).astype("uint16")  # ice red/SWIR = 12, rock 0.75
    swir = np.where(on, 500, 2000).astype("uint16")
    files = {k: write_cog(root / name / f"{k}.tif", v, "EPSG:4326", tr, nodata=0)
             for k, v in (("red", red), ("swir16", swir))}
    item = make_item(name, "sentinel-2-l2a", when, files,
                     raster={k: {"scale": 1e-4, "offset": 0.0} for k in files},
                     properties={"eo:cloud_cover": 0.0})
    path = root / "items" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(item.to_dict()))
    return path.parent


def _run(tmp: Path, catalog: Path, day: date, ref: str, name: str) -> str:
    cfg = RunConfig(aoi=",".join(f"{v:g}" for v in BOX), catalog=str(catalog), start=day,
                    end=day, collections=("sentinel-2-l2a",), model="band-ratio",
                    reference=ref, out=str(tmp / name),
                    grid=GridConfig(tile_size_px=128, resolution=10.0, halo_px=16))
    results = [process_tile(t, cfg) for t in plan(cfg)]
    assert {r.status for r in results} == {"done"}, [r.reason for r in results]
    assert {r.tile_id[:5] for r in results} == {"32610", "32611"}
    finalize(cfg, results, {})
    return cfg.out


def test_known_retreat_through_the_pipeline(tmp_path: Path) -> None:
    ref = outlines_file(tmp_path)
    catalog = _scene_item(tmp_path / "imagery", "epoch-a", [G1, G2], datetime(2016, 9, 1, 18))
    _scene_item(tmp_path / "imagery", "epoch-b", [G1_B, G2], datetime(2020, 9, 1, 18))
    a = _run(tmp_path, catalog, date(2016, 9, 1), ref, "a")
    b = _run(tmp_path, catalog, date(2020, 9, 1), ref, "b")
    result = compare(a, b)
    g = result.glaciers.set_index("glacier_id")
    one, two = g.loc[IDS[0]], g.loc[IDS[1]]
    truth = ground_km2(G1_B) - ground_km2(G1)
    assert one["change_km2"] == pytest.approx(truth, rel=0.02)
    assert abs(one["change_km2"] - truth) <= one["change_unc_km2"]
    assert one["area_a_km2"] == pytest.approx(ground_km2(G1), rel=0.02)
    # The unchanged glacier stays unchanged: same pixels judged the same way.
    assert two["change_km2"] == pytest.approx(0.0, abs=1e-9)
    assert one["seen_share"] == pytest.approx(1.0) and one["compared"]
    assert shapely.intersects(G1, shapely.LineString([(-120, 49), (-120, 51)]))

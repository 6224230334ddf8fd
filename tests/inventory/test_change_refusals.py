"""``compare`` refuses pairs that would not judge the same pixels alike; options that shape it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from test_change_scene import Scene, ellipse, write_run

from glacierscale.inventory.change import compare
from glacierscale.inventory.change_epoch import ChangeRefusedError

ICE = ellipse(-117.0, 50.0, 0.004, 0.002)  # ~0.2 km², mid zone 11
SMALLER = ellipse(-117.0, 50.0, 0.0036, 0.0018)
A_DAY, B_DAY = datetime(2019, 8, 20, 18), datetime(2020, 8, 25, 18)


def _outlines(tmp: Path) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "outline.gpkg"
    gpd.GeoDataFrame({"RGIId": ["RGI60-02.00009"]}, geometry=[ICE.buffer(0.0005)],
                     crs=4326).to_file(path)
    return str(path)


def _pair(tmp: Path, a_kw: dict[str, Any] | None = None, b_kw: dict[str, Any] | None = None,
          b_scene: Scene | None = None) -> tuple[str, str]:
    ref = _outlines(tmp)
    kw = {"reference": ref, "size_px": 32}
    a = write_run(tmp / "a", Scene([ICE], when=A_DAY), **{**kw, **(a_kw or {})})
    b = write_run(tmp / "b", b_scene or Scene([SMALLER], when=B_DAY), **{**kw, **(b_kw or {})})
    return a, b


@pytest.mark.parametrize(("b_kw", "message"), [
    ({"size_px": 64}, "the grids differ: A has 32 px tiles of 10 m, B 64 px tiles of 10 m"),
    ({"res": 20.0, "size_px": 16}, "the grids differ"),
    ({"weights_hash": "b" * 64}, "the model weights differ"),
    ({"threshold": 0.6}, "the thresholds differ: A 0.5, B 0.6"),
])
def test_refuses_other_grid_model_or_threshold(tmp_path: Path, b_kw: dict[str, Any],
                                               message: str) -> None:
    a, b = _pair(tmp_path, b_kw=b_kw)
    with pytest.raises(ChangeRefusedError, match=message):
        compare(a, b)


def test_refuses_outputs_that_share_no_tile(tmp_path: Path) -> None:
    far = Scene([ellipse(-111.0, 50.0, 0.004, 0.002)], when=B_DAY)  # zone 12: another CRS grid
    a, b = _pair(tmp_path, b_scene=far)
    with pytest.raises(ChangeRefusedError, match="share no tile"):
        compare(a, b)


def test_refuses_a_shared_tile_on_another_pixel_grid(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    item_path = next((Path(b) / "tiles").glob("*/item.json"))
    item = json.loads(item_path.read_text())
    item["properties"]["proj:transform"][2] += 5.0  # half a pixel east
    item_path.write_text(json.dumps(item))
    with pytest.raises(ChangeRefusedError, match="lie on other pixel grids"):
        compare(a, b)


def test_refuses_mixed_weights_within_one_run(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    item_path = next((Path(a) / "tiles").glob("*/item.json"))
    item = json.loads(item_path.read_text())
    item["properties"]["glacierscale:weights_sha256"] = "c" * 64
    item_path.write_text(json.dumps(item))
    with pytest.raises(ChangeRefusedError, match="A's tiles were made by different model"):
        compare(a, b)


def test_refuses_unfinished_run_same_output_and_missing_outlines(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    with pytest.raises(ChangeRefusedError, match="same output"):
        compare(a, a)
    with pytest.raises(ChangeRefusedError, match=r"no manifest\.json"):
        compare(a, str(tmp_path / "nothing-here"))
    for root in (a, b):
        manifest = json.loads((Path(root) / "manifest.json").read_text())
        manifest["config"]["reference"] = None
        (Path(root) / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ChangeRefusedError, match="no glacier outlines"):
        compare(a, b)
    # Named outlines make the same pair comparable.
    assert len(compare(a, b, outlines=_outlines(tmp_path)).glaciers) == 1


def test_tiles_of_another_run_in_the_same_output_are_left_out(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    before = compare(a, b)
    # Another run (other settings, another area nearby) left its tiles in B's output.
    other = write_run(tmp_path / "other", Scene([ellipse(-116.97, 50.0, 0.004, 0.002)],
                                                when=B_DAY),
                      reference=_outlines(tmp_path), size_px=32, config_token="cfg2")
    for src in (Path(other) / "tiles").iterdir():
        dst = Path(b) / "tiles" / src.name
        assert not dst.exists()
        dst.mkdir()
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
    after = compare(a, b)
    assert after.epochs[1]["tiles"] == before.epochs[1]["tiles"]
    assert after.regions.equals(before.regions)
    # An output none of whose tiles belong to its manifest's run is refused.
    manifest = json.loads((Path(other) / "manifest.json").read_text())
    manifest["config_token"] = "cfg3"
    (Path(other) / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ChangeRefusedError, match="no finished tile of this run"):
        compare(a, other)


def test_sensors_may_differ_and_epochs_are_put_in_date_order(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, b_scene=Scene([SMALLER], when=B_DAY, collection="HLSL30_2.0"))
    forward, backward = compare(a, b), compare(b, a)
    for r in (forward, backward):
        g = r.glaciers.iloc[0]
        assert (g["sensor_a"], g["sensor_b"]) == ("sentinel-2-l2a", "HLSL30_2.0")
        assert g["change_km2"] < 0
    assert forward.glaciers.iloc[0]["change_km2"] == backward.glaciers.iloc[0]["change_km2"]


def test_rate_per_year_only_a_year_apart(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)  # 371 days apart
    g = compare(a, b).glaciers.iloc[0]
    assert g["years"] > 1 and g["change_pct_per_yr"] < 0
    close = Scene([SMALLER], when=datetime(2020, 8, 10, 18))  # 356 days
    a2, b2 = _pair(tmp_path / "close", b_scene=close)
    g2 = compare(a2, b2).glaciers.iloc[0]
    assert g2["change_pct"] < 0
    for col in ("change_km2_per_yr", "change_pct_per_yr", "change_pct_per_yr_unc"):
        assert g2[col] != g2[col]  # NaN


@pytest.mark.parametrize(("spread", "expect_zero"), [(0.0, True), (0.3, False), (None, False)])
def test_uncertainty_from_the_members_spread(tmp_path: Path, spread: float | None,
                                              expect_zero: bool) -> None:
    a, b = _pair(tmp_path, a_kw={"uncertainty": spread}, b_kw={"uncertainty": spread})
    r = compare(a, b)
    g = r.glaciers.iloc[0]
    # Members that agree everywhere leave no band; a spread (or the fixed margin) widens it.
    assert (g["area_a_unc_km2"] == 0.0) == expect_zero
    assert g["area_a_lo_km2"] <= g["area_a_km2"] <= g["area_a_hi_km2"]
    assert r.settings["uncertainty"] == ("ensemble spread" if spread is not None
                                         else "fixed probability margin ±0.25")


def test_min_seen_must_be_a_share(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    with pytest.raises(ValueError, match="min_seen"):
        compare(a, b, min_seen=1.5)


@pytest.mark.integration
def test_runs_and_results_on_object_storage(tmp_path: Path, s3_bucket: str) -> None:
    import fsspec

    a, b = _pair(tmp_path)
    fs = fsspec.filesystem("s3")
    for name, local in (("a", a), ("b", b)):
        fs.put(f"{local}/", f"{s3_bucket}/runs/{name}/", recursive=True)
    local = compare(a, b)
    remote = compare(f"s3://{s3_bucket}/runs/a", f"s3://{s3_bucket}/runs/b",
                     out=f"s3://{s3_bucket}/change")
    assert remote.regions.equals(local.regions)
    fs.invalidate_cache()
    assert fs.exists(f"{s3_bucket}/change/glaciers.parquet")
    assert fs.exists(f"{s3_bucket}/change/plots/region_02.png")
    assert remote.plot_urls["02"].startswith("s3://")

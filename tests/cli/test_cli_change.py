"""``glacierscale change A B``: results on disk, refusals as exit code 2 without a traceback."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import geopandas as gpd
import pytest
import typer
from typer.testing import CliRunner

from glacierscale.cli.change import EXIT_REFUSED, default_out, register


def _scene_module() -> ModuleType:
    """The generated-scene builder shared with the inventory change tests."""
    path = Path(__file__).parents[1] / "inventory" / "test_change_scene.py"
    spec = importlib.util.spec_from_file_location("change_scene", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


S = _scene_module()
ICE = S.ellipse(-117.0, 50.0, 0.004, 0.002)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """glacierscale (test harness)."""

    register(app)
    return app


def _runs(root: Path, a_name: str = "a", b_name: str = "b", **b_kw: object) -> tuple[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    ref = root / "outline.gpkg"
    gpd.GeoDataFrame({"RGIId": ["RGI60-02.00009"]}, geometry=[ICE.buffer(0.0005)],
                     crs=4326).to_file(ref)
    kw = {"reference": str(ref), "size_px": 32}
    a = S.write_run(root / a_name, S.Scene([ICE], when=datetime(2019, 8, 20, 18)), **kw)
    smaller = S.ellipse(-117.0, 50.0, 0.0036, 0.0018)
    b = S.write_run(root / b_name, S.Scene([smaller], when=datetime(2020, 8, 25, 18),
                                           collection="HLSL30_2.0"), **{**kw, **b_kw})
    return a, b


def test_change_writes_results_and_prints_regions(tmp_path: Path) -> None:
    a, b = _runs(tmp_path)
    out = tmp_path / "change"
    res = CliRunner().invoke(_app(), ["change", a, b, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "HLSL30_2.0" in res.output and "region 02: 1 glaciers (0 flagged)" in res.output
    for name in ("glaciers.parquet", "regions.csv", "outside.csv", "change.json", "change.md",
                 "plots/region_02.png"):
        assert (out / name).exists(), name
    summary = json.loads((out / "change.json").read_text())
    assert summary["regions"][0]["change_km2"] < 0


@pytest.mark.parametrize(("b_kw", "message"), [
    ({"threshold": 0.6}, "the thresholds differ"),
    ({"weights_hash": "f" * 64}, "the model weights differ"),
    ({"size_px": 64}, "the grids differ"),
])
def test_refusal_is_exit_code_2_with_a_message(tmp_path: Path, b_kw: dict[str, object],
                                               message: str) -> None:
    a, b = _runs(tmp_path, **b_kw)
    res = CliRunner().invoke(_app(), ["change", a, b, "--out", str(tmp_path / "c")])
    assert res.exit_code == EXIT_REFUSED == 2
    assert f"error: cannot compare these outputs: {message}" in res.output
    # A clean exit, not an exception escaping to the user.
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert not (tmp_path / "c").exists()


def test_two_runs_need_an_out_folder(tmp_path: Path) -> None:
    a, b = _runs(tmp_path)
    res = CliRunner().invoke(_app(), ["change", a, b])
    assert res.exit_code == 2 and "give --out" in res.output


def test_epochs_of_one_run_default_to_its_change_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a, b = _runs(run / "epochs", "2019", "2020")
    assert default_out(a, b) == f"{run}/change/2019_2020"
    assert default_out(str(tmp_path / "x"), str(tmp_path / "y")) is None
    res = CliRunner().invoke(_app(), ["change", a, b, "--min-seen", "0.95"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "change" / "2019_2020" / "change.json").read_text())[
        "settings"]["min_seen"] == 0.95

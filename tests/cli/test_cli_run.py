"""``glacierscale run``/``demo`` build their RunConfig: typed options, YAML, model-card defaults.

The flow itself is replaced by a stand-in that records the config it is given, so these tests
take a second; the real flow is covered by the demo and run integration tests. The preflight runs
for real, on a one-item catalog of last summer (its files never exist: the preflight reads
metadata only).
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import glacierscale.demo as sample_module
import glacierscale.orchestrate.api as api
import glacierscale.orchestrate.flows as orchestrate
from glacierscale.cli import app
from glacierscale.config import GridConfig, RunConfig
from glacierscale.demo import SampleCatalog
from glacierscale.run import RunSummary, finalize

AOI = "-117.32,52.156,-117.232,52.21"


@pytest.fixture
def catalog(tmp_path: Path) -> str:
    """A local catalog of one Sentinel-2 item over AOI, dated in last year's melt season."""
    when = f"{date.today().year - 1}-08-20T18:40:00Z"
    keys = ("blue", "green", "red", "nir08", "swir16", "swir22", "scl")
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "s2", "collection": "sentinel-2-l2a",
            "geometry": {"type": "Polygon", "coordinates": [[[-117.5, 52.0], [-117.0, 52.0],
                                                             [-117.0, 52.4], [-117.5, 52.4],
                                                             [-117.5, 52.0]]]},
            "bbox": [-117.5, 52.0, -117.0, 52.4], "properties": {"datetime": when},
            "assets": {k: {"href": f"/nowhere/{k}.tif"} for k in keys}, "links": []}
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "s2.json").write_text(json.dumps(item))
    return str(folder)


@pytest.fixture
def flow_configs(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """The configs ``glacierscale run``/``demo`` hand to the flow (which is not run)."""
    seen: list[RunConfig] = []

    def fake_run(cfg: RunConfig, **_: Any) -> RunSummary:
        seen.append(cfg)
        return RunSummary(cfg.out, [], "", None, None, 0, 0.0)

    monkeypatch.setattr(orchestrate, "run", fake_run)
    return seen


def _run(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["run", "--aoi", AOI, "--catalog", str(tmp_path / "catalog"),
                                    "--out", str(tmp_path / "out"), *args])


def test_cli_defaults_are_the_run_config_defaults(tmp_path: Path, catalog: str,
                                                  flow_configs: list[RunConfig]) -> None:
    result = _run(tmp_path)
    assert result.exit_code == 0, result.output
    (cfg,) = flow_configs
    assert cfg == RunConfig(aoi=AOI, catalog=catalog, out=str(tmp_path / "out"))
    assert cfg.model == "band-ratio" and cfg.grid.resolution == 10.0


def test_the_default_model_runs_at_its_cards_30_m(tmp_path: Path, catalog: str,
                                                  flow_configs: list[RunConfig]) -> None:
    result = _run(tmp_path, "--model", "default", "--tile-size-px", "256")
    assert result.exit_code == 0, result.output
    (cfg,) = flow_configs
    assert cfg.grid == GridConfig(tile_size_px=256, resolution=30.0)
    assert cfg.token() == RunConfig(aoi=AOI, catalog=catalog, model="default",
                                    grid=GridConfig(tile_size_px=256, resolution=30)).token()


def test_a_typed_resolution_wins_with_one_warning(tmp_path: Path, catalog: str,
                                                  flow_configs: list[RunConfig],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = _run(tmp_path, "--model", "default", "--resolution", "10")
    assert result.exit_code == 0, result.output
    assert flow_configs[0].grid.resolution == 10.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "30 m" in warnings[0] and "10 m" in warnings[0], warnings


def test_the_yaml_file_is_not_overridden_by_cli_defaults(tmp_path: Path, catalog: str,
                                                         flow_configs: list[RunConfig]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: default\nworkers: 3\ngrid:\n  resolution: 20\n  halo_px: 16\n")
    result = _run(tmp_path, "--config", str(config), "--tile-size-px", "512")
    assert result.exit_code == 0, result.output
    (cfg,) = flow_configs
    assert (cfg.model, cfg.workers) == ("default", 3)
    assert cfg.grid == GridConfig(tile_size_px=512, resolution=20, halo_px=16)


def test_an_unknown_model_is_an_option_error(tmp_path: Path, catalog: str,
                                             flow_configs: list[RunConfig]) -> None:
    result = _run(tmp_path, "--model", "no-such-model")
    assert result.exit_code == 2 and "--model" in result.output and "no-such-model" in result.output
    assert not flow_configs


def test_demo_keeps_10_m_for_the_band_ratio_and_follows_a_trained_model(
        tmp_path: Path, catalog: str, flow_configs: list[RunConfig],
        monkeypatch: pytest.MonkeyPatch) -> None:
    year = date.today().year - 1
    fake = SampleCatalog(catalog=catalog, bbox=(-117.32, 52.156, -117.232, 52.21),
                         start=date(year, 8, 1), end=date(year, 9, 30), collections=(),
                         reference=None, offline=True)
    monkeypatch.setattr(sample_module, "athabasca_sample", lambda *_: fake)
    for model in ("band-ratio", "default"):
        result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / model),
                                          "--model", model])
        assert result.exit_code == 0, result.output
    assert [c.grid.resolution for c in flow_configs] == [10.0, 30.0]


def test_the_manifest_records_the_resolution_used(tmp_path: Path, catalog: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolved config survives the flow's parameters into the run manifest."""

    def fake_flow(**params: Any) -> dict[str, Any]:
        keep = {"out", "catalog", "outlines", "bbox", "start", "end", "sensors", "model",
                "tiles_per_task", "reference", "settings"}
        cfg = orchestrate.config_from_parameters(**{k: params[k] for k in keep})
        return {"summary": finalize(cfg, [], {})}

    monkeypatch.setattr(orchestrate, "prefect_api", nullcontext)
    monkeypatch.setattr(api, "launch_temporary_api", lambda: None)
    monkeypatch.setattr(orchestrate, "early_cluster", lambda *a: nullcontext())
    monkeypatch.setattr(orchestrate, "global_inventory", fake_flow)
    result = _run(tmp_path, "--model", "default")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["grid"]["resolution"] == 30.0
    expected = RunConfig(aoi=AOI, catalog=catalog, model="default", out=str(tmp_path / "out"),
                         grid=GridConfig(resolution=30))
    assert manifest["config_token"] == expected.token()

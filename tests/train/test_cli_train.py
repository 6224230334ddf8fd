"""The train and evaluate-model commands: clear errors that name the fix, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from glacierscale.cli import train as train_cli


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    train_cli.register(app)
    return app


@pytest.mark.integration
def test_train_refuses_a_band_the_scene_lacks(app: typer.Typer, shared_data: Path,
                                              sample_cache: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLACIERSCALE_CACHE", str(sample_cache))
    res = CliRunner().invoke(app, [
        "train", "--outlines", str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"),
        "--catalog", "sample:everest", "--aoi=86.85,27.95,86.87,27.97",
        "--bands", "red,swir16", "--folds", "2", "--tile-size-px", "32", "--halo-px", "8",
        "--chip-px", "32", "--steps", "1", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "band 'swir16' is not in any" in res.output and "Landsat C2 L2" in res.output
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_bad_inputs_name_the_fix(app: typer.Typer, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--outlines", str(tmp_path / "missing.gpkg"),
                                   "--catalog", str(tmp_path), "--bands", "red",
                                   "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "cannot read reference outlines" in res.output
    res = CliRunner().invoke(app, ["train", "--outlines", "x", "--catalog", "sample:nowhere",
                                   "--bands", "red", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "sample catalogs are" in res.output
    res = CliRunner().invoke(app, ["evaluate-model", "--model", "band-ratio",
                                   "--catalog", str(tmp_path)])
    assert res.exit_code == 2 and "only models made by `glacierscale train`" in res.output


def test_stress_test_and_excluded_boxes_name_the_fix(app: typer.Typer, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["stress-test", "--model", "band-ratio", "--catalog",
                                   str(tmp_path), "--collections", "HLSS30_2.0"])
    assert res.exit_code == 2 and "only models made by `glacierscale train`" in res.output
    res = CliRunner().invoke(app, ["train", "--outlines", "x", "--catalog", str(tmp_path),
                                   "--bands", "red", "--out", str(tmp_path / "m"),
                                   "--exclude-box", "86.7,27.9,86.95"])
    assert res.exit_code == 2 and "is not a W,S,E,N box" in res.output

"""The model card's resolution_m is a run's default pixel size; a given resolution stays, warned."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from glacierscale.config import DEFAULT_RESOLUTION_M, GridConfig, RunConfig
from glacierscale.models import load_model
from glacierscale.run import resolve_config

AOI = "-117.32,52.156,-117.232,52.21"


def _cfg(**fields: object) -> RunConfig:
    return RunConfig.model_validate({"aoi": AOI, "catalog": "unused", **fields})


def _mismatch_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "resolution_m" in r.getMessage()]


def test_an_unset_resolution_becomes_the_cards() -> None:
    cfg = _cfg(model="m", grid={"tile_size_px": 256})
    assert not cfg.resolution_is_explicit() and cfg.grid.resolution == DEFAULT_RESOLUTION_M
    resolved = cfg.with_model_resolution(30.0)
    assert resolved.grid.resolution == 30.0 and resolved.resolution_is_explicit()
    assert resolved.grid.tile_size_px == 256, "the other grid settings are kept"
    # what the manifest records and what the tiles' resume token hashes
    assert resolved.model_dump(mode="json")["grid"]["resolution"] == 30.0
    assert resolved.token() != cfg.token()
    assert resolved.token() == _cfg(model="m", grid={"tile_size_px": 256,
                                                     "resolution": 30.0}).token()


def test_weight_free_models_keep_the_default() -> None:
    cfg = _cfg(model="band-ratio")
    assert cfg.with_model_resolution(None) is cfg
    assert cfg.with_model_resolution(None).grid.resolution == DEFAULT_RESOLUTION_M


@pytest.mark.parametrize(("given", "warns"), [(10.0, True), (19.9, True), (20.0, False),
                                              (30.0, False), (45.0, False), (45.1, True)])
def test_a_given_resolution_wins_with_a_warning_beyond_a_factor_1_5(
        given: float, warns: bool, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg(model="default", grid=GridConfig(resolution=given))
    with caplog.at_level(logging.INFO, logger="glacierscale.config"):
        resolved = cfg.with_model_resolution(30.0)
    assert resolved.grid.resolution == given
    warnings = _mismatch_warnings(caplog)
    assert len(warnings) == int(warns), warnings
    if warns:
        assert "30 m" in warnings[0] and f"{given:g} m" in warnings[0]
        assert "'default'" in warnings[0]


def test_resolving_twice_changes_nothing_and_stays_quiet(
        caplog: pytest.LogCaptureFixture) -> None:
    once = _cfg(model="m").with_model_resolution(30.0)
    caplog.clear()  # the first call may log (whether it is captured depends on earlier tests)
    with caplog.at_level(logging.INFO, logger="glacierscale.config"):
        assert once.with_model_resolution(30.0) == once
    assert not caplog.records


def test_a_resolution_in_the_yaml_file_counts_as_given(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"aoi: '{AOI}'\ncatalog: unused\nmodel: default\n"
                    "grid:\n  resolution: 20\n  halo_px: 8\n")
    cfg = RunConfig.from_yaml(path, grid={"tile_size_px": 256}, workers=None)
    assert cfg.grid == GridConfig(tile_size_px=256, resolution=20, halo_px=8)
    assert cfg.resolution_is_explicit() and cfg.model == "default"
    assert cfg.with_model_resolution(30.0).grid.resolution == 20
    path.write_text(f"aoi: '{AOI}'\ncatalog: unused\ngrid:\n  halo_px: 8\n")
    assert not RunConfig.from_yaml(path).resolution_is_explicit()


def test_resolve_config_reads_the_shipped_default_card() -> None:
    assert resolve_config(_cfg(model="default")).grid.resolution == 30.0
    assert resolve_config(_cfg(model="band-ratio")).grid.resolution == DEFAULT_RESOLUTION_M
    assert resolve_config(_cfg(model="ndsi")).grid.resolution == DEFAULT_RESOLUTION_M


def test_resolve_config_reads_a_card_file(tmp_path: Path) -> None:
    card = {**load_model("band-ratio").card.to_dict(), "name": "ratio-20m", "resolution_m": 20.0}
    path = tmp_path / "ratio-20m.json"
    path.write_text(json.dumps(card))
    resolved = resolve_config(_cfg(model=str(path)))
    assert resolved.grid.resolution == 20.0
    with pytest.raises(ValueError, match="unknown model"):
        resolve_config(_cfg(model="no-such-model"))

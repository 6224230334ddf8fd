"""``glacierscale catalog index``: local rasters as STAC items, then searched and loaded."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pystac
import pytest
import typer
from pystac.validation import RegisteredValidator
from typer.testing import CliRunner

from glacierscale.catalog import describe_rasters, guess_sensor, open_catalog
from glacierscale.cli.catalog import register
from glacierscale.core.tiles import TileSpec
from glacierscale.load import OPTICAL, load_tile, resolve

BOX = (-117.32, 52.156, -117.232, 52.21)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """glacierscale (test root)"""

    register(app)
    return app


def test_sensor_guesses() -> None:
    assert guess_sensor(["athabasca_2020253_B02_S30"]).collection == "HLSS30_2.0"
    assert guess_sensor(["x_B05_L30"]).common["B05"] == "nir08"
    oli = guess_sensor(["LC08_L2SP_005009_20150710_20200908_02_T2_SR_B5"])
    assert oli.collection == "landsat-c2-l2" and oli.common["SR_B5"] == "nir08"
    assert guess_sensor(["LT05_L2SP_x_SR_B4"]).common["SR_B4"] == "nir08"
    assert guess_sensor(["dem"]) is None


@pytest.mark.integration
def test_index_athabasca_then_search_and_load(shared_data: Path, tmp_path: Path) -> None:
    items = {i.id: i for i in describe_rasters(shared_data / "athabasca")}
    assert set(items) == {"hls_s30_2020-09-09", "hls_l30_2020-08-16", "s2_2020-09-11", "dem"}
    assert {i.collection_id for i in items.values()} == {
        "HLSS30_2.0", "HLSL30_2.0", "sentinel-2-l2a", "dem"}
    assert items["hls_l30_2020-08-16"].datetime.date() == date(2020, 8, 16)
    assert items["hls_s30_2020-09-09"].properties["glacierscale:datetime_source"] == "filename"
    l30 = resolve(items["hls_l30_2020-08-16"])
    assert {b: l30.bands[b].key for b in OPTICAL}["swir22"] == "B07"
    assert l30.bands["red"].scale == 1e-4 and l30.bands["red"].nodata == -9999
    assert resolve(items["dem"]).bands["elevation"].key == "data"
    out = tmp_path / "items.ndjson"
    result = CliRunner().invoke(_app(), ["catalog", "index", str(shared_data / "athabasca"),
                                         "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 4 items" in result.output
    validator = RegisteredValidator.get_validator()
    for line in out.read_text().splitlines():  # STAC 1.1 core schema, bundled with pystac
        validator.validate_core(json.loads(line), pystac.STACObjectType.ITEM, "1.1.0")
    assert (tmp_path / "items.collections" / "HLSL30_2.0.json").is_file()
    src = open_catalog(str(out))
    optical = src.search(BOX, date(2020, 8, 1), date(2020, 9, 30),
                         ["HLSS30_2.0", "HLSL30_2.0", "sentinel-2-l2a"])
    dem = src.search(BOX, None, None, ["dem"])
    assert len(optical) == 3 and len(dem) == 1
    tile = TileSpec(32611, 167, 1464, 96, 30.0, 16)
    ds = load_tile(tile, ["red", "swir16", "elevation"], optical, dem).compute()
    assert np.isfinite(ds.red.values).all() and (ds.clear_count.values >= 2).all()

    result = CliRunner().invoke(_app(), ["catalog", "search", str(out), "--bbox",
                                         ",".join(map(str, BOX)), "--year", "2020"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["window"] == ["2020-08-01", "2020-10-15"]
    assert set(report["chosen"]) == {"hls_s30_2020-09-09", "hls_l30_2020-08-16", "s2_2020-09-11"}


def test_index_errors_are_clear(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["catalog", "index", str(tmp_path), "--out",
                                         str(tmp_path / "o.ndjson")])
    assert result.exit_code == 2 and "no .tif/.tiff rasters" in result.output
    assert not (tmp_path / "o.ndjson").exists()
    bad = CliRunner().invoke(_app(), ["catalog", "search", str(tmp_path), "--bbox", "1,2,3"])
    assert bad.exit_code == 2 and "W,S,E,N" in bad.output

"""`glacierscale run` against a real STAC API on loopback (rustac serving the sample's items)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glacierscale.catalog import open_catalog
from glacierscale.cli import app
from glacierscale.demo.sample import ATHABASCA_WINDOW, athabasca_sample
from glacierscale.testing.services import stac_api

pytestmark = pytest.mark.integration

# one tile's worth of the sample box (the glacier tongue), so the API run stays small
TONGUE_BBOX = "-117.255,52.16,-117.24,52.168"


@pytest.fixture(scope="module")
def items_ndjson(shared_data: Path, sample_cache: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Path:
    sample = athabasca_sample(shared_data, sample_cache)
    path = tmp_path_factory.mktemp("api") / "items.ndjson"
    lines = [json.dumps(json.loads(p.read_text()))
             for p in sorted(Path(sample.catalog).glob("*.json"))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_api_search_matches_the_local_catalog(items_ndjson: Path, shared_data: Path,
                                              sample_cache: Path) -> None:
    sample = athabasca_sample(shared_data, sample_cache)
    start, end = ATHABASCA_WINDOW
    bbox = (-117.26, 52.16, -117.24, 52.19)
    local = open_catalog(sample.catalog).search(bbox, start, end, sample.collections)
    with stac_api([items_ndjson]) as url:
        remote = open_catalog(url).search(bbox, start, end, sample.collections)
        dem = open_catalog(url).search(bbox, None, None, ["cop-dem-glo-30"])
        outside = open_catalog(url).search(bbox, start.replace(year=2019),
                                           end.replace(year=2019), sample.collections)
    assert sorted(i.id for i in remote) == sorted(i.id for i in local)
    assert len(remote) == 3 and [i.id for i in dem] == ["dem"] and outside == []


def test_run_reads_its_scenes_from_the_api(items_ndjson: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with stac_api([items_ndjson]) as url:
        result = CliRunner().invoke(app, [
            "run", "--aoi", TONGUE_BBOX, "--catalog", url, "--start", "2020-08-01",
            "--end", "2020-09-30", "--model", "band-ratio", "--out", str(out), "--workers", "1",
            "--collections", "HLSS30_2.0,HLSL30_2.0,sentinel-2-l2a"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["status"] for t in manifest["tiles"]] == ["done"]
    item = json.loads((out / "tiles" / manifest["tiles"][0]["tile_id"] / "item.json").read_text())
    assert sorted(item["properties"]["glacierscale:input_items"]) == [
        "hls_l30_2020-08-16", "hls_s30_2020-09-09", "s2_2020-09-11"]

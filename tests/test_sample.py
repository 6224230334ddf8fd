"""The demo's local catalog: real rasters become valid COGs and STAC items, built atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest
from pystac.validation import RegisteredValidator
from rio_cogeo.cogeo import cog_validate

from glacierscale.demo.sample import EARTH_SEARCH, athabasca_sample, build_catalog

pytestmark = pytest.mark.integration


def test_sample_catalog_is_valid_stac_of_valid_cogs(shared_data: Path, sample_cache: Path) -> None:
    sample = athabasca_sample(shared_data, sample_cache)
    assert sample.offline and sample.reference and Path(sample.reference).is_file()
    items = sorted(Path(sample.catalog).glob("*.json"))
    assert [p.stem for p in items] == ["dem", "hls_l30_2020-08-16", "hls_s30_2020-09-09",
                                       "s2_2020-09-11"]
    validator = RegisteredValidator.get_validator()
    for path in items:
        data = json.loads(path.read_text())
        item = pystac.read_dict(data)
        assert isinstance(item, pystac.Item)
        validator.validate_core(item.to_dict(), pystac.STACObjectType.ITEM,
                                pystac.get_stac_version())
        for asset in item.assets.values():
            ok, errors, _ = cog_validate(asset.href, quiet=True)
            assert ok, (asset.href, errors)
    l30 = json.loads((Path(sample.catalog) / "hls_l30_2020-08-16.json").read_text())
    # the Landsat date has cloud-masked gaps: its cloud cover reflects them
    assert l30["properties"]["eo:cloud_cover"] > 0


def test_catalog_is_reused_and_never_half_built(shared_data: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cat"
    first = build_catalog(shared_data / "athabasca", dest)
    stamp = (first / "dem.json").stat().st_mtime_ns
    assert build_catalog(shared_data / "athabasca", dest) == first
    assert (first / "dem.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="expected one raster"):
        build_catalog(tmp_path / "nowhere", tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    assert not list(tmp_path.glob(".building-*"))


def test_without_sample_data_the_demo_goes_online(tmp_path: Path) -> None:
    sample = athabasca_sample(None, tmp_path)
    assert not sample.offline and sample.catalog == EARTH_SEARCH
    assert sample.collections == ("sentinel-2-l2a",)

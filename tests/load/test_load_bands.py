"""Band mapping: real STAC items of every supported collection map to common bands and scales."""

from __future__ import annotations

from pathlib import Path

import pystac
import pytest

from glacierscale.load import OPTICAL, is_dem_item, resolve

STAC = Path("stac_items")
PC_S2 = "odc-stac/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"


def _item(shared: Path, rel: str) -> pystac.Item:
    return pystac.Item.from_file(str(shared / STAC / rel))


@pytest.mark.integration
def test_planetary_computer_sentinel2_keys_scl_and_pre_04_baseline(shared_data: Path) -> None:
    item = _item(shared_data, PC_S2)
    r = resolve(item)
    assert {b: r.bands[b].key for b in OPTICAL} == {
        "blue": "B02", "green": "B03", "red": "B04", "nir": "B8A", "swir16": "B11",
        "swir22": "B12"}
    assert r.mask is not None and r.mask.key == "SCL" and r.mask_kind == "scl"
    # Baseline 02.12: no BOA offset.
    assert all(r.bands[b].scale == 1e-4 and r.bands[b].offset == 0.0 for b in OPTICAL)


@pytest.mark.integration
def test_baseline_04_adds_the_minus_0_1_offset(shared_data: Path) -> None:
    item = _item(shared_data, PC_S2)
    item.properties["s2:processing_baseline"] = "04.00"
    r = resolve(item)
    assert r.bands["red"].offset == pytest.approx(-0.1)
    # An explicit raster:bands offset (Earth Search v1 harmonises old scenes) wins.
    item.assets["B04"].extra_fields["raster:bands"] = [{"scale": 1e-4, "offset": -0.1}]
    item.properties["s2:processing_baseline"] = "02.12"
    assert resolve(item).bands["red"].offset == pytest.approx(-0.1)


@pytest.mark.integration
def test_earth_search_v0_sentinel2_baseline_from_product_id(shared_data: Path) -> None:
    item = _item(shared_data, "odc-stac/S2A_28QCH_20200714_0_L2A.json")
    r = resolve(item)
    assert r.bands["nir"].key == "B8A" and r.mask is not None and r.mask.key == "SCL"
    assert r.bands["nir"].offset == 0.0  # N0214
    item.properties["sentinel:product_id"] = "S2A_MSIL2A_20220714T115221_N0400_R123_T28QCH_X"
    assert resolve(item).bands["nir"].offset == pytest.approx(-0.1)


@pytest.mark.integration
@pytest.mark.parametrize("name", [
    "LC08_L2SP_047027_20201204_02_T1", "LC09_L2SP_010065_20220129_02_T1",
    "LE07_L2SP_021030_20100109_02_T1", "LT04_L2SP_002026_19830110_02_T1",
    "LT05_L2SP_010067_19860424_02_T2"])
def test_landsat_c2_l2_all_platforms(shared_data: Path, name: str) -> None:
    item = _item(shared_data, f"stactools-landsat/examples/landsat-c2-l2/{name}/{name}.json")
    r = resolve(item)
    assert {b: r.bands[b].key for b in OPTICAL} == {
        "blue": "blue", "green": "green", "red": "red", "nir": "nir08", "swir16": "swir16",
        "swir22": "swir22"}
    assert r.bands["red"].scale == pytest.approx(2.75e-5) and r.bands["red"].offset == -0.2
    assert r.bands["red"].nodata == 0
    assert r.mask is not None and r.mask.key == "qa_pixel" and r.mask_kind == "qa_pixel"
    assert r.mask.nodata == 1


@pytest.mark.integration
def test_usgs_file_named_assets_depend_on_the_sensor(shared_data: Path) -> None:
    oli = resolve(_item(shared_data, "odc-stac/LC08_L2SR_081119_20200101_20200823_02_T2.json"))
    assert oli.bands["blue"].key == "SR_B2.TIF" and oli.bands["swir16"].key == "SR_B6.TIF"
    assert oli.mask is not None and oli.mask.key == "QA_PIXEL.TIF"
    real = pystac.Item.from_file(str(
        shared_data / "landsat8_c2l2/greenland_LC08_005009_20150710"
        / "LC08_L2SP_005009_20150710_20200908_02_T2_SR_stac.json"))
    assert resolve(real).bands["nir"].key == "SR_B5.TIF"
    etm = resolve(_item(shared_data, "odc-stac/LE07_L2SP_044033_20210329_20210424_02_T1_SR.json"))
    assert etm.bands["nir"].key == "nir08" and etm.mask is not None


@pytest.mark.integration
def test_copernicus_dem_is_elevation_and_static(shared_data: Path) -> None:
    for res in ("10", "30"):
        glo = "glo-30" if res == "10" else "glo-90"
        name = f"Copernicus_DSM_COG_{res}_N53_00_W115_00_DEM"
        item = _item(shared_data, f"stactools-cop-dem/examples/cop-dem-{glo}/{name}/{name}.json")
        r = resolve(item)
        assert r.bands["elevation"].key == "data" and r.bands["elevation"].scale == 1.0
        assert r.mask is None and is_dem_item(item)


def test_hls_and_demo_layouts() -> None:
    def item(coll: str, keys: list[str], raster: dict | None = None) -> pystac.Item:
        it = pystac.Item("x", None, None, pystac.utils.str_to_datetime("2020-09-09T00:00:00Z"), {},
                         collection=coll)
        for k in keys:
            it.add_asset(k, pystac.Asset(f"/tmp/{k}.tif", extra_fields=(
                {"raster:bands": [raster]} if raster else {})))
        return it

    s30 = resolve(item("HLSS30_2.0", ["B02", "B03", "B04", "B8A", "B11", "B12", "Fmask"]))
    assert s30.bands["nir"].key == "B8A" and s30.bands["swir22"].key == "B12"
    assert s30.mask_kind == "fmask" and s30.bands["red"].nodata == -9999
    l30 = resolve(item("HLSL30_2.0", ["B02", "B03", "B04", "B05", "B06", "B07"]))
    assert (l30.bands["nir"].key, l30.bands["swir16"].key, l30.bands["swir22"].key) == (
        "B05", "B06", "B07")
    assert l30.mask is None and l30.bands["blue"].scale == 1e-4
    # The demo's Sentinel-2 item: Earth Search keys, raster:bands scale, no scl asset.
    es = resolve(item("sentinel-2-l2a", ["blue", "green", "red", "nir08", "swir16", "swir22"],
                      {"scale": 1e-4, "offset": 0.0, "nodata": -9999}))
    assert es.bands["nir"].key == "nir08" and es.mask is None and es.bands["red"].nodata == -9999
    # An unknown collection with HLS keys still maps by its asset keys.
    other = resolve(item("my-hls-copy", ["B02", "B03", "B04", "B05", "B06", "B07"]))
    assert other.profile == "hls-l30"

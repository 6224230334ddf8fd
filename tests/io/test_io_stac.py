"""Tile outputs and their STAC metadata: layout, validity, provenance, rerun checks, odc-stac."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.errors import STACValidationError

from glacierscale.core.tiles import TileSpec
from glacierscale.io import (
    Provenance,
    Store,
    read_items,
    tile_complete,
    tile_item,
    validate_core,
    write_collection,
    write_tile_outputs,
)
from glacierscale.io.stac import sha256_multihash

TILE = TileSpec(32611, 47, 404, size_px=256, resolution=10.0, halo_px=16)
PROV = Provenance(input_ids=("S2A_MSIL2A_20200911_T11UNT", "cop-dem-glo-30_N52_W118"),
                  model="unet-r34", weights_hash="ab" * 32, version="9.9.9", run_id="run-42")


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: TILE.shape[0], : TILE.shape[1]]
    prob = np.clip(1.2 - np.hypot(yy - 140, xx - 120) / 80.0, 0, 1).astype("float32")
    prob[:40, :40] = np.nan  # no data in a corner (halo and core)
    unc = (0.05 + 0.1 * rng.random(prob.shape)).astype("float32")
    return prob, unc


def test_tile_outputs_layout_and_core_only(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "run"))
    prob, unc = _arrays()
    item = write_tile_outputs(store, TILE, prob, uncertainty=unc, provenance=PROV,
                              when=datetime(2020, 9, 11, 18, 30))
    base = f"tiles/{TILE.tile_id}/"
    assert set(store.list(base)) == {base + n for n in (
        "glacier_prob.tif", "glacier_mask.tif", "glacier_uncertainty.tif", "item.json")}
    core = prob[TILE.core_slice]
    with rasterio.open(store.url(base + "glacier_prob.tif")) as ds:
        assert ds.shape == (256, 256) and ds.nodata == 255  # the halo is not written
        assert ds.transform == TILE.core_transform
        p = ds.read(1)
        assert ds.tags()["GLACIERSCALE_MODEL"] == "unet-r34"
        assert ds.tags()["GLACIERSCALE_INPUT_ITEMS"].split(",") == list(PROV.input_ids)
        assert ds.tags()["GLACIERSCALE_TOKEN"] == PROV.token(TILE.tile_id)
    np.testing.assert_array_equal(p == 255, np.isnan(core))
    np.testing.assert_array_equal(p[~np.isnan(core)], np.round(core[~np.isnan(core)] * 100))
    with rasterio.open(store.url(base + "glacier_mask.tif")) as ds:
        m = ds.read(1)
        assert ds.nodata == 255
    np.testing.assert_array_equal(m[np.isnan(core)], 255)
    np.testing.assert_array_equal(m[~np.isnan(core)], core[~np.isnan(core)] >= 0.5)
    # The item lists each asset with its size and checksum.
    d = json.loads(store.read_bytes(base + "item.json"))
    blob = store.read_bytes(base + "glacier_mask.tif")
    assert d["assets"]["mask"]["file:size"] == len(blob)
    assert d["assets"]["mask"]["file:checksum"] == sha256_multihash(blob)
    assert d["properties"]["proj:code"] == "EPSG:32611"
    assert d["properties"]["proj:shape"] == [256, 256]
    assert d["properties"]["glacierscale:run_id"] == "run-42"
    assert d["properties"]["datetime"] == "2020-09-11T18:30:00Z"
    assert item.id == TILE.tile_id


def test_items_and_collection_validate_against_core_schemas(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "run"))
    prob, unc = _arrays()
    for col in (47, 48):
        tile = TileSpec(32611, col, 404, size_px=256, resolution=10.0, halo_px=16)
        write_tile_outputs(store, tile, prob, uncertainty=unc, provenance=PROV,
                           when=datetime(2020, 8, 1), end=datetime(2020, 9, 30))
    for key in store.list("tiles/"):
        if key.endswith("item.json"):
            validate_core(json.loads(store.read_bytes(key)))
    items = read_items(store)
    assert [it.id for it in items] == ["32611_0047_0404", "32611_0048_0404"]
    write_collection(store, items)
    coll = json.loads(store.read_bytes("collection.json"))
    validate_core(coll)
    assert sorted(ln["href"] for ln in coll["links"] if ln["rel"] == "item") == [
        f"./tiles/{it.id}/item.json" for it in items]
    assert coll["extent"]["temporal"]["interval"][0][0].startswith("2020-08-01")
    # A broken document is caught (the validator really validates).
    broken = json.loads(store.read_bytes(f"tiles/{items[0].id}/item.json"))
    del broken["geometry"]
    with pytest.raises(STACValidationError):
        validate_core(broken)


def test_item_needs_a_date() -> None:
    with pytest.raises(ValueError, match="needs datetime_"):
        tile_item(TILE.tile_id, crs=TILE.crs, transform=TILE.core_transform, shape=(256, 256),
                  provenance=PROV)


def test_items_open_with_pystac_and_odc_stac(tmp_path: Path) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    store = Store(str(tmp_path / "run"))
    prob, unc = _arrays()
    write_tile_outputs(store, TILE, prob, uncertainty=unc, provenance=PROV,
                       when=datetime(2020, 9, 11))
    item = pystac.Item.from_file(store.url(f"tiles/{TILE.tile_id}/item.json"))
    assert Path(item.assets["mask"].get_absolute_href() or "").exists()
    ds = odc_stac.load([item], bands=["mask", "prob"], chunks=None)
    core = prob[TILE.core_slice]
    mask = ds["mask"].isel(time=0).values
    np.testing.assert_array_equal(mask[~np.isnan(core)], core[~np.isnan(core)] >= 0.5)
    assert ds.odc.geobox.crs.epsg == 32611 and ds["mask"].shape[1:] == (256, 256)


def test_tile_complete_tracks_token_and_assets(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "run"))
    prob, unc = _arrays()
    token = PROV.token(TILE.tile_id)
    assert not tile_complete(store, TILE.tile_id, token)
    write_tile_outputs(store, TILE, prob, uncertainty=unc, provenance=PROV,
                       when=datetime(2020, 9, 11))
    assert tile_complete(store, TILE.tile_id, token)
    # Other inputs or another model: redo.
    other = Provenance(input_ids=("another-scene",), model="unet-r34", weights_hash="ab" * 32)
    assert other.token(TILE.tile_id) != token
    assert not tile_complete(store, TILE.tile_id, other.token(TILE.tile_id))
    # Run id and version do not change what a tile depends on.
    assert Provenance(PROV.input_ids, PROV.model, PROV.weights_hash, "0.0.1", "rerun").token(
        TILE.tile_id) == token
    # A truncated or missing asset: redo.
    key = f"tiles/{TILE.tile_id}/glacier_prob.tif"
    store.write_bytes_atomic(key, store.read_bytes(key)[:100])
    assert not tile_complete(store, TILE.tile_id, token)
    store.delete(key)
    assert not tile_complete(store, TILE.tile_id, token)


def test_wrong_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected the core"):
        write_tile_outputs(Store(str(tmp_path)), TILE, np.zeros((100, 100), "float32"),
                           provenance=PROV, when=datetime(2020, 1, 1))

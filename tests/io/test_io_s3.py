"""Outputs on a real S3-compatible server (moto, 127.0.0.1): s3fs and GDAL /vsis3/ paths."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from glacierscale.core.tiles import TileSpec
from glacierscale.io import (
    BucketNotFoundError,
    Provenance,
    Store,
    check_bucket,
    gdal_env_for,
    read_geoparquet,
    tile_complete,
    to_gdal_path,
    write_cog,
    write_geoparquet,
    write_tile_outputs,
)

pytestmark = pytest.mark.integration

TILE = TileSpec(32645, 47, 310, size_px=128, resolution=30.0, halo_px=8)


def test_gdal_env_translates_the_botocore_endpoint(s3_env: dict[str, str]) -> None:
    env = gdal_env_for("s3://any/x.tif")
    host = s3_env["AWS_ENDPOINT_URL"].removeprefix("http://")
    assert env["AWS_S3_ENDPOINT"] == host and env["AWS_HTTPS"] == "NO"
    assert env["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert s3_env["AWS_ACCESS_KEY_ID"] not in json.dumps(env)
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(env)
    assert gdal_env_for("/local/path.tif") == {}
    assert to_gdal_path("s3://b/k/x.tif") == "/vsis3/b/k/x.tif"
    assert to_gdal_path("/a/b.tif") == "/a/b.tif"
    with pytest.raises(ValueError, match="GDAL cannot open"):
        to_gdal_path("memory://x/y.tif")


def test_missing_bucket_is_a_clear_error(s3_env: dict[str, str], s3_bucket: str) -> None:
    with pytest.raises(BucketNotFoundError, match=r"does not exist.*aws s3 mb s3://no-such-b"):
        check_bucket("s3://no-such-bucket-here/run")
    check_bucket(f"s3://{s3_bucket}/run")  # exists: no error
    check_bucket("/tmp/anything")  # local: nothing to check


def test_cog_on_s3_reads_through_s3fs_and_vsis3(s3_bucket: str) -> None:
    store = Store(f"s3://{s3_bucket}/run")
    data = np.random.default_rng(3).integers(0, 100, (700, 600), dtype="uint8")
    url = write_cog(store, "tiles/a/glacier_prob.tif", data, transform=TILE.core_transform,
                    crs=TILE.crs, nodata=255, descriptions=["p"])
    assert url == f"s3://{s3_bucket}/run/tiles/a/glacier_prob.tif"
    assert store.list() == ["tiles/a/glacier_prob.tif"]  # no temporary left
    # s3fs path: the bytes are the whole COG.
    blob = store.read_bytes("tiles/a/glacier_prob.tif")
    assert blob[:4] in (b"II*\x00", b"II+\x00")
    # GDAL path: /vsis3/ range reads with the translated endpoint.
    with rasterio.Env(**gdal_env_for(url)):
        with rasterio.open(to_gdal_path(url)) as ds:
            assert ds.block_shapes == [(512, 512)]
            window = ds.read(1, window=((600, 700), (500, 600)))
        ok, errors, _ = cog_validate(to_gdal_path(url), quiet=True)
    assert ok, errors
    np.testing.assert_array_equal(window, data[600:700, 500:600])


def test_vector_round_trip_on_s3(s3_bucket: str) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    store = Store(f"s3://{s3_bucket}/run")
    gdf = gpd.GeoDataFrame({"rgi_id": ["RGI60-15.00001"], "area_km2": [1.5]},
                           geometry=[box(0, 0, 1, 1)], crs="EPSG:4326")
    write_geoparquet(store, "inventory/glaciers.parquet", gdf)
    back = read_geoparquet(store, "inventory/glaciers.parquet")
    assert back.crs.to_epsg() == 4326 and back["rgi_id"].tolist() == ["RGI60-15.00001"]


def test_credentials_never_reach_outputs_or_logs(s3_env: dict[str, str], s3_bucket: str,
                                                 caplog: pytest.LogCaptureFixture,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from glacierscale.inventory import rebuild_inventory, vectorize_tile

    caplog.set_level(logging.DEBUG)
    secrets = (s3_env["AWS_SECRET_ACCESS_KEY"], s3_env["AWS_ACCESS_KEY_ID"])
    out = f"s3://{s3_bucket}/run"
    store = Store(out)
    yy, xx = np.mgrid[:128, :128]
    prob = np.clip(1.5 - np.hypot(yy - 64, xx - 70) / 30.0, 0, 1).astype("float32")
    mask = (prob >= 0.5).astype("uint8")
    outlines = vectorize_tile(mask, prob, transform=TILE.core_transform, crs=TILE.crs,
                              tile_id=TILE.tile_id)
    prov = Provenance(("scene-1",), "band-ratio", run_id="r1")
    write_tile_outputs(store, TILE, prob, provenance=prov, when=datetime(2020, 9, 1),
                       outlines=outlines)
    assert tile_complete(store, TILE.tile_id, prov.token(TILE.tile_id))
    result = rebuild_inventory(out, exports=["gpkg", "fgb"])
    assert result["glaciers"] == 1
    keys = store.list()
    assert {"collection.json", "inventory/glaciers.parquet", "inventory/glaciers.gpkg",
            "inventory/glaciers.fgb", "inventory/summary.csv"} <= set(keys)
    for key in keys:
        blob = store.read_bytes(key)
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret!r} leaked into {key}"
    printed = json.dumps(result) + "".join(capsys.readouterr()) + repr(store)
    assert all(secret not in printed for secret in secrets)
    # The secret key appears nowhere, not even in third-party DEBUG logs. botocore's own DEBUG
    # output shows the access key id in signed headers; everything at INFO and above, and all
    # of glacierscale's logging at any level, shows neither.
    assert secrets[0] not in caplog.text
    ours = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.INFO or r.name.startswith("glacierscale")]
    assert ours and all(secret not in m for m in ours for secret in secrets)

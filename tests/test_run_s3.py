"""`glacierscale run --out s3://...` against a real S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
import s3fs
from rio_cogeo.cogeo import cog_validate
from typer.testing import CliRunner

from glacierscale.cli import app
from glacierscale.demo.sample import athabasca_sample
from glacierscale.io import gdal_env_for

pytestmark = pytest.mark.integration

TONGUE_BBOX = "-117.255,52.16,-117.24,52.168"


def _run(catalog: str, out: str) -> object:
    return CliRunner().invoke(app, [
        "run", "--aoi", TONGUE_BBOX, "--catalog", catalog, "--start", "2020-08-01",
        "--end", "2020-09-30", "--out", out, "--workers", "1"])


def test_run_writes_a_complete_run_to_s3(s3_bucket: str, s3_env: dict[str, str],
                                         shared_data: Path, sample_cache: Path) -> None:
    sample = athabasca_sample(shared_data, sample_cache)
    out = f"s3://{s3_bucket}/athabasca"
    result = _run(sample.catalog, out)
    assert result.exit_code == 0, result.output
    fs = s3fs.S3FileSystem()
    manifest = json.loads(fs.cat(f"{out}/manifest.json"))
    (tile,) = manifest["tiles"]
    assert tile["status"] == "done", tile
    keys = {k.split("/", 1)[1] for k in fs.find(f"{s3_bucket}/athabasca")}
    tid = tile["tile_id"]
    assert {f"athabasca/tiles/{tid}/glacier_prob.tif", f"athabasca/tiles/{tid}/glacier_mask.tif",
            f"athabasca/tiles/{tid}/item.json", "athabasca/inventory/glaciers.parquet",
            "athabasca/report.md"} <= keys
    assert not [k for k in keys if ".glacierscale-tmp" in k], "no temporary objects left behind"
    # GDAL reads the COGs straight from the object store (/vsis3/ with the endpoint from the env)
    with rasterio.Env(**gdal_env_for(out)):
        url = f"{out}/tiles/{tid}/glacier_mask.tif"
        ok, errors, _ = cog_validate(url, quiet=True)
        assert ok, errors
        with rasterio.open(url) as ds:
            assert ds.nodata == 255 and ds.read(1).max() == 255
    blob = b"".join(fs.cat(f"{s3_bucket}/{k}") for k in keys if not k.endswith(".tif"))
    assert s3_env["AWS_SECRET_ACCESS_KEY"].encode() not in blob
    assert s3_env["AWS_ACCESS_KEY_ID"].encode() not in blob
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.output


def test_missing_bucket_names_the_fix(s3_env: dict[str, str], shared_data: Path,
                                      sample_cache: Path) -> None:
    sample = athabasca_sample(shared_data, sample_cache)
    result = _run(sample.catalog, "s3://no-such-bucket-glacierscale/x")
    assert result.exit_code != 0
    message = str(result.exception) + result.output
    assert "no-such-bucket-glacierscale" in message and "mb" in message

"""COG writer: tiling, compression, overviews, nodata, descriptions, tags, validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from glacierscale.io import CogValidationError, Store, build_cog, validate_cog, write_cog
from glacierscale.io.cog import validate_cog_file

TRANSFORM = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_800_000.0)


def test_cog_layout_and_metadata(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    rng = np.random.default_rng(0)
    data = rng.integers(0, 101, (1024, 1024), dtype="uint8")
    data[:5, :5] = 255
    url = write_cog(store, "tiles/t/glacier_prob.tif", data, transform=TRANSFORM,
                    crs="EPSG:32611", nodata=255, tags={"GLACIERSCALE_MODEL": "unet"},
                    descriptions=["glacier probability (percent)"])
    ok, errors, _ = cog_validate(url, quiet=True)
    assert ok, errors
    with rasterio.open(url) as ds:
        assert ds.driver == "GTiff" and ds.count == 1 and ds.dtypes == ("uint8",)
        assert ds.block_shapes == [(512, 512)]
        assert ds.compression is not None and ds.compression.name.lower() == "deflate"
        assert ds.overviews(1) == [2]
        assert ds.nodata == 255
        assert ds.descriptions == ("glacier probability (percent)",)
        assert ds.tags()["GLACIERSCALE_MODEL"] == "unet"
        assert ds.crs.to_epsg() == 32611 and ds.transform == TRANSFORM
        np.testing.assert_array_equal(ds.read(1), data)
        assert ds.profile.get("interleave", "").lower() in ("band", "pixel")


def test_multiband_float_with_nan_nodata(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    data = np.random.default_rng(1).random((3, 300, 200)).astype("float32")
    data[:, 0, 0] = np.nan
    url = write_cog(store, "m.tif", data, transform=TRANSFORM, crs="EPSG:32611",
                    nodata=float("nan"), descriptions=["a", "b", "c"])
    with rasterio.open(url) as ds:
        assert ds.count == 3 and ds.shape == (300, 200) and math.isnan(ds.nodata)
        assert ds.descriptions == ("a", "b", "c")
        np.testing.assert_array_equal(ds.read(), data)
    assert validate_cog(store, "m.tif")


def test_memory_store(tmp_path: Path) -> None:
    store = Store("memory://cog-test/run")
    write_cog(store, "x.tif", np.ones((64, 64), "uint8"), transform=TRANSFORM,
              crs="EPSG:32611", nodata=255)
    assert store.list() == ["x.tif"]
    assert validate_cog(store, "x.tif")
    assert not validate_cog(store, "missing.tif")


@pytest.mark.parametrize("bad, match", [
    (np.ones((2, 2, 2, 2), "uint8"), "must be"),
    (np.ones((0, 5), "uint8"), "must be"),
])
def test_bad_arrays_are_refused(tmp_path: Path, bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_cog(Store(str(tmp_path)), "bad.tif", bad, transform=TRANSFORM, crs="EPSG:32611",
                  nodata=0)
    assert Store(str(tmp_path)).list() == []


def test_nan_nodata_on_integers_and_wrong_descriptions_are_refused(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    with pytest.raises(ValueError, match="integer nodata"):
        write_cog(store, "a.tif", np.ones((8, 8), "uint8"), transform=TRANSFORM,
                  crs="EPSG:32611", nodata=float("nan"))
    with pytest.raises(ValueError, match="2 band descriptions for 1 band"):
        write_cog(store, "a.tif", np.ones((8, 8), "uint8"), transform=TRANSFORM,
                  crs="EPSG:32611", nodata=0, descriptions=["a", "b"])


def test_plain_tiff_fails_validation(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1,
                       dtype="uint8", crs="EPSG:32611", transform=TRANSFORM) as ds:
        ds.write(np.zeros((1, 1024, 1024), "uint8"))
    with pytest.raises(CogValidationError, match="not a valid COG"):
        validate_cog_file(path)
    ok = build_cog(tmp_path / "ok.tif", np.zeros((1024, 1024), "uint8"), transform=TRANSFORM,
                   crs="EPSG:32611", nodata=255)
    validate_cog_file(ok)


def test_secrets_in_tags_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "very-secret-value-123456"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    url = write_cog(Store(str(tmp_path)), "t.tif", np.ones((8, 8), "uint8"), transform=TRANSFORM,
                    crs="EPSG:32611", nodata=255, tags={"NOTE": f"oops {secret}"})
    assert secret.encode() not in Path(url).read_bytes()
    with rasterio.open(url) as ds:
        assert ds.tags()["NOTE"] == "oops ***"

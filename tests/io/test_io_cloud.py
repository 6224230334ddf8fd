"""Endpoint resolution for botocore and GDAL, GDAL paths: no server needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from glacierscale.io import check_bucket, gdal_env_for, s3_endpoint, to_gdal_path


@pytest.fixture
def clean_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
              "AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(k, raising=False)
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    return config


def test_aws_itself_needs_no_endpoint(clean_aws: Path) -> None:
    assert s3_endpoint() is None
    assert gdal_env_for("s3://bucket/key.tif") == {}


def test_endpoint_precedence(clean_aws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The AWS config file, as botocore reads it ...
    clean_aws.write_text("[default]\nendpoint_url = https://objects.example.org\n")
    assert s3_endpoint() == "https://objects.example.org"
    assert gdal_env_for("s3://b/k") == {"AWS_S3_ENDPOINT": "objects.example.org",
                                        "AWS_HTTPS": "YES", "AWS_VIRTUAL_HOSTING": "FALSE"}
    # ... then the generic and the S3-specific environment variables ...
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert s3_endpoint() == "http://127.0.0.1:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9100")
    env = gdal_env_for("s3://b/k")
    assert env["AWS_S3_ENDPOINT"] == "minio.local:9100" and env["AWS_HTTPS"] == "NO"
    # ... and explicit storage options win over everything.
    opts = {"client_kwargs": {"endpoint_url": "https://s3.other:8443", "region_name": "x-1"},
            "anon": True}
    env = gdal_env_for("s3://b/k", opts)
    assert env == {"AWS_S3_ENDPOINT": "s3.other:8443", "AWS_HTTPS": "YES",
                   "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_REGION": "x-1",
                   "AWS_NO_SIGN_REQUEST": "YES"}
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert s3_endpoint() is None


def test_gdal_paths() -> None:
    assert to_gdal_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert to_gdal_path("gs://bucket/a.tif") == "/vsigs/bucket/a.tif"
    assert to_gdal_path("https://host/a.tif") == "/vsicurl/https://host/a.tif"
    assert to_gdal_path("file:///data/a.tif") == "/data/a.tif"
    assert to_gdal_path("relative/a.tif") == "relative/a.tif"
    with pytest.raises(ValueError, match="GDAL cannot open"):
        to_gdal_path("memory://x/a.tif")
    # A password in a URL never reaches the message.
    with pytest.raises(ValueError) as info:
        to_gdal_path("ftp://user:hunter2secret@host/a.tif")
    assert "hunter2secret" not in str(info.value)


def test_bucket_check_errors_name_the_fix() -> None:
    check_bucket("memory://anything")
    with pytest.raises(ValueError, match="names no bucket"):
        check_bucket("s3:///prefix")
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(ImportError, match="needs the gcsfs package"):
            check_bucket("gs://bucket/prefix")

"""Cloud-read settings and Planetary Computer URL re-signing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import planetary_computer
import pytest
from planetary_computer.sas import TOKEN_CACHE, SASToken
from planetary_computer.settings import Settings

from glacierscale.load import CLOUD_READ_DEFAULTS, configure_cloud_reads, fresh_href
from glacierscale.load.env import cloud_read_settings
from glacierscale.load.signing import needs_signing, sas_expiry

BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/06/V/VN/B04.tif"


def test_configure_cloud_reads_sets_every_option_and_respects_overrides(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key in CLOUD_READ_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    import glacierscale.load.env as env

    monkeypatch.setattr(env, "_applied", None)
    configure_cloud_reads()
    configure_cloud_reads()  # idempotent
    assert os.environ["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert os.environ["GDAL_HTTP_MULTIRANGE"] == "YES"
    assert os.environ["GDAL_HTTP_MERGE_CONSECUTIVE_RANGES"] == "YES"
    assert os.environ["GDAL_HTTP_MAX_RETRY"] == "9"  # the user's value wins
    assert int(os.environ["CPL_VSIL_CURL_CACHE_SIZE"]) > 0 and os.environ["VSI_CACHE"] == "TRUE"
    from odc.loader._rio import capture_rio_env

    captured = capture_rio_env()  # what odc-stac ships to every worker with the graph
    assert captured["GDAL_HTTP_MULTIRANGE"] == "YES" and captured["GDAL_HTTP_MAX_RETRY"] == "9"
    assert "GDAL_CACHEMAX" not in cloud_read_settings(per_read=True)


def _sas(expiry: datetime) -> str:
    se = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"st=2020-01-01T00%3A00%3A00Z&se={se.replace(':', '%3A')}&sp=rl&sig=abc"


def test_expiry_detection() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    later = datetime.now(UTC) + timedelta(hours=2)
    assert sas_expiry(f"{BLOB}?{_sas(later)}") == later.replace(microsecond=0)
    assert needs_signing(f"{BLOB}?{_sas(soon)}")
    assert not needs_signing(f"{BLOB}?{_sas(later)}")
    assert needs_signing(BLOB)
    assert not needs_signing("https://sentinel-cogs.s3.us-west-2.amazonaws.com/B04.tif")
    assert not needs_signing("/data/B04.tif")


def test_expired_token_is_replaced_from_the_token_cache() -> None:
    """A cached fresh token (as planetary-computer keeps one per container) re-signs offline."""
    url = f"{Settings.get().sas_url}/sentinel2l2a01/sentinel2-l2"
    expiry = datetime.now(UTC) + timedelta(hours=1)
    TOKEN_CACHE[url] = SASToken(token=_sas(expiry), expiry=expiry)
    try:
        old = f"{BLOB}?{_sas(datetime.now(UTC) - timedelta(hours=1))}"
        new = fresh_href(old)
        assert new.startswith(BLOB + "?") and not needs_signing(new)
        assert sas_expiry(new) == expiry.replace(microsecond=0)
        # An unexpired URL is returned as is (no token request).
        assert fresh_href(new) == new
        assert planetary_computer.sign_url(BLOB) == new
    finally:
        TOKEN_CACHE.pop(url, None)

"""Raster reads over HTTP from the fault-injecting range server: retried where transient, failed
at once where the file is missing or corrupt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from glacierscale.core import faults
from glacierscale.core.faults import FaultError, FaultSettings, RetrySettings
from glacierscale.core.tiles import TileSpec, grid_origin
from glacierscale.load import load_tile
from glacierscale.load.backends import probe
from glacierscale.load.env import cloud_read_settings
from glacierscale.testing.injection import FaultPlan
from glacierscale.testing.rangeserver import Log, range_server
from glacierscale.testing.rasters import make_item, write_cog

pytestmark = pytest.mark.integration

SIZE, COL, ROW = 256, 200, 2000
LOADERS = ("odc-stac", "stackstac")


def _settings(gdal_retries: int, attempts: int = 4) -> FaultSettings:
    return FaultSettings(read=RetrySettings(attempts=attempts, base_delay_s=0.01,
                                            max_delay_s=0.05),
                         gdal_http_retries=gdal_retries, gdal_http_retry_delay_s=0.01)


@dataclass
class Served:
    url: str
    log: Log
    root: Path
    data: np.ndarray
    tile: TileSpec

    def read(self, name: str, loader: str, prefix: str) -> np.ndarray:
        """Band ``red`` of the tile, read from ``/{prefix}/files/{name}`` (a fresh GDAL cache)."""
        item = make_item("x", "landsat-c2-l2", datetime(2020, 9, 1),
                         {"red": self.root / "red.tif"})
        item.assets["red"].href = f"{self.url}/{prefix}/files/{name}"
        ds = load_tile(self.tile, ["red"], [item], loader=loader).compute(scheduler="threads")
        return np.asarray(ds.red.values)

    @property
    def expected(self) -> np.ndarray:
        return self.data[:SIZE, :SIZE] * 2.75e-5 - 0.2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    ox, oy = grid_origin(32611)
    tr = Affine(10, 0, ox + COL * SIZE * 10, 0, -10, oy - ROW * SIZE * 10)
    data = np.random.default_rng(3).integers(1, 10_000, (2 * SIZE, 2 * SIZE), dtype=np.uint16)
    path = write_cog(tmp_path / "red.tif", data, "EPSG:32611", tr, nodata=0, blocksize=128)
    bad = bytearray(path.read_bytes())
    bad[:64] = b"<html>503 Service Unavailable</html>".ljust(64)
    (tmp_path / "bad.tif").write_bytes(bytes(bad))
    faults.reset_retry_stats()
    with range_server(tmp_path) as (url, log):
        yield Served(url, log, tmp_path, data, TileSpec(32611, COL, ROW, SIZE, 10.0, 0))


@pytest.mark.parametrize("loader", LOADERS)
def test_reads_survive_errors_throttling_drops_and_truncation(served: Served,
                                                              loader: str) -> None:
    served.log.plan = FaultPlan(error=0.2, throttle=0.1, drop=0.1, truncate=0.1, slow=0.05,
                                slow_s=0.1, retry_after_s=0, seed=3)
    with faults.configured(_settings(gdal_retries=2, attempts=8)):
        for i in range(4):
            np.testing.assert_allclose(served.read("red.tif", loader, f"{loader}{i}"),
                                       served.expected, atol=1e-6)
    assert sum(n for k, n in served.log.faults().items() if k != "slow") > 0


@pytest.mark.parametrize("loader", LOADERS)
def test_a_failure_gdal_remembers_is_asked_again(served: Served, loader: str) -> None:
    # GDAL does not retry here and caches the failed requests for the URL; without the retry's
    # CPL_VSIL_CURL_NON_CACHED the second attempt would fail without a request.
    served.log.plan = FaultPlan(fail_first=2, first="error")
    with faults.configured(_settings(gdal_retries=0)):
        np.testing.assert_allclose(served.read("red.tif", loader, loader), served.expected,
                                   atol=1e-6)
    assert faults.retry_stats()["read.retries"] == 2
    assert served.log.faults() == {"error": 2}


@pytest.mark.parametrize("loader", LOADERS)
def test_a_failed_header_read_is_told_from_a_corrupt_file(served: Served, loader: str) -> None:
    # HEAD answers, the header GETs do not (GDAL reads the header a second way when its first
    # read fails): GDAL says "not recognized as a supported format", as it would for a corrupt
    # file; the probe finds TIFF bytes, so the read is tried again.
    served.log.plan = FaultPlan(fail_first=2, first="error", methods=("GET",))
    with faults.configured(_settings(gdal_retries=0)):
        np.testing.assert_allclose(served.read("red.tif", loader, loader), served.expected,
                                   atol=1e-6)
    assert faults.retry_stats()["read.retries"] == 1


@pytest.mark.parametrize("loader", LOADERS)
def test_a_corrupt_cog_fails_at_once_naming_it(served: Served, loader: str) -> None:
    with faults.configured(_settings(gdal_retries=5)), pytest.raises(FaultError) as info:
        served.read("bad.tif", loader, loader)
    message = str(info.value)
    assert message.startswith(f"read {served.url}/{loader}/files/bad.tif: ")
    assert message.endswith("(permanent)") and "not recognized" in message
    assert faults.retry_stats() == {"read.permanent": 1}  # no retry spent
    gets = served.log.count("GET", f"/{loader}/")
    assert gets == 2  # GDAL's header read, then one probe of the first bytes


def test_a_missing_asset_fails_at_once(served: Served) -> None:
    with faults.configured(_settings(gdal_retries=5)), pytest.raises(FaultError) as info:
        served.read("missing.tif", "odc-stac", "m")
    assert "HTTP response code: 404" in str(info.value)
    assert str(info.value).endswith("(permanent)")
    assert faults.retry_stats() == {"read.permanent": 1}
    assert len(served.log.snapshot()) == 1


def test_a_server_that_stays_down_gives_up_after_the_attempts(served: Served) -> None:
    served.log.plan = FaultPlan(error=1.0)
    with faults.configured(_settings(gdal_retries=1, attempts=3)), \
            pytest.raises(FaultError) as info:
        served.read("red.tif", "odc-stac", "down")
    assert str(info.value).endswith("(transient, gave up after 3 attempts)")
    assert "HTTP response code: 503" in str(info.value)
    # every attempt reached the server (GDAL's request and its own retry), none was answered
    # from GDAL's memory of the failure
    assert served.log.count() >= 3 * 2


def test_local_files_are_never_retried(served: Served) -> None:
    item = make_item("x", "landsat-c2-l2", datetime(2020, 9, 1), {"red": served.root / "red.tif"})
    truncated = served.root / "short.tif"
    whole = (served.root / "red.tif").read_bytes()
    truncated.write_bytes(whole[:len(whole) // 3])
    item.assets["red"].href = str(truncated)
    with faults.configured(_settings(gdal_retries=5)), pytest.raises(FaultError) as info:
        load_tile(served.tile, ["red"], [item]).compute(scheduler="threads")
    assert str(info.value).endswith("(permanent)")
    assert faults.retry_stats() == {"read.permanent": 1}


def test_probe_reads_the_first_bytes(served: Served) -> None:
    assert probe(f"{served.url}/files/red.tif") is faults.Fault.TRANSIENT  # a TIFF: fine
    assert probe(f"{served.url}/files/bad.tif") is faults.Fault.PERMANENT  # an HTML page
    assert probe(f"{served.url}/files/none.tif") is faults.Fault.PERMANENT  # 404
    served.log.plan = FaultPlan(error=1.0)
    assert probe(f"{served.url}/files/red.tif") is faults.Fault.TRANSIENT  # 503


def test_gdal_retry_options_follow_the_fault_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY", "GDAL_HTTP_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    import glacierscale.load.env as env

    monkeypatch.setattr(env, "_applied", None)
    with faults.configured(FaultSettings(gdal_http_retries=7, gdal_http_retry_delay_s=0.5,
                                         gdal_http_timeout_s=30)):
        s = cloud_read_settings()
        assert (s["GDAL_HTTP_MAX_RETRY"], s["GDAL_HTTP_RETRY_DELAY"],
                s["GDAL_HTTP_TIMEOUT"]) == ("7", "0.5", "30")
        monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "2")  # a deployment's own value wins
        assert cloud_read_settings()["GDAL_HTTP_MAX_RETRY"] == "2"


def test_a_truncated_remote_tiff_fails_at_once_instead_of_being_retried(served: Served) -> None:
    """A file cut short (an interrupted upload) reads like a lost packet to GDAL; the probe
    compares the object's size with the end of its last block and calls it permanent."""
    whole = (served.root / "red.tif").read_bytes()
    # The header is intact; the blocks of the tile's second row of blocks are gone.
    (served.root / "cut.tif").write_bytes(whole[:len(whole) // 3])
    assert probe(f"{served.url}/files/cut.tif") is faults.Fault.PERMANENT
    assert probe(f"{served.url}/files/red.tif") is faults.Fault.TRANSIENT
    faults.reset_retry_stats()
    with faults.configured(_settings(gdal_retries=0, attempts=6)), \
            pytest.raises(FaultError) as info:
        served.read("cut.tif", "odc-stac", "cut")
    assert str(info.value).endswith("(permanent)")
    assert faults.retry_stats().get("read.retried", 0) == 0, faults.retry_stats()

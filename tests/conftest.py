"""Shared test fixtures: the real sample data, and a real S3-compatible server on loopback.

``s3_server`` starts one moto server per session; ``s3_bucket`` points the standard AWS
environment (AWS_ENDPOINT_URL, keys, region) at it, as a user's shell would, and creates a fresh
bucket per test. The keys are recognisable sentinels so tests can prove they never leak.

Property tests run under a Hypothesis profile: ``ci`` (chosen when ``CI`` is set, as CI services
do) is derandomized, so every run draws the same examples and a failure reproduces exactly, with no
example database and no deadline (shared CI machines have noisy timings); ``dev`` keeps Hypothesis'
random search and its database, which find new cases over time. ``HYPOTHESIS_PROFILE`` picks one
explicitly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from glacierscale.config import sample_data_dir
from glacierscale.testing import services

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI")
                                                               else "dev"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data folder (GLACIERSCALE_SAMPLE_DATA or ../shared/data)."""
    path = sample_data_dir()
    if path is None:
        pytest.skip("real sample data not found: set GLACIERSCALE_SAMPLE_DATA")
    return path


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory shared by the session's tests (sample COGs are built once)."""
    return tmp_path_factory.mktemp("glacierscale-cache")


ACCESS_KEY = "AKIAGLACIERSCALETEST"
SECRET_KEY = "glacierscale-secret-Zq8vX2pLw9sT4nB7"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a real moto S3 server on 127.0.0.1 (in memory, ~1 s to start)."""
    with services.s3_server() as url:
        yield url


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment pointed at the test server (what botocore and GDAL read)."""
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1"}
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import s3fs

    # fsspec caches filesystem instances; a cached one may predate this environment.
    s3fs.S3FileSystem.clear_instance_cache()
    return env


@pytest.fixture
def s3_bucket(s3_env: dict[str, str]) -> str:
    """A new, empty bucket on the test server; returns its name."""
    import boto3

    name = f"gs-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name

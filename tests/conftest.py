"""Shared test fixtures: where the real sample data lives, and skipping when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from glacierscale.config import sample_data_dir


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

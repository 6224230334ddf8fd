"""Cloud masks: SCL classes, QA_PIXEL and Fmask bits, and the real Landsat-8 scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st

from glacierscale.load.masks import (
    SCL_NOT_CLEAR,
    clear_from_fmask,
    clear_from_qa_pixel,
    clear_from_scl,
    clear_mask,
    cloud_from_qa_pixel,
)


def test_scl_keeps_snow_ice_and_terrain_shadow() -> None:
    scl = np.arange(12, dtype=np.uint8)
    clear = clear_from_scl(scl)
    assert set(np.flatnonzero(~clear)) == set(SCL_NOT_CLEAR)
    assert clear[11] and clear[2] and clear[4] and clear[5] and clear[6]
    # Float input (stackstac) with NaN where nothing was read is not clear.
    assert not clear_from_scl(np.array([np.nan, 4.0]))[0]
    assert clear_from_scl(np.array([np.nan, 4.0]))[1]


@given(st.integers(0, 2**16 - 1))
def test_qa_pixel_bits(value: int) -> None:
    q = np.array([value], dtype=np.uint16)
    bad = any(value & (1 << b) for b in (0, 1, 2, 3, 4))
    assert bool(clear_from_qa_pixel(q)[0]) is (not bad)
    # Snow (bit 5) and water (bit 7) alone never make a pixel cloudy.
    assert clear_from_qa_pixel(np.array([value & ((1 << 5) | (1 << 7))], dtype=np.uint16))[0]


@given(st.integers(0, 255))
def test_fmask_bits(value: int) -> None:
    q = np.array([value], dtype=np.uint8)
    expected = value != 255 and not any(value & (1 << b) for b in (1, 2, 3))
    assert bool(clear_from_fmask(q)[0]) is expected
    assert bool(clear_mask("fmask", q)[0]) is expected


def test_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ValueError, match="fmask"):
        clear_mask("cloudy", np.zeros(1))


def _scene(folder: Path) -> tuple[np.ndarray, float]:
    qa_path = next(folder.glob("*_QA_PIXEL.TIF"))
    with rasterio.open(qa_path) as ds:
        qa = ds.read(1)
    mtl = json.loads(next(folder.glob("*_MTL.json")).read_text())
    cover = float(mtl["LANDSAT_METADATA_FILE"]["IMAGE_ATTRIBUTES"]["CLOUD_COVER"])
    return qa, cover


@pytest.mark.integration
@pytest.mark.parametrize("scene", ["greenland_LC08_005009_20150710",
                                   "antarctica_LC08_099120_20191129"])
def test_real_landsat8_qa_pixel_against_mtl_cloud_cover(shared_data: Path, scene: str) -> None:
    qa, cover = _scene(shared_data / "landsat8_c2l2" / scene)
    filled = (qa & 1) == 0
    cloud_pct = 100.0 * cloud_from_qa_pixel(qa)[filled].mean()
    masked_pct = 100.0 * (~clear_from_qa_pixel(qa))[filled].mean()
    # The cloud bit is what CLOUD_COVER counts (the scene is downsampled, hence the tolerance).
    assert cloud_pct == pytest.approx(cover, abs=1.0)
    # The mask also drops dilated cloud, cirrus and shadows: a little more, never less.
    assert cover - 1.0 <= masked_pct <= cover + 10.0

"""The physics of the stress-test shifts on generated reflectance."""

from __future__ import annotations

import numpy as np
import pytest

from glacierscale.train.shifts import (
    STRESS_SHIFTS,
    Shift,
    apply_shift,
    back_to_grid,
    haze,
    illumination,
    resample,
)

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
ICE = np.array([0.62, 0.58, 0.52, 0.42, 0.05, 0.04], np.float32)


def _tile(size: int = 32) -> np.ndarray:
    return np.broadcast_to(ICE[:, None, None], (6, size, size)).copy()


def test_every_shift_is_reproducible_and_keeps_no_data() -> None:
    img = _tile()
    img[:, :2] = np.nan
    means = (ICE * 0.5).tolist()
    for shift in STRESS_SHIFTS:
        if shift.kind == "resolution":
            continue
        a = apply_shift(shift, img, BANDS, 7, means=means)
        np.testing.assert_array_equal(a, apply_shift(shift, img, BANDS, 7, means=means))
        assert np.isnan(a[:, :2]).all() and np.isfinite(a[:, 2:]).all()
        assert (a[:, 2:] != img[:, 2:]).any() or shift.kind == "none"


def test_gain_and_offset_stay_within_their_level() -> None:
    img = _tile()
    g = apply_shift(Shift("gain", "", {"gain": 0.25}), img, BANDS, 1)
    ratio = g[:, 0, 0] / ICE
    assert (np.abs(ratio - 1) <= 0.25 + 1e-6).all() and np.ptp(ratio) > 0.05
    np.testing.assert_allclose(g / g[:, :1, :1], 1.0, rtol=1e-6)  # one gain per band
    o = apply_shift(Shift("offset", "", {"offset": 0.05}), img, BANDS, 1)
    assert (np.abs(o[:, 0, 0] - ICE) <= 0.05 + 1e-6).all()


def test_haze_lifts_dark_ground_most_in_blue_and_dims_bright_ice() -> None:
    rock = np.full((6, 16, 16), 0.02, np.float32)
    lift = (haze(rock, BANDS, np.random.default_rng(0), level=1.0) - rock).mean(axis=(1, 2))
    assert lift[0] > lift[1] > lift[2] > lift[3] > lift[4] > lift[5] > 0.0
    assert lift[0] < 0.08
    ice = _tile()
    dimmed = haze(ice, BANDS, np.random.default_rng(0), level=1.0)
    assert dimmed[0].mean() < ice[0].mean()  # contrast falls: bright targets lose light


def test_cast_shadow_leaves_diffuse_light_richer_in_blue() -> None:
    img = _tile()
    s = illumination(img, BANDS, np.random.default_rng(0), shadow=True)
    share = s[:, 0, 0] / ICE
    assert share[0] == pytest.approx(0.25) and (np.diff(share) < 0).all() and share[-1] > 0.0
    lit = illumination(img, BANDS, np.random.default_rng(0), relief=1.5)
    assert lit.max() > img.max() and lit.min() < 0.5 * img.min() + 1e-6


def test_resampling_round_trips_and_averages() -> None:
    img = np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8)
    coarse = resample(img, 2)
    assert coarse.shape == (6, 4, 4)
    assert coarse[0, 0, 0] == pytest.approx(img[0, :2, :2].mean())
    fine = resample(img, 1 / 3)
    assert fine.shape == (6, 24, 24)
    back = back_to_grid(coarse[0], 2, (8, 8))
    assert back.shape == (8, 8) and back[1, 1] == coarse[0, 0, 0]
    np.testing.assert_allclose(back_to_grid(fine[0], 1 / 3, (8, 8)).mean(), img[0].mean(),
                               rtol=1e-3)


def test_a_missing_band_is_its_training_mean() -> None:
    img = _tile()
    out = apply_shift(Shift("missing", "nir", {"band": "nir"}), img, BANDS, 0,
                      means=[0.1, 0.2, 0.3, 0.25, 0.2, 0.1])
    assert (out[3] == np.float32(0.25)).all()
    np.testing.assert_array_equal(np.delete(out, 3, 0), np.delete(img, 3, 0))
    with pytest.raises(ValueError, match="training means"):
        apply_shift(Shift("missing", "nir", {"band": "nir"}), img, BANDS, 0)

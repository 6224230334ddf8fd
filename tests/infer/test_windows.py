"""Window layout and taper weights (glacierscale.core.windows): pure numerics, checked against
MONAI's sliding-window implementation where both define the same thing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data.utils import compute_importance_map, dense_patch_slices

from glacierscale.core.windows import (
    MONAI,
    WindowLayout,
    normalise_by_weight,
    reflect_pad,
    stride_for,
    taper_profile,
    taper_weights,
    weight_sum,
    window_starts,
)


@given(size=st.integers(1, 3000), window=st.integers(1, 600), overlap=st.floats(0.0, 0.95))
@settings(max_examples=300, deadline=None)
def test_starts_cover_the_axis_on_the_stride(size: int, window: int, overlap: float) -> None:
    stride = stride_for(window, overlap)
    padded = max(size, window)
    starts = window_starts(padded, window, stride)
    assert starts[0] == 0 and starts[-1] == padded - window
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= stride)
    covered = np.zeros(padded, dtype=bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all()


@given(h=st.integers(512, 1400), w=st.integers(512, 1400), overlap=st.sampled_from([0.0, 0.25,
       0.5, 0.75]))
@settings(max_examples=40, deadline=None)
def test_layout_matches_monai(h: int, w: int, overlap: float) -> None:
    layout = WindowLayout.for_shape((h, w), 512, overlap)
    s = stride_for(512, overlap)
    monai = dense_patch_slices((h, w), (512, 512), (s, s))
    assert layout.windows() == [(sl[0].start, sl[1].start) for sl in monai]


def test_monai_gaussian_weights_equal_monai_importance_map() -> None:
    ours = taper_weights(512, "gaussian", **MONAI)
    theirs = compute_importance_map((512, 512), mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)
    assert ours.min() == pytest.approx(1e-3, rel=1e-6)
    assert ours.max() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("window", [1, 2, 3, 16, 512, 4096])
def test_default_gaussian_has_no_floor_and_never_underflows(window: int) -> None:
    w = taper_weights(window, "gaussian")
    assert (w > 0).all() and np.isfinite(w).all()
    if window >= 16:
        # Scale-free: the corner weight is about exp(-25) whatever the window size.
        assert 1e-12 < w.min() < 1e-9


@pytest.mark.parametrize("kind", ["gaussian", "cosine", "uniform"])
def test_profiles_are_symmetric_positive_and_peak_in_the_centre(kind: str) -> None:
    p = taper_profile(64, kind)  # type: ignore[arg-type]
    assert p.shape == (64,) and p.dtype == np.float32
    np.testing.assert_array_equal(p, p[::-1])
    assert (p > 0).all() and p[31] == p.max()
    with pytest.raises(ValueError):
        p[0] = 1.0  # cached profiles are read-only


def test_unknown_blend_and_bad_overlap_name_the_fix() -> None:
    with pytest.raises(ValueError, match="gaussian"):
        taper_profile(8, "hann")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        stride_for(512, 1.0)


@given(h=st.integers(1, 300), w=st.integers(1, 300), window=st.sampled_from([16, 64, 128]),
       overlap=st.sampled_from([0.0, 0.5, 0.75]))
@settings(max_examples=60, deadline=None)
def test_small_images_are_padded_to_one_window_and_every_pixel_has_weight(
        h: int, w: int, window: int, overlap: float) -> None:
    layout = WindowLayout.for_shape((h, w), window, overlap)
    ph, pw = layout.padded_shape
    assert ph == max(h, window) and pw == max(w, window)
    t, b, lft, r = layout.pad
    assert t + b == ph - h and lft + r == pw - w and abs(t - b) <= 1
    ws = weight_sum(layout, taper_weights(window, "gaussian"))
    assert ws.shape == (ph, pw) and (ws > 0).all()
    assert layout.processed_ratio() >= 1.0


def test_processed_ratio_of_half_overlap() -> None:
    layout = WindowLayout.for_shape((1024, 1024), 512, 0.5)
    assert layout.n_windows == 9
    assert layout.processed_ratio() == pytest.approx(9 * 512**2 / 1024**2)


def test_reflect_pad_repeats_reflection_and_handles_single_pixels() -> None:
    img = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = reflect_pad(img, (5, 5, 6, 6))
    assert out.shape == (2, 13, 16)
    np.testing.assert_array_equal(out[:, 5:8, 6:10], img)
    one = np.array([1, 2, 3], dtype=np.float32)[:, None, None]
    out1 = reflect_pad(one, (2, 1, 0, 3))
    assert out1.shape == (3, 4, 4) and (out1[2] == 3).all()
    assert reflect_pad(img, (0, 0, 0, 0)) is img


def test_weight_sum_equals_monai_count_map() -> None:
    """MONAI's count map is the same accumulated weight our normaliser uses."""
    layout = WindowLayout.for_shape((700, 900), 256, 0.5)
    w = taper_weights(256, "gaussian", **MONAI)
    ours = weight_sum(layout, w)
    s = stride_for(256, 0.5)
    count = torch.zeros(700, 900)
    wt = torch.from_numpy(w)
    for sl in dense_patch_slices((700, 900), (256, 256), (s, s)):
        count[sl] += wt
    np.testing.assert_allclose(ours, count.numpy(), rtol=1e-6)


@given(h=st.integers(1, 700), w=st.integers(1, 700), strip=st.sampled_from([7, 64, 256, 1000]),
       kind=st.sampled_from(["gaussian", "cosine", "uniform"]))
@settings(max_examples=25, deadline=None)
def test_strip_normaliser_is_bit_identical_to_dividing_by_the_weight_sum(
        h: int, w: int, strip: int, kind: str) -> None:
    layout = WindowLayout.for_shape((h, w), 128, 0.5)
    weights = taper_weights(128, kind)  # type: ignore[arg-type]
    rng = np.random.default_rng(h * 1000 + w)
    acc = rng.random(layout.padded_shape, dtype=np.float32)
    acc2 = acc * 2
    expected = acc / weight_sum(layout, weights)
    expected2 = acc2 / weight_sum(layout, weights)
    normalise_by_weight(layout, weights, acc, acc2, strip=strip)
    assert acc.tobytes() == expected.tobytes() and acc2.tobytes() == expected2.tobytes()

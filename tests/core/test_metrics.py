"""Pixel metrics: counts, scores, exact distances, rings, boundaries and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from glacierscale.core.metrics import (
    Confusion,
    boundary,
    boundary_distance,
    confusion,
    distance_at,
    mask_metrics,
    merge_reliability,
    reliability,
    ring_outside,
    scores,
    within_distance,
)

masks = st.integers(2, 12).flatmap(
    lambda h: st.integers(2, 12).flatmap(lambda w: arrays(np.bool_, (h, w))))


def _brute_distance(mask: np.ndarray) -> np.ndarray:
    pts = np.argwhere(mask)
    rr, cc = np.indices(mask.shape)
    if len(pts) == 0:
        return np.full(mask.shape, np.inf)
    d2 = (rr[..., None] - pts[:, 0]) ** 2 + (cc[..., None] - pts[:, 1]) ** 2
    return np.sqrt(d2.min(axis=-1))


def test_confusion_and_scores_by_hand() -> None:
    ref = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1, 0]], dtype=bool)
    c = confusion(pred, ref)
    assert c == Confusion(tp=1, fp=1, fn=1, tn=1)
    s = scores(c)
    assert s["iou"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(0.5)
    assert s["precision"] == s["recall"] == pytest.approx(0.5)
    # invalid pixels count nowhere: hiding the false positive leaves precision 1
    valid = np.array([[1, 1, 0, 1]], dtype=bool)
    assert confusion(pred, ref, valid) == Confusion(1, 0, 1, 1)
    assert math.isnan(scores(Confusion(0, 0, 0, 5))["iou"])
    assert (c + c).n == 8


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        confusion(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


@given(masks)
@settings(max_examples=60, deadline=None)
def test_distance_and_dilation_are_exact(mask: np.ndarray) -> None:
    truth = _brute_distance(mask)
    rows, cols = np.indices(mask.shape)
    got = distance_at(mask, rows.ravel(), cols.ravel()).reshape(mask.shape)
    np.testing.assert_allclose(got, truth)
    for radius in (0.0, 1.0, 1.5, 2.9, 4.0):
        np.testing.assert_array_equal(within_distance(mask, radius), truth <= radius + 1e-12)


def test_ring_outside() -> None:
    ref = np.zeros((21, 21), bool)
    ref[8:13, 8:13] = True
    ring = ring_outside(ref, 1.0, 3.0)
    d = _brute_distance(ref)
    np.testing.assert_array_equal(ring, (d > 1.0) & (d <= 3.0))
    assert not (ring & ref).any()


def test_boundary_ignores_raster_and_valid_edges() -> None:
    m = np.zeros((6, 6), bool)
    m[:, :3] = True
    b = boundary(m)
    assert b[:, 2].all() and not b[:, :2].any()
    # with the right half invalid, the left half has no outline at all
    valid = np.zeros((6, 6), bool)
    valid[:, :3] = True
    assert not boundary(m, valid).any()


def test_boundary_distance_of_shifted_squares() -> None:
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    assert boundary_distance(a, a) == 0.0
    b = np.roll(a, 3, axis=1)
    # brute force over the two outlines
    pa, pb = np.argwhere(boundary(a)), np.argwhere(boundary(b))
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    expected = np.concatenate([d.min(1), d.min(0)]).mean() * 30.0
    assert boundary_distance(a, b, pixel_size=30.0) == pytest.approx(expected)
    assert 0 < expected < 3 * 30.0
    assert math.isnan(boundary_distance(np.zeros_like(a), a))


def test_reliability_by_hand_and_merge() -> None:
    prob = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    ref = np.array([0, 0, 1, 1, 1, 0], dtype=bool)
    r = reliability(prob, ref, bins=10)
    assert sum(r.count) == 6
    # bins 0 and 9: |0 - 0.05| and |1 - 0.95|; bin 5: |0.5 - 0.55|
    assert r.ece == pytest.approx((2 * 0.05 + 2 * 0.05 + 2 * 0.05) / 6)
    merged = merge_reliability([reliability(prob[:3], ref[:3]), reliability(prob[3:], ref[3:])])
    assert merged.ece == pytest.approx(r.ece)
    assert merged.count == r.count


def test_calibrated_probabilities_have_small_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = rng.uniform(size=p.size) < p
    assert reliability(p, y).ece < 0.01
    assert reliability(np.clip(p * 0.3, 0, 1), y).ece > 0.2  # under-confident for glacier


def test_mask_metrics_row() -> None:
    ref = np.zeros((30, 30), bool)
    ref[10:20, 10:20] = True
    pred = ref.copy()
    pred[20:22, 10:20] = True  # spills two rows into the ring
    row = mask_metrics(pred, ref, pixel_size=10.0, ring_px=(0.0, 3.0),
                       prob=pred.astype(float) * 0.9)
    assert row["recall"] == 1.0 and row["precision"] == pytest.approx(100 / 120)
    ring = ring_outside(ref, 0.0, 3.0)
    assert row["ring_fp_fraction"] == pytest.approx(20 / ring.sum())
    assert row["boundary_distance"] > 0 and row["ece"] > 0
    assert row["n_pixels"] == 900

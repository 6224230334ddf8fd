"""Band-math baselines: probability exactly 0.5 on the published thresholds, finite everywhere."""

from __future__ import annotations

import math

import numpy as np
import torch

from glacierscale.models import load_model


def _prob(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = load_model(name)
    x = torch.from_numpy(np.stack([a, b])[None].astype(np.float32))
    with torch.inference_mode():
        return torch.sigmoid(m.logits(x))[0, 0].numpy()


def test_band_ratio_is_one_half_at_2_8_and_monotonic() -> None:
    swir = np.full(5, 0.1, dtype=np.float32)
    red = (swir * np.array([1.0, 2.0, 2.8, 4.0, 8.0])).astype(np.float32)
    p = _prob("band-ratio", red, swir)
    assert abs(p[2] - 0.5) < 1e-6
    assert np.all(np.diff(p) > 0) and p[0] < 0.1 and p[-1] > 0.9
    card = load_model("band-ratio").card
    assert card.bands == ("red", "swir16") and card.params["threshold"] == 2.8
    assert len(card.weights_hash) == 64


def test_ndsi_is_one_half_at_0_4() -> None:
    green = np.array([0.7, 0.5, 0.3], dtype=np.float32)
    ndsi = np.array([0.0, 0.4, 0.8])
    swir = (green * (1 - ndsi) / (1 + ndsi)).astype(np.float32)
    p = _prob("ndsi", green, swir)
    assert abs(p[1] - 0.5) < 1e-5 and p[0] < 0.05 and p[2] > 0.95


def test_dark_zero_and_negative_reflectance_stay_finite() -> None:
    a = np.array([0.0, -0.01, 0.0, 0.3], dtype=np.float32)
    b = np.array([0.0, 0.0, 0.2, 0.0], dtype=np.float32)
    for name in ("band-ratio", "ndsi"):
        p = _prob(name, a, b)
        assert np.isfinite(p).all(), name
    # A ratio of the floor to the floor is 1: below the 2.8 threshold.
    assert _prob("band-ratio", a[:1], b[:1])[0] < 0.5
    assert math.isclose(float(_prob("band-ratio", np.float32([0.28]), np.float32([0.1]))[0]), 0.5,
                        abs_tol=1e-6)

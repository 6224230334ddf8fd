"""Scoring on mosaics: folds and pooled agree, the tuned threshold is honest, calibration helps."""

from __future__ import annotations

import numpy as np

from glacierscale.core.metrics import reliability
from glacierscale.core.tiles import TileSpec
from glacierscale.train.chips import Chip
from glacierscale.train.evaluate import calibrate
from glacierscale.train.labels import UNKNOWN
from glacierscale.train.mosaic import build_mosaics
from glacierscale.train.scoring import POOLED, best_threshold, score, tuned_threshold

BANDS = ("green", "red", "swir16")


def _scene(seed: int = 0, n: int = 4, size: int = 16, halo: int = 2):
    """Four tiles in a row; glacier where red/swir16 is high; green is noise."""
    rng = np.random.default_rng(seed)
    chips = []
    for i in range(n):
        tile = TileSpec(32611, 50 + i, 70, size, 30.0, halo)
        h = size + 2 * halo
        ice = rng.uniform(size=(h, h)) < 0.4
        red = np.where(ice, 0.6, 0.2) * rng.uniform(0.8, 1.2, (h, h))
        swir = np.where(ice, 0.05, 0.2) * rng.uniform(0.8, 1.2, (h, h))
        green = rng.uniform(0, 1, (h, h))
        lab = np.full((h, h), UNKNOWN, np.uint8)
        lab[halo:-halo, halo:-halo] = ice[halo:-halo, halo:-halo]
        chips.append(Chip(tile, np.stack([green, red, swir]).astype(np.float32), lab))
    folds = {c.tile_id: i // 2 for i, c in enumerate(chips)}
    return chips, build_mosaics(chips, folds)


def test_mosaic_places_cores_and_folds() -> None:
    chips, (m,) = _scene()
    assert m.labels.shape == (16, 64)
    assert (m.fold[:, :32] == 0).all() and (m.fold[:, 32:] == 1).all()
    np.testing.assert_array_equal(m.labels[:, 16:32], chips[1].labels[2:-2, 2:-2])


def test_pooled_counts_are_the_sum_of_folds() -> None:
    _, mosaics = _scene()
    rng = np.random.default_rng(3)
    probs = [rng.uniform(size=m.labels.shape).astype(np.float32) for m in mosaics]
    t = score(mosaics, probs, 2, calibrated=True)
    assert t[POOLED].conf == t["0"].conf + t["1"].conf
    assert t[POOLED].conf.n == 16 * 64
    row = t[POOLED].row()
    assert 0 < row["iou"] < 1
    assert np.isfinite(row["ece"]) and np.isfinite(row["boundary_distance_m"])


def test_best_threshold_and_tuned_index() -> None:
    v = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    ref = v > 0.5
    t, iou = best_threshold(v, ref)
    assert iou == 1.0 and 0.3 < t <= 0.7
    _, mosaics = _scene()
    preds, choices = tuned_threshold(mosaics, BANDS, 2)
    # the ratio separates ice on the training folds; green (noise) is never chosen
    assert [c["index"] for c in choices] == ["red/swir16", "red/swir16"]
    t = score(mosaics, preds, 2)
    assert t[POOLED].row()["iou"] > 0.95


def test_cross_fitted_temperature_fixes_overconfidence() -> None:
    _, mosaics = _scene(1)
    rng = np.random.default_rng(0)
    probs = []
    for m in mosaics:
        truth = (m.labels & 1) > 0
        # right 80% of the time but always 99% sure: overconfident
        right = rng.uniform(size=truth.shape) < 0.8
        probs.append(np.where(truth == right, 0.99, 0.01).astype(np.float32))
    cal, t_all, per_fold = calibrate(probs, mosaics, 2)
    assert t_all > 1.5 and len(per_fold) == 2
    ref = [(m.labels & 1) > 0 for m in mosaics]
    # one temperature cannot fix the class asymmetry of this noise, but it removes most of it
    assert reliability(cal[0], ref[0]).ece < reliability(probs[0], ref[0]).ece / 2

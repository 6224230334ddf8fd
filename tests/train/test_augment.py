"""Augmentation: image and labels move together; jitter keeps band ratios; directional bands."""

from __future__ import annotations

import numpy as np

from glacierscale.train.augment import Augment, blank_strip, coarsen, dihedral
from glacierscale.train.labels import UNKNOWN


def test_dihedral_moves_labels_with_pixels() -> None:
    rng = np.random.default_rng(1)
    img = rng.uniform(size=(2, 6, 6)).astype(np.float32)
    lab = (img[0] > 0.5).astype(np.uint8)
    seen = set()
    for k in range(4):
        for flip in (False, True):
            i2, l2 = dihedral(img, lab, k, flip)
            np.testing.assert_array_equal(l2, (i2[0] > 0.5).astype(np.uint8))
            seen.add(i2.tobytes())
    assert len(seen) == 8  # the eight symmetries of the square are all different


def test_jitter_is_seeded_and_keeps_ratios_and_terrain() -> None:
    rng = np.random.default_rng(0)
    bands = ("red", "swir16", "elevation")
    img = rng.uniform(0.1, 0.9, size=(3, 8, 8)).astype(np.float32)
    img[2] = 3000.0
    lab = np.zeros((8, 8), np.uint8)
    aug = Augment(brightness=0.2, contrast=0.0, nodata=0.0)
    a1, _ = aug.apply(img, lab, bands, np.random.default_rng(5))
    a2, _ = aug.apply(img, lab, bands, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    # brightness scales optical bands by one factor: the red/swir16 ratio (any symmetry) holds
    assert np.allclose(np.sort((a1[0] / a1[1]).ravel()), np.sort((img[0] / img[1]).ravel()),
                       rtol=1e-5)
    assert (a1[2] == 3000.0).all()
    assert not np.allclose(a1[0].mean(), img[0].mean())


def test_directional_bands_are_never_rotated() -> None:
    img = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4)
    lab = np.arange(16, dtype=np.uint8).reshape(4, 4)
    aug = Augment(brightness=0.0, contrast=0.0, nodata=0.0)
    for s in range(10):
        _, l2 = aug.apply(img, lab, ("red", "aspect"), np.random.default_rng(s))
        np.testing.assert_array_equal(l2, lab)
    assert Augment(enabled=False).apply(img, lab, ("red",), np.random.default_rng(0))[1] is lab


def test_nodata_strip_blanks_image_and_labels_together_along_one_side() -> None:
    img = np.ones((3, 40, 40), np.float32)
    lab = np.ones((40, 40), np.uint8)
    sides = set()
    for s in range(40):
        i2, l2 = blank_strip(img, lab, np.random.default_rng(s))
        gone = np.isnan(i2).all(axis=0)
        assert (np.isnan(i2).any(axis=0) == gone).all()  # every band at once
        np.testing.assert_array_equal(gone, l2 == UNKNOWN)  # no data is never labelled
        assert 2 <= gone.sum() // 40 <= 20  # 5-50 % of the chip
        rows, cols = np.nonzero(gone)
        sides.add((rows.min() == 0 and rows.max() == 39, cols.min() == 0, rows.min() == 0))
        # one contiguous strip touching an edge: full rows or full columns
        full_rows, full_cols = gone.all(axis=1).sum(), gone.all(axis=0).sum()
        assert gone.sum() in (full_rows * 40, full_cols * 40)
    assert len(sides) >= 3  # all four sides are drawn over the seeds
    assert (img == 1).all() and (lab == 1).all()  # inputs untouched


def test_nodata_probability_zero_never_blanks() -> None:
    img = np.ones((2, 16, 16), np.float32)
    lab = np.ones((16, 16), np.uint8)
    aug = Augment(brightness=0.0, contrast=0.0, nodata=0.0)
    for s in range(20):
        i2, l2 = aug.apply(img, lab, ("red", "nir"), np.random.default_rng(s))
        assert np.isfinite(i2).all() and (l2 == 1).all()
    blanked = sum(np.isnan(Augment(nodata=1.0).apply(img, lab, ("red", "nir"),
                                                     np.random.default_rng(s))[0]).any()
                  for s in range(10))
    assert blanked == 10


def test_physical_shifts_are_seeded_and_touch_only_optical_bands() -> None:
    bands = ("blue", "green", "red", "nir", "swir16", "swir22", "elevation")
    img = np.random.default_rng(0).uniform(0.05, 0.8, size=(7, 16, 16)).astype(np.float32)
    img[6] = 2500.0
    lab = np.zeros((16, 16), np.uint8)
    aug = Augment(brightness=0.0, contrast=0.0, nodata=0.0, gain=0.1, offset=0.02, haze=1.0,
                  illumination=1.0)
    a, _ = aug.apply(img, lab, bands, np.random.default_rng(3))
    b, _ = aug.apply(img, lab, bands, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert (a[6] == 2500.0).all() and not np.allclose(a[:6], dihedral(img, lab, 0, False)[0][:6])


def test_a_dropped_band_is_no_data_in_that_band_only() -> None:
    bands = ("blue", "green", "red", "nir", "swir16", "swir22")
    img = np.full((6, 8, 8), 0.3, np.float32)
    lab = np.ones((8, 8), np.uint8)
    aug = Augment(brightness=0.0, contrast=0.0, nodata=0.0, drop=1.0, drop_bands=("nir",))
    out, lab2 = aug.apply(img, lab, bands, np.random.default_rng(0))
    assert np.isnan(out[3]).all() and np.isfinite(np.delete(out, 3, 0)).all()
    assert (lab2 == 1).all()  # the pixels keep their labels: the other bands still see them


def test_coarsen_averages_pixels_and_takes_the_majority_label() -> None:
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    lab = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [UNKNOWN, UNKNOWN, 3, 0], [UNKNOWN, 1, 0, 0]],
                   np.uint8)
    out, coarse = coarsen(img, lab, 2)
    np.testing.assert_allclose(out[0], [[2.5, 4.5], [10.5, 12.5]])
    assert coarse[0, 0] == 1  # three of four glacier
    assert coarse[0, 1] == 0
    assert coarse[1, 0] == UNKNOWN  # three of four unknown
    assert coarse[1, 1] & 2  # touches the ring: kept out of the loss

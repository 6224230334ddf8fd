"""Augmentation of training chips: flips/rotations, brightness/contrast jitter, no-data dropout.

Everything is drawn from an explicit ``numpy.random.Generator``, so a seed fixes every chip a run
sees. Geometric transforms move image and labels together. Photometric jitter touches only the
optical bands and is applied in physical units (reflectance) before normalisation, as a change of
illumination and haze would be: brightness multiplies all optical bands of a chip by one factor
(band ratios, hence the band-ratio and NDSI physics, are preserved), contrast stretches them around
the chip's mean.

No-data dropout blanks a random strip along one side of a chip (all bands no data, labels unknown).
Real tiles have no data at scene edges, in masked clouds and in sensor gaps; a network that never
saw glacier beside a no-data edge learns that "next to no data" means "not glacier" and erodes the
ice along every scene edge and cloud mask it meets.

Direction-dependent terrain bands (``aspect``, ``hillshade``) would become wrong under rotation, so
chips carrying them are not rotated or flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from glacierscale.config import OPTICAL_BANDS
from glacierscale.train.labels import UNKNOWN

#: Bands whose values change meaning when the image is rotated or mirrored.
DIRECTIONAL_BANDS = frozenset({"aspect", "hillshade"})


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; ``enabled=False`` gives the identity."""

    enabled: bool = True
    brightness: float = 0.1  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.1  # factor drawn from [1 - c, 1 + c]
    nodata: float = 0.25  # probability of blanking a strip (up to half the chip) along one side

    def apply(self, image: NDArray[np.float32], labels: NDArray[np.uint8], bands: Sequence[str],
              rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        """Augment one chip: ``image`` (C, H, W) in physical units (NaN = no data), ``labels``
        (H, W). Returns new arrays; the inputs are not modified."""
        if not self.enabled:
            return image, labels
        if not DIRECTIONAL_BANDS.intersection(bands):
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            image, labels = dihedral(image, labels, k, flip)
        optical = [i for i, b in enumerate(bands) if b in OPTICAL_BANDS]
        if optical and (self.brightness > 0 or self.contrast > 0):
            b = float(rng.uniform(1.0 - self.brightness, 1.0 + self.brightness))
            c = float(rng.uniform(1.0 - self.contrast, 1.0 + self.contrast))
            image = image.copy()
            sub = image[optical]
            mean = np.nanmean(sub, axis=(1, 2), keepdims=True) if np.isfinite(sub).any() else 0.0
            image[optical] = ((sub - mean) * c + mean) * b
        if self.nodata > 0 and float(rng.random()) < self.nodata:
            image, labels = blank_strip(image, labels, rng)
        return image, labels


def blank_strip(image: NDArray[np.float32], labels: NDArray[np.uint8],
                rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Set a strip of 5-50 % of the chip along a random side to no data (NaN, labels unknown)."""
    h, w = labels.shape
    side = int(rng.integers(4))
    n = int(rng.integers(max(1, h // 20), max(2, h // 2) + 1)) if side < 2 else int(
        rng.integers(max(1, w // 20), max(2, w // 2) + 1))
    sel = [(slice(0, n), slice(None)), (slice(h - n, h), slice(None)),
           (slice(None), slice(0, n)), (slice(None), slice(w - n, w))][side]
    image, labels = image.copy(), labels.copy()
    image[(slice(None), *sel)] = np.nan
    labels[sel] = UNKNOWN
    return image, labels


def dihedral(image: NDArray, labels: NDArray, k: int, flip: bool) -> tuple[NDArray, NDArray]:
    """Rotate by ``k`` quarter turns, then mirror left-right if ``flip`` (image and labels)."""
    image = np.rot90(image, k, axes=(-2, -1))
    labels = np.rot90(labels, k, axes=(-2, -1))
    if flip:
        image, labels = image[..., ::-1], labels[..., ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)

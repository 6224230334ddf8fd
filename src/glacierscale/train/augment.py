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

Physical shifts (off by default; the shipped default uses them) teach the network what another
calibration, atmosphere and terrain do to ice, with the models of :mod:`glacierscale.train.shifts`:
per-band gain and offset, haze, illumination of synthetic terrain with patches of cast shadow, and
crops at twice the pixel size (:func:`coarsen`), and a band missing from a crop (``drop``: the
network then reads the band's training mean, as for a scene without it). Their strengths are
drawn per chip.

Direction-dependent terrain bands (``aspect``, ``hillshade``) would become wrong under rotation, so
chips carrying them are not rotated or flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from glacierscale.config import OPTICAL_BANDS
from glacierscale.train import shifts
from glacierscale.train.labels import GLACIER_BIT, RING_BIT, UNKNOWN

#: Bands whose values change meaning when the image is rotated or mirrored.
DIRECTIONAL_BANDS = frozenset({"aspect", "hillshade"})


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; ``enabled=False`` gives the identity."""

    enabled: bool = True
    brightness: float = 0.1  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.1  # factor drawn from [1 - c, 1 + c]
    nodata: float = 0.25  # probability of blanking a strip (up to half the chip) along one side
    gain: float = 0.0  # per-band gain drawn from [1 - gain, 1 + gain] (half of the chips)
    offset: float = 0.0  # per-band offset drawn from [-offset, offset] (half of the chips)
    haze: float = 0.0  # haze of a level drawn from [0, haze] (half of the chips)
    illumination: float = 0.0  # probability of terrain illumination with cast-shadow patches
    coarsen: float = 0.0  # probability of a crop at a coarser pixel size
    coarsen_factors: tuple[int, ...] = (2,)  # pixel-size factors, one drawn per coarse crop
    #: probability of one band of ``drop_bands`` missing from a crop (the network then sees the
    #: band's training mean, as the engine gives it for a missing band)
    drop: float = 0.0
    drop_bands: tuple[str, ...] = ()

    @property
    def physical(self) -> bool:
        """True when any physical shift is on."""
        return bool(self.gain or self.offset or self.haze or self.illumination)

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
        if optical and self.physical:
            image = self._physical(image, [bands[i] for i in optical], optical, rng)
        droppable = [i for i, b in enumerate(bands) if b in self.drop_bands]
        if droppable and self.drop > 0 and float(rng.random()) < self.drop:
            image = image.copy()
            image[droppable[int(rng.integers(len(droppable)))]] = np.nan
        if self.nodata > 0 and float(rng.random()) < self.nodata:
            image, labels = blank_strip(image, labels, rng)
        return image, labels


    def _physical(self, image: NDArray[np.float32], names: Sequence[str], optical: Sequence[int],
                  rng: np.random.Generator) -> NDArray[np.float32]:
        sub = image[list(optical)]
        if self.gain > 0 and rng.random() < 0.5:
            sub = shifts.gain_offset(sub, names, rng, gain=self.gain)
        if self.offset > 0 and rng.random() < 0.5:
            sub = shifts.gain_offset(sub, names, rng, offset=self.offset)
        if self.haze > 0 and rng.random() < 0.5:
            sub = shifts.haze(sub, names, rng, level=float(rng.uniform(0.0, self.haze)))
        if self.illumination > 0 and rng.random() < self.illumination:
            sub = illuminate(sub, names, rng)
        out = image.copy()
        out[list(optical)] = sub
        return out


def illuminate(image: NDArray[np.float32], bands: Sequence[str],
               rng: np.random.Generator) -> NDArray[np.float32]:
    """Synthetic terrain (relief 0.2 to 1) lighting the chip, with patches of cast shadow over
    up to 60 % of it: ``rho * (f * (1 - d) + d)`` as :func:`glacierscale.train.shifts.illumination`.
    """
    shape = image.shape[1:]
    f = shifts.terrain_illumination(shape, rng, relief=float(rng.uniform(0.2, 1.0)))
    cover = float(rng.uniform(0.0, 0.6))
    if cover > 0:
        field = shifts.smooth_field(shape, rng, cells=3)
        f = np.where(field < np.quantile(field, cover), 0.0, f)
    return shifts.light(image, bands, f)


def coarsen(image: NDArray[np.float32], labels: NDArray[np.uint8], k: int
            ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """A crop at ``k`` times the pixel size: block means of the image (no data where a block has
    none), labels by majority of the known pixels, unknown where most of a block is unknown, and
    the ring kept wherever a block touches it."""
    h, w = labels.shape
    hh, ww = h // k, w // k
    image = shifts.resample(image[:, :hh * k, :ww * k], k)
    blocks = labels[:hh * k, :ww * k].reshape(hh, k, ww, k)
    known = blocks != UNKNOWN
    n_known = known.sum(axis=(1, 3))
    glacier = (known & ((blocks & GLACIER_BIT) > 0)).sum(axis=(1, 3))
    ring = (known & ((blocks & RING_BIT) > 0)).any(axis=(1, 3))
    out = np.where(2 * glacier >= np.maximum(n_known, 1), GLACIER_BIT, 0).astype(np.uint8)
    out[ring] |= RING_BIT
    out[2 * n_known < k * k] = UNKNOWN
    return image, out


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

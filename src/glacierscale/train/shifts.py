"""Domain shifts applied to test imagery: what another sensor, calibration, atmosphere, terrain,
pixel size or band set does to the pixels a model sees.

Every shift is a pure function of a tile's ``(C, H, W)`` surface reflectance (NaN = no data), its
band names and a seed, so a stress test applies the same shift to the held-out pixels of every
method it compares. The physical models are deliberately simple and stated with their numbers:

- **gain / offset**: per-band calibration differences, ``rho' = g_b * rho + o_b`` with ``g_b`` and
  ``o_b`` drawn once per tile from a seeded uniform distribution;
- **haze**: an added path reflectance falling with wavelength (``lambda^-2``, Rayleigh-like) and a
  transmittance loss, with a smooth spatial field of optical depth;
- **illumination**: direct plus diffuse light on synthetic terrain. A pixel receives ``f`` times
  the direct light of a flat surface (``f`` from the hillshade of a smooth random surface; cast
  shadow where ``f`` is 0) plus its diffuse share, which is larger at short wavelengths:
  ``rho' = rho * (f * (1 - d_lambda) + d_lambda)``;
- **resolution**: the tile resampled to another pixel size (block mean for coarser pixels,
  bilinear for finer), predicted there, and the probability brought back to the tile grid;
- **missing band**: a band the scene does not have, filled with the model's training mean (which
  is what the engine's normalisation makes of no data).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Centre wavelengths (micrometres) of the common optical bands (Sentinel-2 MSI / Landsat OLI).
WAVELENGTH_UM = {"coastal": 0.443, "blue": 0.49, "green": 0.56, "red": 0.665, "nir": 0.865,
                 "nir08": 0.865, "swir16": 1.61, "swir22": 2.19}

#: Diffuse share of the irradiance at the blue band under a clear sky; it falls as lambda^-1.5.
DIFFUSE_BLUE = 0.25
#: Haze path reflectance at the blue band per unit of optical-depth level; it falls as lambda^-2.
HAZE_PATH_BLUE = 0.04
#: Haze extinction at the blue band per unit of level; it falls as lambda^-1.3.
HAZE_EXTINCTION_BLUE = 0.15


@dataclass(frozen=True)
class Shift:
    """One domain shift at one level: ``kind`` names the physics, ``params`` its strength.

    ``kind`` is one of ``none``, ``gain``, ``offset``, ``haze``, ``illumination``, ``resolution``,
    ``missing``; ``sensor`` shifts are other scenes (handled by the stress test, not here).
    """

    kind: str
    level: str
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label(self) -> str:
        return self.kind if self.kind == "none" else f"{self.kind}: {self.level}"


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int = 4
                  ) -> NDArray[np.float64]:
    """A smooth random field in [0, 1]: bilinear interpolation of a coarse uniform grid."""
    h, w = shape
    coarse = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    out: NDArray[np.float64] = (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx)
                                + d * fy * fx)
    return out


def _wavelengths(bands: Sequence[str]) -> NDArray[np.float64]:
    missing = [b for b in bands if b not in WAVELENGTH_UM]
    if missing:
        raise ValueError(f"no wavelength for bands {missing}: optical shifts need optical bands")
    return np.array([WAVELENGTH_UM[b] for b in bands])


def gain_offset(image: NDArray[np.float32], bands: Sequence[str], rng: np.random.Generator, *,
                gain: float = 0.0, offset: float = 0.0) -> NDArray[np.float32]:
    """Per-band ``rho' = g * rho + o`` with ``g`` in ``[1 - gain, 1 + gain]`` and ``o`` in
    ``[-offset, offset]``, drawn once per band."""
    c = len(bands)
    g = 1.0 + gain * rng.uniform(-1.0, 1.0, c)
    o = offset * rng.uniform(-1.0, 1.0, c)
    return (image * g[:, None, None] + o[:, None, None]).astype(np.float32)


def haze(image: NDArray[np.float32], bands: Sequence[str], rng: np.random.Generator, *,
         level: float) -> NDArray[np.float32]:
    """Haze of optical-depth ``level`` (0.5 thin, 1 moderate, 2 thick), varying smoothly from half
    to one and a half times the level across the tile."""
    lam = _wavelengths(bands)[:, None, None]
    tau = level * (0.5 + smooth_field(image.shape[1:], rng))[None]
    path = HAZE_PATH_BLUE * tau * (WAVELENGTH_UM["blue"] / lam) ** 2
    trans = np.exp(-HAZE_EXTINCTION_BLUE * tau * (WAVELENGTH_UM["blue"] / lam) ** 1.3)
    return (image * trans + path).astype(np.float32)


def terrain_illumination(shape: tuple[int, int], rng: np.random.Generator, *, relief: float,
                         sun_elevation_deg: float = 35.0) -> NDArray[np.float64]:
    """Direct-light factor of a smooth random surface relative to flat ground (0 = shadow).

    ``relief`` scales the slopes: 1 gives slopes of up to about 40 degrees.
    """
    height = smooth_field(shape, rng, cells=6) * relief * shape[0] * 0.6
    gy, gx = np.gradient(height)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    zen = math.radians(90.0 - sun_elevation_deg)
    azi = math.radians(rng.uniform(0.0, 360.0))
    cos_i = np.cos(zen) * np.cos(slope) + np.sin(zen) * np.sin(slope) * np.cos(azi - aspect)
    factor: NDArray[np.float64] = np.clip(cos_i, 0.0, None) / math.cos(zen)
    return factor


def illumination(image: NDArray[np.float32], bands: Sequence[str], rng: np.random.Generator, *,
                 relief: float = 1.0, shadow: bool = False) -> NDArray[np.float32]:
    """Shadowed and sunlit slopes: ``rho * (f * (1 - d) + d)`` with ``d`` the diffuse share of
    each band. ``shadow=True`` puts the whole tile in cast shadow (``f = 0``: diffuse light
    only), the darkest case."""
    f = (np.zeros(image.shape[1:]) if shadow
         else terrain_illumination(image.shape[1:], rng, relief=relief))
    return light(image, bands, f)


def light(image: NDArray[np.float32], bands: Sequence[str], direct: NDArray[np.floating]
          ) -> NDArray[np.float32]:
    """Reflectance seen under ``direct`` (H, W) times the direct light of flat ground plus the
    diffuse share ``d`` of each band: ``rho * (f * (1 - d) + d)``."""
    lam = _wavelengths(bands)[:, None, None]
    d = np.clip(DIFFUSE_BLUE * (WAVELENGTH_UM["blue"] / lam) ** 1.5, 0.0, 1.0)
    return (image * (np.asarray(direct)[None] * (1.0 - d) + d)).astype(np.float32)


def missing_band(image: NDArray[np.float32], bands: Sequence[str], band: str,
                 fill: float) -> NDArray[np.float32]:
    """``band`` replaced by ``fill`` (e.g. its training mean) where the pixel has data."""
    out = image.copy()
    i = list(bands).index(band)
    out[i] = np.where(np.isfinite(image[i]), np.float32(fill), np.float32(np.nan))
    return out


def resample(image: NDArray[np.float32], factor: float) -> NDArray[np.float32]:
    """The tile at ``factor`` times the pixel size: block means (NaN-aware) for an integer
    factor > 1, bilinear interpolation for ``1 / factor`` an integer."""
    c, h, w = image.shape
    if factor >= 1:
        k = round(factor)
        hh, ww = h // k, w // k
        blocks = image[:, :hh * k, :ww * k].reshape(c, hh, k, ww, k)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(blocks)
            n = ok.sum(axis=(2, 4))
            s = np.where(ok, blocks, 0.0).sum(axis=(2, 4))
            out = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        return out.astype(np.float32)
    import torch

    k = round(1.0 / factor)
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    up = torch.nn.functional.interpolate(torch.nan_to_num(x, nan=0.0), scale_factor=k,
                                         mode="bilinear", align_corners=False)
    valid = torch.nn.functional.interpolate(torch.isfinite(x).all(dim=1, keepdim=True).float(),
                                            scale_factor=k, mode="nearest")
    return torch.where(valid > 0, up, torch.nan)[0].numpy().astype(np.float32)


def back_to_grid(prob: NDArray[np.float32], factor: float, shape: tuple[int, int]
                 ) -> NDArray[np.float32]:
    """A probability predicted at ``factor`` times the pixel size, on the original grid: nearest
    (each coarse pixel covers ``factor``-squared fine ones) or the block mean of finer pixels."""
    h, w = shape
    if factor >= 1:
        k = round(factor)
        up = np.repeat(np.repeat(prob, k, axis=0), k, axis=1)
        out = np.full(shape, np.nan, np.float32)
        out[:up.shape[0], :up.shape[1]] = up[:h, :w]
        return out
    k = round(1.0 / factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # blocks of no data stay NaN
        mean = np.nanmean(prob[:h * k, :w * k].reshape(h, k, w, k), axis=(1, 3))
    return mean.astype(np.float32)


def apply_shift(shift: Shift, image: NDArray[np.float32], bands: Sequence[str], seed: int,
                *, means: Sequence[float] | None = None) -> NDArray[np.float32]:
    """``image`` under ``shift`` (resolution shifts are not applied here: see :func:`resample`).

    ``seed`` makes every random draw of the shift reproducible (one seed per tile); ``means``
    (the model's training means, in ``bands`` order) fill a missing band.
    """
    rng = np.random.default_rng(seed)
    p = shift.params
    if shift.kind in ("none", "resolution"):
        return image
    if shift.kind in ("gain", "offset"):
        return gain_offset(image, bands, rng, gain=float(p.get("gain", 0.0)),
                           offset=float(p.get("offset", 0.0)))
    if shift.kind == "haze":
        return haze(image, bands, rng, level=float(p["level"]))
    if shift.kind == "illumination":
        return illumination(image, bands, rng, relief=float(p.get("relief", 1.0)),
                            shadow=bool(p.get("shadow", False)))
    if shift.kind == "missing":
        band = str(p["band"])
        if means is None:
            raise ValueError("a missing-band shift needs the training means to fill the band")
        return missing_band(image, bands, band, float(means[list(bands).index(band)]))
    raise ValueError(f"unknown shift kind {shift.kind!r}")


#: The stress-test shifts, each at the levels reported in the model card.
STRESS_SHIFTS: tuple[Shift, ...] = (
    Shift("none", "unshifted"),
    Shift("gain", "±10 %", {"gain": 0.10}),
    Shift("gain", "±25 %", {"gain": 0.25}),
    Shift("offset", "±0.02", {"offset": 0.02}),
    Shift("offset", "±0.05", {"offset": 0.05}),
    Shift("haze", "thin (0.5)", {"level": 0.5}),
    Shift("haze", "moderate (1)", {"level": 1.0}),
    Shift("haze", "thick (2)", {"level": 2.0}),
    Shift("illumination", "moderate relief", {"relief": 0.5}),
    Shift("illumination", "steep relief", {"relief": 1.5}),
    Shift("illumination", "cast shadow", {"shadow": True}),
    Shift("resolution", "10 m", {"factor": 1 / 3}),
    Shift("resolution", "60 m", {"factor": 2}),
    Shift("resolution", "120 m", {"factor": 4}),
    Shift("missing", "blue", {"band": "blue"}),
    Shift("missing", "nir", {"band": "nir"}),
    Shift("missing", "swir22", {"band": "swir22"}),
)

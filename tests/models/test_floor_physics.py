"""The floor's physics logit: the NDSI where the pixel is lit, both indices where it is dark
and its red reflectance is a measurement."""

from __future__ import annotations

import torch

from glacierscale.models.baselines import NDSI, BandRatio
from glacierscale.models.floor import FloorParams, physics_logit
from glacierscale.models.ood import Mixture

BANDS = ("green", "red", "swir16")


def _params() -> FloorParams:
    mixture = Mixture((1.0,), ((0.0, 0.0, 0.0),), (((1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                                    (0.0, 0.0, 1.0)),), 5.0, 0.99)
    return FloorParams(net_temperature=1.0, mixture=mixture, rate=0.2)


def _refl(green: float, red: float, swir: float) -> torch.Tensor:
    return torch.tensor([green, red, swir]).view(1, 3, 1, 1)


def test_lit_pixels_follow_the_ndsi_and_dark_ones_need_both_indices() -> None:
    p = _params()
    lit = _refl(0.5, 0.45, 0.05)
    nd = NDSI()(torch.cat([lit[:, :1], lit[:, 2:]], dim=1))
    assert torch.equal(physics_logit(lit, p, BANDS), nd)
    # shadowed rock: the NDSI says ice (0.45 > 0.4), the red/SWIR ratio (1.9 < 2.8) does not
    rock = _refl(0.029, 0.021, 0.011)
    nd = NDSI()(torch.cat([rock[:, :1], rock[:, 2:]], dim=1))
    br = BandRatio()(rock[:, 1:])
    assert float(nd) > 0 > float(br)
    assert torch.equal(physics_logit(rock, p, BANDS), br)
    # shadowed ice: both say ice, and the floor with them
    ice = _refl(0.04, 0.03, 0.002)
    assert float(physics_logit(ice, p, BANDS)) > 0


def test_a_non_positive_red_reflectance_leaves_the_dark_pixel_to_the_ndsi() -> None:
    # Deep shadow after atmospheric correction, or a calibration offset: red at or below zero
    # is no measurement, and the ratio of it (its log clamped) must not veto the NDSI.
    p = _params()
    for red in (0.0, -0.01):
        shadowed_ice = _refl(0.03, red, 0.002)
        nd = NDSI()(torch.cat([shadowed_ice[:, :1], shadowed_ice[:, 2:]], dim=1))
        assert float(BandRatio()(shadowed_ice[:, 1:])) < 0 < float(nd)
        assert torch.equal(physics_logit(shadowed_ice, p, BANDS), nd)
    # the same pixel with a measured red keeps the band ratio's say
    measured = _refl(0.03, 0.001, 0.002)
    assert torch.equal(physics_logit(measured, p, BANDS),
                       BandRatio()(measured[:, 1:]))

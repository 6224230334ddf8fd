"""The floor's physics logit: the NDSI where the pixel is lit, both indices where it is dark."""

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

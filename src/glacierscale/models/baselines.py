"""Band-math baselines: the red/SWIR band ratio and the NDSI, as models of the registry.

Both express a classic threshold as a logit whose probability is exactly 0.5 on the threshold, so
they run through the same engine, blending and thresholding as the networks and serve as the
reference any learned model must beat. Their cards use identity normalisation: they read physical
reflectance.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from glacierscale.models.base import TorchModel
from glacierscale.models.card import ModelCard

#: Reflectances are floored here before ratios and logs: dark or zero pixels stay finite.
EPS = 1e-4


def params_hash(architecture: str, params: Mapping[str, Any]) -> str:
    """sha256 of a weight-free model's definition, standing in for the hash of its weights."""
    blob = json.dumps({"architecture": architecture, "params": dict(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class BandRatio(nn.Module):
    """``logit = k * (log(red / swir16) - log(threshold))``: ice and snow are bright in red, dark
    in SWIR (Paul et al.; Fig. 1 of the multisensor review uses red/SWIR > 2.8).

    Input: (red, swir16) reflectance.
    """

    def __init__(self, threshold: float = 2.8, k: float = 4.0) -> None:
        super().__init__()
        self.log_threshold = math.log(threshold)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red, swir = x[:, 0:1].float(), x[:, 1:2].float()
        ratio = torch.log(red.clamp_min(EPS)) - torch.log(swir.clamp_min(EPS))
        return self.k * (ratio - self.log_threshold)


class NDSI(nn.Module):
    """``logit = k * ((green - swir16) / (green + swir16) - threshold)``. Input: (green, swir16)."""

    def __init__(self, threshold: float = 0.4, k: float = 10.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        green, swir = x[:, 0:1].float().clamp_min(0.0), x[:, 1:2].float().clamp_min(0.0)
        ndsi = (green - swir) / (green + swir).clamp_min(EPS)
        return self.k * (ndsi - self.threshold)


def _card(name: str, bands: tuple[str, str], params: dict[str, float], description: str,
          provenance: str) -> ModelCard:
    return ModelCard(
        name=name, architecture=name, bands=bands, mean=(0.0, 0.0), std=(1.0, 1.0),
        classes=("glacier",), halo_px=0, params=params,
        weights_hash=params_hash(name, params), licence="Apache-2.0",
        description=description, provenance={"method": provenance},
        domain={"notes": "physics: no training data, no region, sensor or season restriction"},
    )


def band_ratio(threshold: float = 2.8, k: float = 4.0) -> TorchModel:
    """The red/SWIR1 band-ratio baseline (probability 0.5 exactly at red/swir16 == threshold)."""
    params = {"threshold": threshold, "k": k}
    card = _card("band-ratio", ("red", "swir16"), params,
                 "Clean-ice and snow mapping by the red/SWIR1 band ratio.",
                 "band ratio red/swir16 > 2.8 (Paul et al. 2002; review Fig. 1)")
    return TorchModel(BandRatio(threshold, k), card, autocast_ok=False)


def ndsi(threshold: float = 0.4, k: float = 10.0) -> TorchModel:
    """The NDSI baseline (probability 0.5 exactly at ``NDSI == threshold``)."""
    params = {"threshold": threshold, "k": k}
    card = _card("ndsi", ("green", "swir16"), params,
                 "Snow and ice by the normalised difference snow index.",
                 "NDSI = (green - swir16) / (green + swir16) > 0.4 (Dozier 1989)")
    return TorchModel(NDSI(threshold, k), card, autocast_ok=False)


def from_card(card: ModelCard) -> TorchModel:
    """Rebuild a baseline from its card (parameters are in ``card.params``)."""
    cls = {"band-ratio": BandRatio, "ndsi": NDSI}[card.architecture]
    return TorchModel(cls(**dict(card.params)), card, autocast_ok=False)

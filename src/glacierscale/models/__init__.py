"""Models: a registry of named segmentation models, their cards and safetensors weights.

``load_model("band-ratio")``, ``load_model("unet")`` or ``load_model("s3://bucket/m/card.json")``
give a :class:`GlacierModel`: a :class:`ModelCard` plus ``logits(x)`` on normalised input. A
trained card may put its network under a physics floor (:class:`PhysicsFloor`) and states its
training domain (:func:`check_tile` tells whether a tile lies in it).
"""

from __future__ import annotations

from glacierscale.models.base import GlacierModel, SampledModel, TorchModel, has_dropout
from glacierscale.models.calibration import (
    fit_temperature,
    read_calibration,
    with_temperature,
    write_calibration,
)
from glacierscale.models.card import COMMON_BANDS, ModelCard
from glacierscale.models.domain import Domain, DomainCheck, check_tile, domain_warning
from glacierscale.models.ensemble import Ensemble
from glacierscale.models.floor import FloorParams, PhysicsFloor, deferral_spread
from glacierscale.models.registry import (
    REGISTRY,
    available_models,
    build_network,
    load_card_model,
    load_model,
    register_model,
    seeded_unet,
)
from glacierscale.models.unet import UNet
from glacierscale.models.weights import PickleRefusedError, save_model

__all__ = [
    "COMMON_BANDS",
    "REGISTRY",
    "Domain",
    "DomainCheck",
    "Ensemble",
    "FloorParams",
    "GlacierModel",
    "ModelCard",
    "PhysicsFloor",
    "PickleRefusedError",
    "SampledModel",
    "TorchModel",
    "UNet",
    "available_models",
    "build_network",
    "check_tile",
    "deferral_spread",
    "domain_warning",
    "fit_temperature",
    "has_dropout",
    "load_card_model",
    "load_model",
    "read_calibration",
    "register_model",
    "save_model",
    "seeded_unet",
    "with_temperature",
    "write_calibration",
]

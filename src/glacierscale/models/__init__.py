"""Models: a registry of named segmentation models, their cards and safetensors weights.

``load_model("band-ratio")``, ``load_model("unet")`` or ``load_model("s3://bucket/m/card.json")``
give a :class:`GlacierModel`: a :class:`ModelCard` plus ``logits(x)`` on normalised input.
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
from glacierscale.models.ensemble import Ensemble
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
    "Ensemble",
    "GlacierModel",
    "ModelCard",
    "PickleRefusedError",
    "SampledModel",
    "TorchModel",
    "UNet",
    "available_models",
    "build_network",
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

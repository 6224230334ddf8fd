"""segmentation-models-pytorch architectures, when the optional ``smp`` extra is installed.

A card with ``architecture: "smp:Unet"`` (or ``smp:UnetPlusPlus``, ``smp:DeepLabV3Plus``, ...) and
``params: {"encoder_name": "resnet34"}`` builds that network with ``encoder_weights=None``: the
weights always come from the card's safetensors, never from the internet at run time.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

INSTALL_HINT = ("segmentation-models-pytorch is not installed; install the optional extra with "
                "`pip install 'glacierscale[smp]'` (it needs torchvision matching your torch)")


def smp_available() -> bool:
    """True when segmentation-models-pytorch imports."""
    try:
        importlib.import_module("segmentation_models_pytorch")
    except ImportError:
        return False
    return True


def build_smp(arch: str, in_channels: int, classes: int, params: dict[str, Any]) -> nn.Module:
    """Build ``segmentation_models_pytorch.<arch>`` from the card's parameters, no downloads."""
    try:
        smp = importlib.import_module("segmentation_models_pytorch")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    kwargs = dict(params)
    kwargs["encoder_weights"] = None
    try:
        net: nn.Module = smp.create_model(arch, in_channels=in_channels, classes=classes, **kwargs)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"segmentation-models-pytorch cannot build {arch!r} with {params}: "
                         f"{exc}") from exc
    return net

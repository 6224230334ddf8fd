"""What a glacier model is to the rest of the product: a card plus normalised pixels -> logits.

Any object with a ``card`` and a ``logits`` method is a :class:`GlacierModel`. Models that can
give several plausible answers (ensembles, test-time augmentation, Monte Carlo dropout) also offer
``sample_logits``; the engine turns the spread of those samples into the uncertainty band.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from glacierscale.models.card import ModelCard


@runtime_checkable
class GlacierModel(Protocol):
    """A binary segmentation model: ``(N, C, h, w)`` normalised input -> ``(N, 1, h, w)`` logits.

    ``card`` may be a plain attribute or a read-only property.
    """

    @property
    def card(self) -> ModelCard: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SampledModel(Protocol):
    """A model that returns K samples of its logits, ``(K, N, 1, h, w)``, for uncertainty."""

    @property
    def card(self) -> ModelCard: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchModel(nn.Module):
    """A torch network plus its card: the concrete :class:`GlacierModel` of the registry.

    ``autocast_ok`` says whether reduced precision (bf16/fp16 autocast) is accurate enough for the
    network; band-math baselines set it False: their threshold sits on a ratio of reflectances.
    """

    def __init__(self, net: nn.Module, card: ModelCard, *, autocast_ok: bool = True) -> None:
        super().__init__()
        self.net = net
        self.card = card
        self.autocast_ok = autocast_ok
        self.eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[:, :1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def with_card(self, card: ModelCard) -> TorchModel:
        """The same network (shared weights) under another card, e.g. a new temperature."""
        return TorchModel(self.net, card, autocast_ok=self.autocast_ok)


def has_dropout(module: nn.Module) -> bool:
    """True when the network contains active dropout layers (so MC dropout means something)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def replace_card(model: GlacierModel, **changes: object) -> GlacierModel:
    """A model sharing ``model``'s weights whose card has ``changes`` applied."""
    card = dataclasses.replace(model.card, **changes)  # type: ignore[arg-type]
    with_card = getattr(model, "with_card", None)
    if with_card is None:
        raise TypeError(f"{type(model).__name__} cannot change its card; "
                        "give it a with_card method")
    out: GlacierModel = with_card(card)
    return out

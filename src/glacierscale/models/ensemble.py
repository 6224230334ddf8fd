"""Ensembles: several weight files of one architecture (e.g. cross-validation folds) as one model.

The ensemble's answer is the mean of its members' probabilities (a deep ensemble), and its members'
spread is the uncertainty. Members run one after another on the same batch, so memory stays that of
one member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from glacierscale.models.card import ModelCard

#: Probabilities are clamped here before taking the logit of the ensemble mean, so it stays finite.
_P_EPS = 1e-6


class Ensemble(nn.Module):
    """Members of the same card; ``logits`` is the logit of the mean member probability.

    ``sample_logits`` returns each member's temperature-free logits, ``(K, N, 1, h, w)``; the engine
    applies the card's temperature to each sample before averaging probabilities.
    """

    def __init__(self, members: Sequence[nn.Module], card: ModelCard, *,
                 autocast_ok: bool = True) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.card = card
        self.autocast_ok = autocast_ok
        self.eval()

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x)[:, :1] for m in self.members])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.sample_logits(x).float()).mean(dim=0)
        p = p.clamp(_P_EPS, 1.0 - _P_EPS)
        return torch.log(p) - torch.log1p(-p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def with_card(self, card: ModelCard) -> Ensemble:
        """The same members (shared weights) under another card."""
        return Ensemble(list(self.members), card, autocast_ok=self.autocast_ok)

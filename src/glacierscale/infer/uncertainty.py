"""Uncertainty by sampling: test-time augmentation and Monte Carlo dropout as model wrappers.

Each wrapper is itself a model with ``sample_logits(x) -> (K, N, 1, h, w)``; wrappers compose with
each other and with ensembles (TTA of an ensemble gives members x transforms samples). The engine
turns samples into a mean probability and its standard deviation, blended like any score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from glacierscale.models import GlacierModel, ModelCard, has_dropout

Transform = tuple[int, bool]  # (quarter turns, transpose first)
TTA_SETS: dict[str, tuple[Transform, ...]] = {
    # Flips expressed as rotations and transposes: identity, vertical flip, horizontal flip, 180°.
    "flips": ((0, False), (1, True), (3, True), (2, False)),
    "d4": tuple((k, t) for t in (False, True) for k in range(4)),
}
_P_EPS = 1e-6


def samples_of(model: GlacierModel, x: torch.Tensor) -> torch.Tensor:
    """``(K, N, 1, h, w)`` logits of any model: its samples, or its single answer as K=1."""
    sample = getattr(model, "sample_logits", None)
    if sample is not None:
        out: torch.Tensor = sample(x)
        return out
    return model.logits(x)[None]


def _logit_of_mean(samples: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(samples.float()).mean(dim=0).clamp(_P_EPS, 1.0 - _P_EPS)
    return torch.log(p) - torch.log1p(-p)


def _apply(x: torch.Tensor, t: Transform) -> torch.Tensor:
    k, transpose = t
    if transpose:
        x = x.transpose(-1, -2)
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _invert(x: torch.Tensor, t: Transform) -> torch.Tensor:
    k, transpose = t
    if k:
        x = torch.rot90(x, -k, dims=(-2, -1))
    return x.transpose(-1, -2) if transpose else x


class _Wrapper(nn.Module):
    def __init__(self, model: GlacierModel) -> None:
        super().__init__()
        self.base = model

    @property
    def card(self) -> ModelCard:
        return self.base.card

    @property
    def autocast_ok(self) -> bool:
        return bool(getattr(self.base, "autocast_ok", True))

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return _logit_of_mean(self.sample_logits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


class TTA(_Wrapper):
    """Test-time augmentation: predict on flipped/rotated copies and map the answers back.

    ``transforms="flips"`` (4 samples: identity, both flips, 180° rotation) or ``"d4"`` (all 8
    symmetries of the square; windows are square, so rotations keep shapes).
    """

    def __init__(self, model: GlacierModel, transforms: Literal["flips", "d4"] = "flips") -> None:
        super().__init__(model)
        if transforms not in TTA_SETS:
            raise ValueError(f"unknown TTA set {transforms!r}; use one of {sorted(TTA_SETS)}")
        self.transforms = transforms

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        outs = [_invert(samples_of(self.base, _apply(x, t)), t) for t in TTA_SETS[self.transforms]]
        return torch.cat(outs, dim=0)

    def with_card(self, card: ModelCard) -> TTA:
        return TTA(_with_card(self.base, card), self.transforms)


class MCDropout(_Wrapper):
    """Monte Carlo dropout: ``samples`` forward passes with dropout active (batch norm stays in
    inference mode). Seeded per call, so the same batch gives the same samples every run."""

    def __init__(self, model: GlacierModel, samples: int = 8, seed: int = 0) -> None:
        super().__init__(model)
        if samples < 2:
            raise ValueError(f"MC dropout needs at least 2 samples, got {samples}")
        if not isinstance(model, nn.Module) or not has_dropout(model):
            raise ValueError(f"model {model.card.name!r} has no dropout layers, so MC dropout "
                             "would repeat one answer; use an ensemble or TTA for its uncertainty, "
                             "or a network built with dropout > 0")
        self.samples, self.seed = samples, seed

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        drops = [m for m in self.base.modules()  # type: ignore[attr-defined]
                 if isinstance(m, nn.modules.dropout._DropoutNd)]
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for m in drops:
                m.train()
            try:
                outs = [samples_of(self.base, x) for _ in range(self.samples)]
            finally:
                for m in drops:
                    m.eval()
        return torch.cat(outs, dim=0)

    def with_card(self, card: ModelCard) -> MCDropout:
        return MCDropout(_with_card(self.base, card), self.samples, self.seed)


def _with_card(model: GlacierModel, card: ModelCard) -> GlacierModel:
    fn: Callable[[ModelCard], GlacierModel] | None = getattr(model, "with_card", None)
    if fn is None:
        raise TypeError(f"{type(model).__name__} cannot change its card")
    return fn(card)


def with_uncertainty(model: GlacierModel, *, tta: Literal["flips", "d4"] | None = None,
                     mc_samples: int = 0, seed: int = 0) -> GlacierModel:
    """Wrap ``model`` so the engine reports an uncertainty band.

    Ensembles already give one (member spread); add ``mc_samples`` Monte Carlo dropout passes for
    networks with dropout and/or test-time augmentation ``tta``.
    """
    out: GlacierModel = model
    if mc_samples:
        out = MCDropout(out, mc_samples, seed)
    if tta:
        out = TTA(out, tta)
    return out

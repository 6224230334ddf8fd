"""The physics floor: a network trusted only where it has earned it, the band ratio and NDSI
elsewhere.

A network trained on one glacier knows one glacier. Where its inputs or its behaviour leave what it
saw in training, its answer is not evidence, and the spectral physics that has mapped clean ice for
decades (Paul et al. 2002, Dozier 1989) is the better guess. The floored model's logit is

    z = t * z_net + (1 - t) * z_phys,        t = t_conf * t_ood * t_agree   in [0, 1]

per pixel and per ensemble member, where:

- ``z_phys`` is the NDSI logit of the registry baseline (NDSI > 0.4) on the same pixels, and in
  dark pixels (green reflectance below ``dark_green``, 5 %, and red above 0) the lower of the
  NDSI and band-ratio (red/SWIR1 > 2.8) logits: both must say ice. The NDSI is the better index
  in lit scenes (haze, mixed pixels at coarse resolution), but in shadow the diffuse, blue-rich
  skylight inflates it until shadowed rock reaches its threshold, and the ratio, whose red band
  is lit less by the sky than the green, is the safer one there; optical snow maps put a
  brightness test beside the NDSI for the same reason (Hall et al. 1995);
- ``t_conf`` is the network's confidence: 0 while its calibrated probability is within ``low`` of
  0.5, 1 beyond ``low + width`` (the network decides only where it is sure);
- ``t_ood`` is the input distance: 1 while a pixel's spectrum is as likely under the training
  mixture (:mod:`glacierscale.models.ood`) as 99 % of the training pixels, falling to 0 over
  ``ood_ramp`` nats beyond. A band at exactly its training mean is a missing, imputed band: the
  pixel is judged on the other bands when the network was trained without that band
  (``imputable``), else it gets 0. The local mean over ``ood_pool_px`` caps it, since the network
  reads its neighbourhood too;
- ``t_agree`` is behaviour: within ``window_px`` of a pixel, the share of physics ice
  (``z_phys >= ice_logit``, by default where the physics says ice at all) that the network calls
  not glacier. Every network disagrees with physics somewhere (ice divides, debris); a share far
  above what it showed on its own training pixels (``rate``) means it has met something that
  breaks it (another pixel size, deep shadow, snow unlike its training snow) that the spectrum
  alone does not reveal, and it is not trusted there. Only removals count: where the network adds
  glacier the physics misses (debris, dirty ice), that is what it was trained for.

Its uncertainty is not the spread of its members alone: where the floor defers they all take the
same physics and agree by construction. :func:`deferral_spread` adds how far the floor moved each
member from its network's own answer (:meth:`PhysicsFloor.paired_sample_logits` gives both).

Why a gate and not a network trained to defer: the gate's statistics come from the training data
and are stored in the card, the floor is exact where ``t`` is 0 (the baselines' logits, bit for
bit), and it needs no labels from the places it must protect, which by definition are the ones the
training set lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glacierscale.models.baselines import NDSI, BandRatio
from glacierscale.models.card import ModelCard
from glacierscale.models.features import data_mask
from glacierscale.models.ood import Mixture, MixtureNLL, log_features

#: Bands the floor's physics reads.
PHYSICS_BANDS = ("green", "red", "swir16")
_P_EPS = 1e-6


@dataclass(frozen=True)
class FloorParams:
    """Everything the floor needs, stored in the card's ``floor`` mapping."""

    net_temperature: float
    mixture: Mixture
    rate: float
    low: float = 0.05
    width: float = 0.15
    ood_ramp: float = 6.0
    ood_pool_px: int = 15
    ice_logit: float = 0.0
    dark_green: float = 0.05
    rate_ramp: float = 0.15
    window_px: int = 31
    min_ice_share: float = 0.05
    #: bands the network was trained to do without (their training mean stands in for them)
    imputable: tuple[str, ...] = ()
    band_ratio: Mapping[str, float] = field(default_factory=lambda: {"threshold": 2.8, "k": 4.0})
    ndsi: Mapping[str, float] = field(default_factory=lambda: {"threshold": 0.4, "k": 10.0})

    def to_dict(self) -> dict[str, Any]:
        return {"net_temperature": self.net_temperature, "rate": self.rate, "low": self.low,
                "width": self.width, "ood_ramp": self.ood_ramp, "ood_pool_px": self.ood_pool_px,
                "ice_logit": self.ice_logit, "dark_green": self.dark_green,
                "rate_ramp": self.rate_ramp,
                "window_px": self.window_px, "min_ice_share": self.min_ice_share,
                "imputable": list(self.imputable), "band_ratio": dict(self.band_ratio),
                "ndsi": dict(self.ndsi), "mixture": self.mixture.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FloorParams:
        known = {k: d[k] for k in ("low", "width", "ood_ramp", "ood_pool_px", "ice_logit",
                                   "dark_green", "rate_ramp", "window_px", "min_ice_share")
                 if k in d}
        extra = {k: dict(d[k]) for k in ("band_ratio", "ndsi") if k in d}
        return cls(float(d["net_temperature"]), Mixture.from_dict(d["mixture"]),
                   float(d["rate"]), imputable=tuple(d.get("imputable", ())),
                   **known, **extra)  # type: ignore[arg-type]


def _pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a ``k``-pixel square around each pixel (the image edge shrinks the square)."""
    k = max(1, k | 1)  # odd, so the output keeps the input's size
    # Separable: a column mean then a row mean. The square is the product of a row span and a
    # column span (both shrunk at the edge alike), so this is the same mean, in 2k operations
    # per pixel instead of k^2: 11x faster at the 31 px window on 512 px windows (CPU).
    p = k // 2
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(p, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, p), count_include_pad=False)


def physics_logit(reflectance: torch.Tensor, params: FloorParams,
                  bands: tuple[str, ...]) -> torch.Tensor:
    """The physics logit of ``(N, C, H, W)`` reflectance in ``bands``: the NDSI logit, and in
    dark pixels (green below ``dark_green``) with a positive red reflectance the lower of the
    NDSI and band-ratio logits."""
    g, r, s = (reflectance[:, bands.index(b)][:, None] for b in PHYSICS_BANDS)
    br = BandRatio(**params.band_ratio)(torch.cat([r, s], dim=1))
    nd = NDSI(**params.ndsi)(torch.cat([g, s], dim=1))
    # A red reflectance at or below zero is not a measurement (atmospheric correction overshot
    # in deep shadow, or a calibration offset): the ratio of it says nothing, and its clamped
    # log would veto the NDSI with full force. Such a pixel keeps the NDSI alone.
    dark = (g < params.dark_green) & (r > 0)
    return torch.where(dark, torch.minimum(br, nd), nd)


def removal_rate(z_phys: torch.Tensor, prob: torch.Tensor, valid: torch.Tensor,
                 params: FloorParams) -> torch.Tensor:
    """Share of physics ice within ``window_px`` that the network calls not glacier (0 where such
    ice covers less than ``min_ice_share`` of the window)."""
    ice = ((z_phys >= params.ice_logit) & (valid > 0)).float()
    removed = ice * (prob < 0.5).float()
    share = _pool(ice, params.window_px)
    rate = _pool(removed, params.window_px) / share.clamp_min(1e-6)
    return torch.where(share >= params.min_ice_share, rate, torch.zeros_like(rate))


class PhysicsFloor(nn.Module):
    """A network model (an :class:`~glacierscale.models.Ensemble` or a single member) under the
    physics floor; a :class:`~glacierscale.models.GlacierModel` with ``sample_logits``.

    ``card`` is the floored model's card (its ``temperature`` applies to the floored output);
    ``params`` the floor's statistics.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, card: ModelCard, params: FloorParams) -> None:
        super().__init__()
        missing = [b for b in PHYSICS_BANDS if b not in card.bands]
        if missing:
            raise ValueError(f"model {card.name!r}: the physics floor needs bands {missing}")
        if params.mixture.dims != len(card.bands):
            raise ValueError(f"model {card.name!r}: the floor's mixture has "
                             f"{params.mixture.dims} dimensions for {len(card.bands)} bands")
        self.net = net
        self.card = card
        self.params = params
        self.nll = MixtureNLL(params.mixture)
        bad = [b for b in params.imputable if b not in card.bands or b in PHYSICS_BANDS]
        if bad:
            raise ValueError(f"model {card.name!r}: bands {bad} cannot be imputable (not an "
                             f"input, or read by the physics)")
        # A pixel without an imputable band is judged on the marginal of its other bands.
        self.imputable = [card.bands.index(b) for b in params.imputable]
        self.marginals = nn.ModuleList(MixtureNLL(params.mixture.without(i))
                                       for i in self.imputable)
        self.marginal_ref = [params.mixture.marginal_ref[i] for i in self.imputable]
        c = len(card.bands)
        self.register_buffer("mean", torch.tensor(card.mean).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(card.std).view(1, c, 1, 1), persistent=False)
        self.eval()

    @property
    def autocast_ok(self) -> bool:
        return bool(getattr(self.net, "autocast_ok", True))

    @property
    def members(self) -> list[nn.Module]:
        """The network's ensemble members (one for a single network)."""
        return list(getattr(self.net, "members", [getattr(self.net, "net", self.net)]))

    def _net_samples(self, x: torch.Tensor) -> torch.Tensor:
        sample = getattr(self.net, "sample_logits", None)
        single = getattr(self.net, "logits", None)
        if sample is not None:
            out: torch.Tensor = sample(x)
        elif single is not None:
            out = single(x)[None]
        else:  # a bare network
            out = self.net(x)[:, :1][None]
        return out.float() / self.params.net_temperature

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parts of the floor for a normalised batch: member logits ``z_net`` (K, N, 1, h, w)
        after the network's temperature, ``prob`` (their mean probability), ``z_phys``, the
        three trust maps and their product ``trust`` (each (N, 1, h, w))."""
        z_net = self._net_samples(x)
        p = self.params
        with torch.autocast(x.device.type, enabled=False):
            xf = x.float()
            valid = data_mask(xf)
            refl = xf * self.std + self.mean
            z_phys = physics_logit(refl, p, tuple(self.card.bands))
            prob = torch.sigmoid(z_net).mean(dim=0)
            t_conf = ((prob - 0.5).abs() - p.low).div(p.width).clamp(0.0, 1.0)
            t_ood = self._ood(xf, refl, valid)
            rate = removal_rate(z_phys, prob, valid, p)
            t_agree = ((p.rate + p.rate_ramp - rate) / p.rate_ramp).clamp(0.0, 1.0)
            trust = t_conf * t_ood * t_agree
        return {"z_net": z_net, "prob": prob, "z_phys": z_phys, "t_conf": t_conf,
                "t_ood": t_ood, "t_agree": t_agree, "trust": trust, "rate": rate}

    def _ood(self, xf: torch.Tensor, refl: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Input trust: the mixture NLL against its training reference, 0 for a pixel with a
        band imputed that the network was not trained without, pooled over the neighbourhood."""
        p = self.params
        feats = log_features(refl)

        def ramp(nll: torch.Tensor, ref: float) -> torch.Tensor:
            return ((ref + p.ood_ramp - nll) / p.ood_ramp).clamp(0.0, 1.0)

        t = ramp(self.nll(feats), p.mixture.nll_ref)
        # A band exactly at its training mean while others have data was imputed (no data).
        imputed = (xf == 0) & (valid > 0)
        for i, nll, ref in zip(self.imputable, self.marginals, self.marginal_ref, strict=True):
            at = imputed[:, i:i + 1]
            if bool(at.any()):
                others = torch.cat([feats[:, :i], feats[:, i + 1:]], dim=1)
                t = torch.where(at, ramp(nll(others), ref), t)
        other = [i for i in range(xf.shape[1]) if i not in self.imputable]
        t = t * (1.0 - imputed[:, other].any(dim=1, keepdim=True).float())
        return torch.minimum(t, _pool(t, p.ood_pool_px))

    @staticmethod
    def _blend(g: Mapping[str, torch.Tensor]) -> torch.Tensor:
        t = g["trust"][None]
        return t * g["z_net"] + (1.0 - t) * g["z_phys"][None]

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._blend(self.gates(x))

    def paired_sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(2K, N, 1, h, w)``: the K floored member logits of :meth:`sample_logits`, then
        each member's own network logit, on the floored card's scale (the engine divides both by
        the card's temperature, which gives the network its own calibrated probability).

        The answer is the mean of the first K alone; the second K only widen its spread, see
        :func:`deferral_spread`."""
        g = self.gates(x)
        return torch.cat([self._blend(g), g["z_net"] * self.card.temperature])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.sample_logits(x)).mean(dim=0).clamp(_P_EPS, 1.0 - _P_EPS)
        return torch.log(p) - torch.log1p(-p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def with_card(self, card: ModelCard) -> PhysicsFloor:
        """The same network and floor under another card."""
        return PhysicsFloor(self.net, card, self.params)

    def with_params(self, params: FloorParams) -> PhysicsFloor:
        """The same network under other floor statistics (e.g. one fold's)."""
        return PhysicsFloor(self.net, self.card, params)


def deferral_spread(p: torch.Tensor, alt: torch.Tensor) -> torch.Tensor:
    """The floored model's per-pixel uncertainty from its member probabilities ``p`` (K, ...)
    and each member's own network probability ``alt`` (K, ...):
    ``sqrt(var_k(p_k) + mean_k((p_k - alt_k)^2))``.

    Where the floor trusts the network (``t = 1``) ``p_k == alt_k`` and this is the members'
    spread, as for any ensemble. Where it defers, the members all take the same physics and agree,
    but that agreement is the floor's construction, not evidence: the floor acts exactly where
    nothing validated either answer (out of the training domain, or where the network is unsure),
    so the distance it moved each member away from the network (``(1 - t)`` times the
    network-physics disagreement, in probability) is an error of the answer. Where ``t = 0`` it
    is the root mean square of the physics-network disagreement over the members, which holds
    both the disagreement of the means and the network members' own spread. It is a band
    half-width, not the standard deviation of a distribution on 0..1: it may exceed
    ``sqrt(p (1 - p))``, which is what lets a pixel the physics calls 0.2 and the network 0.7
    fall inside the band of both bounds.
    """
    return (p.var(dim=0, correction=0) + (p - alt).square().mean(dim=0)).sqrt()


def floor_of(card: ModelCard) -> FloorParams | None:
    """The floor statistics of a card (None: the card has no floor)."""
    return FloorParams.from_dict(card.floor) if card.floor else None


def fold_floors(card: ModelCard) -> list[FloorParams]:
    """Per-fold floor statistics recorded by cross-validated training (fold f's come from the
    data fold f's model trained on), in fold order; empty when the card has none."""
    return [FloorParams.from_dict(d) for d in card.floor.get("folds", [])] if card.floor else []


def floored(net: nn.Module, card: ModelCard, params: FloorParams,
            temperature: float = 1.0) -> PhysicsFloor:
    """``net`` (bare network, member or ensemble) under the floor ``params``; ``temperature``
    applies to the floored output."""
    return PhysicsFloor(net, replace(card, temperature=temperature), params)


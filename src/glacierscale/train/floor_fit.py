"""Fitting the physics floor of a trained network from its training chips only.

The floor (:mod:`glacierscale.models.floor`) needs three numbers and a mixture, all taken from
the data the network trained on, never from the pixels it is judged on:

- the network's temperature (from the caller: cross-fitted on the other folds in cross-validation);
- a Gaussian mixture of the log reflectance of the training pixels as the network saw them,
  through its photometric augmentation (the input distance);
- ``rate``: the share of confident physics ice that the network calls not glacier, per window,
  that ``RATE_QUANTILE`` of the labelled training pixels stay below (the behaviour it showed
  where it was taught).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from glacierscale.config import InferConfig
from glacierscale.models import ModelCard
from glacierscale.models.floor import FloorParams, floored
from glacierscale.models.ood import fit_mixture, log_features, sample_pixels
from glacierscale.train.augment import Augment
from glacierscale.train.chips import Chip, normalise
from glacierscale.train.labels import UNKNOWN
from glacierscale.train.mosaic import Mosaic

log = logging.getLogger(__name__)

#: Pixels drawn for the mixture, and its number of components.
MIXTURE_PIXELS = 20_000
COMPONENTS = 6
#: Augmented copies of every training core the mixture sees beside the core itself.
AUGMENTED_DRAWS = 4
#: Quantile of the labelled training pixels' removal rate that becomes the floor's ``rate``.
#: Labelled pixels only: beyond the labels (unoutlined ice of other glaciers) the network was told
#: nothing, and what it did there is no behaviour it was trained to.
RATE_QUANTILE = 0.95


def training_pixels(chips: Sequence[Chip], bands: Sequence[str], augment: Augment | None,
                    seed: int) -> list[np.ndarray]:
    """The chips' core pixels as the network saw them in training: each core once as it is and
    ``AUGMENTED_DRAWS`` times through the photometric augmentation (without missing bands and
    no-data strips, which the floor handles on its own)."""
    cores = [(c.image[(slice(None), *c.tile.core_slice)], c.labels[c.tile.core_slice])
             for c in chips]
    out = [img for img, _ in cores]
    if augment is not None and augment.enabled:
        aug = replace(augment, drop=0.0, nodata=0.0)
        rng = np.random.default_rng(seed)
        for _ in range(AUGMENTED_DRAWS):
            out += [aug.apply(img, lab, bands, rng)[0] for img, lab in cores]
    return out


def fit_floor(net: nn.Module, card: ModelCard, chips: Sequence[Chip], net_temperature: float,
              *, seed: int = 0, augment: Augment | None = None) -> FloorParams:
    """The floor of ``net`` (a bare network or ensemble of ``card``) from its training ``chips``
    and the ``augment`` it was trained with.

    Only the chips' core pixels count (the halo may belong to another fold). Bands the training
    dropped (``augment.drop_bands``) become ``imputable``.
    """
    imputable = (tuple(b for b in augment.drop_bands if b in card.bands)
                 if augment is not None and augment.enabled and augment.drop > 0 else ())
    x = sample_pixels(training_pixels(chips, card.bands, augment, seed), MIXTURE_PIXELS, seed)
    mixture = fit_mixture(log_features(x), components=COMPONENTS, seed=seed,
                          marginals=[card.bands.index(b) for b in imputable])
    params = FloorParams(net_temperature=net_temperature, mixture=mixture, rate=1.0,
                         imputable=imputable)
    model = floored(net, card, params)
    rates = []
    with torch.no_grad():
        for c in chips:
            xt = torch.from_numpy(normalise(c.image, card))[None]
            g = model.gates(xt)
            r = g["rate"][0, 0].numpy()[c.tile.core_slice]
            rates.append(r[c.labels[c.tile.core_slice] != UNKNOWN])
    allr = np.concatenate(rates) if rates else np.zeros(1)
    return replace(params, rate=float(np.quantile(allr, RATE_QUANTILE)))


@dataclass
class CVFloors:
    """The floors of a cross-validation: per fold (from that fold's training chips), the shipped
    ensemble's (from all chips), and the held-out floored probabilities before scaling."""

    folds: list[FloorParams]
    shipped: FloorParams
    raw: list[NDArray[np.float32]]

    def card_floor(self) -> dict[str, Any]:
        """The card's ``floor``: the shipped statistics plus every fold's, in fold order."""
        return {**self.shipped.to_dict(), "folds": [f.to_dict() for f in self.folds]}


def fit_cv_floors(chips: Sequence[Chip], folds: Mapping[str, int], k: int,
                  nets: Sequence[nn.Module], card: ModelCard, t_all: float,
                  t_fold: Sequence[float], mosaics: Sequence[Mosaic], cfg: InferConfig, *,
                  seed: int = 0, augment: Augment | None = None) -> CVFloors:
    """Fit every fold's floor on its training chips (with the temperature fitted on the other
    folds, ``t_fold``) and predict its held-out fold through the engine; fit the shipped floor
    of the ensemble on all chips with ``t_all``."""
    from glacierscale.models import Ensemble
    from glacierscale.train.evaluate import predict_mosaics

    per_fold: list[FloorParams] = []
    raw = [m.empty() for m in mosaics]
    for f in range(k):
        train = [c for c in chips if folds[c.tile_id] != f]
        held = [c for c in chips if folds[c.tile_id] == f]
        params = fit_floor(nets[f], card, train, t_fold[f], seed=seed, augment=augment)
        per_fold.append(params)
        log.info("fold %d floor: removal rate %.3f, mixture NLL reference %.2f", f, params.rate,
                 params.mixture.nll_ref)
        predict_mosaics(floored(nets[f], card, params), held, card.bands, mosaics, cfg, out=raw)
    shipped = fit_floor(Ensemble(list(nets), card), card, chips, t_all, seed=seed,
                        augment=augment)
    return CVFloors(per_fold, shipped, raw)

"""Held-out evaluation through the product's own inference engine.

Every held-out tile is predicted with :func:`glacierscale.infer.predict_tiles` (windows, blending,
precision and temperature exactly as ``glacierscale run`` applies them) by the fold model that never
trained on it; the band-ratio and NDSI baselines run through the same engine, the tuned threshold
and "everything is ice" are computed on the same pixels, and all are scored per fold and pooled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glacierscale.config import InferConfig
from glacierscale.core.metrics import Reliability
from glacierscale.models import GlacierModel, fit_temperature, load_model
from glacierscale.train.chips import Chip
from glacierscale.train.labels import eval_reference
from glacierscale.train.mosaic import Mosaic
from glacierscale.train.scoring import POOLED, Tally, fold_spread, score, tuned_threshold

log = logging.getLogger(__name__)

_P_EPS = 1e-6
#: Fixed-threshold baselines of the registry and the bands they read.
BASELINES = {"band-ratio": ("red", "swir16"), "ndsi": ("green", "swir16")}


def predict_mosaics(model: GlacierModel, chips: Sequence[Chip], bands: Sequence[str],
                    mosaics: Sequence[Mosaic], cfg: InferConfig,
                    out: list[NDArray[np.float32]] | None = None) -> list[NDArray[np.float32]]:
    """Run ``model`` on the chips with the inference engine; paste tile cores into mosaics."""
    import torch

    from glacierscale.infer import predict_tiles, resolve_runtime

    # Keep the caller's thread count (the engine would otherwise take every core, which changes
    # results bit-wise between machines and fights with training for the CPU).
    rt = resolve_runtime(cfg, threads=torch.get_num_threads())
    pick = model.card.band_indices(bands)
    out = out if out is not None else [m.empty() for m in mosaics]
    where = {m.epsg: (m, o) for m, o in zip(mosaics, out, strict=True)}
    stream = ((c, c.image[pick]) for c in chips)
    for chip, pred in predict_tiles(model, stream, cfg, runtime=rt):
        m, o = where[chip.tile.epsg]
        m.paste(o, chip.tile, pred.prob[chip.tile.core_slice])
    return out


def to_logit(prob: NDArray) -> NDArray[np.float64]:
    p = np.clip(np.asarray(prob, dtype=np.float64), _P_EPS, 1.0 - _P_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: NDArray) -> NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def calibrate(probs: Sequence[NDArray], mosaics: Sequence[Mosaic], k: int,
              ) -> tuple[list[NDArray[np.float32]], float, list[float]]:
    """Temperature scaling fitted on held-out predictions.

    Returns the probabilities with a *cross-fitted* temperature (fold f scaled by the temperature
    fitted on the other folds, so the reported calibration is not fitted on the pixels it is
    judged on), the temperature fitted on all folds (the one the model card keeps), and the
    per-fold temperatures.
    """
    logits = [to_logit(p) for p in probs]
    refs = [eval_reference(m.labels) for m in mosaics]

    def fit(sel_fold: Any) -> float:
        z = np.concatenate([lg[sel_fold(m) & known & np.isfinite(lg)]
                            for lg, m, (_, known) in zip(logits, mosaics, refs, strict=True)])
        y = np.concatenate([r[sel_fold(m) & known & np.isfinite(lg)]
                            for lg, m, (r, known) in zip(logits, mosaics, refs, strict=True)])
        return fit_temperature(z, y.astype(np.float64)) if z.size else 1.0

    t_all = fit(lambda m: m.fold >= 0)
    per_fold = [fit(lambda m, f=f: (m.fold >= 0) & (m.fold != f)) for f in range(k)]
    out = []
    for lg, m in zip(logits, mosaics, strict=True):
        scaled = np.full(lg.shape, np.nan, dtype=np.float32)
        for f in range(k):
            sel = m.fold == f
            scaled[sel] = _sigmoid(lg[sel] / per_fold[f])
        out.append(scaled)
    return out, t_all, per_fold


@dataclass
class Evaluation:
    """Held-out scores of every method: per fold, pooled, and their spread across folds."""

    k: int
    tallies: dict[str, dict[str, Tally]] = field(default_factory=dict)
    threshold_choices: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> dict[str, dict[str, float]]:
        return {name: t[POOLED].row() for name, t in self.tallies.items()}

    def per_fold(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: {f: t.row() for f, t in ts.items() if f != POOLED}
                for name, ts in self.tallies.items()}

    def spreads(self) -> dict[str, dict[str, float]]:
        return {name: fold_spread(t) for name, t in self.tallies.items()}

    def reliability(self, name: str) -> Reliability | None:
        t = self.tallies.get(name)
        return t[POOLED].reliability() if t else None

    def to_dict(self) -> dict[str, Any]:
        return {"pooled": self.rows(), "per_fold": self.per_fold(), "iou_across_folds":
                self.spreads(), "tuned_threshold": self.threshold_choices, "notes": self.notes,
                "reliability": {n: (r.to_dict() if (r := self.reliability(n)) else None)
                                for n in self.tallies}}


def evaluate_heldout(chips: Sequence[Chip], bands: Sequence[str], mosaics: Sequence[Mosaic],
                     k: int, models: Mapping[str, Sequence[NDArray]], cfg: InferConfig, *,
                     calibrated: Sequence[str] = ()) -> Evaluation:
    """Score held-out predictions ``models`` (name -> probability mosaics) beside the baselines.

    ``calibrated`` names the entries whose probabilities are meant as probabilities (their ECE
    and reliability are reported). The tuned threshold defines the "hard" pixels: reference
    glacier where the best threshold fails (debris cover, shadow); every method's recall there
    is the ``hard_recall`` column.
    """
    ev = Evaluation(k)
    tuned, ev.threshold_choices = tuned_threshold(mosaics, bands, k)
    hard = []
    for m, t in zip(mosaics, tuned, strict=True):
        ref, known = eval_reference(m.labels)
        hard.append(ref & known & (t < 0.5))
    for name, probs in models.items():
        ev.tallies[name] = score(mosaics, probs, k, calibrated=name in calibrated, hard=hard)
    for name, needs in BASELINES.items():
        if not set(needs) <= set(bands):
            ev.notes.append(f"{name} baseline not computed: it needs bands {list(needs)}, "
                            f"the inputs have {list(bands)}")
            continue
        probs = predict_mosaics(load_model(name), chips, bands, mosaics, cfg)
        ev.tallies[f"{name} (fixed threshold)"] = score(mosaics, probs, k, hard=hard)
    choice = ", ".join(f"fold {c['fold']}: {c['index']} >= {c['threshold']:.3g}"
                       for c in ev.threshold_choices if c["index"])
    ev.tallies["best threshold (tuned on training folds)"] = score(mosaics, tuned, k, hard=hard)
    ev.notes.append(f"best threshold per fold, chosen among {_index_names(bands)} on the "
                    f"training folds: {choice}")
    ice = [np.where(np.isfinite(m.image).all(axis=0), 1.0, np.nan).astype(np.float32)
           for m in mosaics]
    ev.tallies["everything is ice"] = score(mosaics, ice, k, hard=hard)
    return ev


def _index_names(bands: Sequence[str]) -> list[str]:
    from glacierscale.train.scoring import indices

    return list(indices(np.zeros((len(bands), 1, 1), np.float32), bands))


def glacier_fraction(mosaics: Sequence[Mosaic]) -> float:
    """Share of labelled pixels that are glacier (what "everything is ice" gets as precision)."""
    g = n = 0
    for m in mosaics:
        ref, known = eval_reference(m.labels)
        known &= m.fold >= 0
        g += int(np.count_nonzero(ref & known))
        n += int(np.count_nonzero(known))
    return g / n if n else math.nan

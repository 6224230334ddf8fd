"""Scoring predictions on held-out areas: per fold, pooled, and the threshold baselines.

Every method (the U-Net folds, the band-ratio and NDSI baselines, a threshold tuned on the
training folds, "everything is ice") is scored on exactly the same pixels: those with a reference
label and valid input in every band. Counts are pooled over pixels (not averaged over tiles), and
outline distances are measured on the scene mosaic, so tile borders never invent outlines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from glacierscale.core.metrics import (
    Confusion,
    Reliability,
    boundary,
    confusion,
    distance_at,
    merge_reliability,
    reliability,
    ring_outside,
    scores,
)
from glacierscale.train.labels import eval_reference
from glacierscale.train.mosaic import Mosaic

#: Ring outside the reference in which false positives are counted: (inner, outer) in metres.
RING_M = (30.0, 300.0)
POOLED = "pooled"


@dataclass
class Tally:
    """Running sums of one method on one set of pixels (a fold, or all folds pooled)."""

    conf: Confusion = field(default_factory=lambda: Confusion(0, 0, 0, 0))
    ring_fp: int = 0
    ring_n: int = 0
    dist_sum: float = 0.0
    dist_n: int = 0
    hard_tp: int = 0
    hard_n: int = 0
    rel: list[Reliability] = field(default_factory=list)

    def add(self, pred: NDArray[np.bool_], ref: NDArray[np.bool_], valid: NDArray[np.bool_],
            ring: NDArray[np.bool_], resolution: float, prob: NDArray | None = None,
            hard: NDArray[np.bool_] | None = None) -> None:
        """Add one area's pixels (``valid`` selects them)."""
        if not valid.any():
            return
        self.conf = self.conf + confusion(pred, ref, valid)
        r = ring & valid
        self.ring_fp += int(np.count_nonzero(pred & r))
        self.ring_n += int(np.count_nonzero(r))
        bp, br = boundary(pred, valid), boundary(ref, valid)
        if bp.any() and br.any():
            d = np.concatenate([distance_at(br, *np.nonzero(bp)), distance_at(bp, *np.nonzero(br))])
            self.dist_sum += float(d.sum() * resolution)
            self.dist_n += int(d.size)
        if hard is not None:
            h = hard & valid
            self.hard_tp += int(np.count_nonzero(pred & h))
            self.hard_n += int(np.count_nonzero(h))
        if prob is not None:
            self.rel.append(reliability(prob, ref, valid))

    def row(self) -> dict[str, float]:
        """The table row: IoU, F1, precision, recall, ring FP fraction, boundary distance, ECE."""
        out = scores(self.conf)
        out["ring_fp_fraction"] = self.ring_fp / self.ring_n if self.ring_n else math.nan
        out["boundary_distance_m"] = self.dist_sum / self.dist_n if self.dist_n else math.nan
        out["hard_recall"] = self.hard_tp / self.hard_n if self.hard_n else math.nan
        out["ece"] = merge_reliability(self.rel).ece if self.rel else math.nan
        out["n_pixels"] = float(self.conf.n)
        return out

    def reliability(self) -> Reliability | None:
        return merge_reliability(self.rel) if self.rel else None


def score(mosaics: Sequence[Mosaic], probs: Sequence[NDArray], k: int, *,
          calibrated: bool = False, hard: Sequence[NDArray[np.bool_]] | None = None,
          threshold: float = 0.5) -> dict[str, Tally]:
    """Tallies per fold (``"0"`` ... ``"k-1"``) and pooled over all folds for one method.

    ``probs``: one probability mosaic per mosaic (NaN = no prediction); ``calibrated`` adds the
    reliability bins (for models whose probabilities mean something); ``hard``: reference pixels
    where the best threshold fails, whose recall is reported as ``hard_recall``.
    """
    tallies = {str(f): Tally() for f in range(k)} | {POOLED: Tally()}
    for i, (m, prob) in enumerate(zip(mosaics, probs, strict=True)):
        ref, known = eval_reference(m.labels)
        finite = np.isfinite(prob) & np.isfinite(m.image).all(axis=0)
        with np.errstate(invalid="ignore"):
            pred = prob >= threshold
        ring_px = (RING_M[0] / m.resolution, RING_M[1] / m.resolution)
        ring = ring_outside(ref, *ring_px)
        h = hard[i] if hard is not None else None
        p = prob if calibrated else None
        for f in range(k):
            valid = known & finite & (m.fold == f)
            tallies[str(f)].add(pred, ref, valid, ring, m.resolution, p, h)
        tallies[POOLED].add(pred, ref, known & finite & (m.fold >= 0), ring, m.resolution, p, h)
    return tallies


def fold_spread(tallies: Mapping[str, Tally], metric: str = "iou") -> dict[str, float]:
    """Mean and standard deviation of a metric across folds, and its pooled value."""
    vals = np.array([t.row()[metric] for f, t in tallies.items() if f != POOLED], dtype=float)
    vals = vals[np.isfinite(vals)]
    return {"mean": float(vals.mean()) if vals.size else math.nan,
            "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
            "min": float(vals.min()) if vals.size else math.nan,
            "max": float(vals.max()) if vals.size else math.nan,
            POOLED: tallies[POOLED].row()[metric]}


# -- threshold baselines -------------------------------------------------------------------------

def indices(image: NDArray[np.float32], bands: Sequence[str]) -> dict[str, NDArray[np.float32]]:
    """Single-index ice classifiers computable from the bands at hand (ice is high in each)."""
    b = {name: image[i].astype(np.float32) for i, name in enumerate(bands)}
    eps = np.float32(1e-4)
    out: dict[str, NDArray[np.float32]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "red" in b and "swir16" in b:
            out["red/swir16"] = np.log(np.maximum(b["red"], eps) / np.maximum(b["swir16"], eps))
        if "green" in b and "swir16" in b:
            g, s = np.maximum(b["green"], 0), np.maximum(b["swir16"], 0)
            out["ndsi"] = (g - s) / np.maximum(g + s, eps)
        vis = [b[n] for n in ("blue", "green", "red") if n in b]
        if vis:
            out["visible brightness"] = np.mean(vis, axis=0)
        if "blue" in b and "nir" in b:
            out["(blue-nir)/(blue+nir)"] = (b["blue"] - b["nir"]) / np.maximum(
                b["blue"] + b["nir"], eps)
        for name in ("blue", "green", "red", "nir"):
            if name in b:
                out[name] = b[name]
    return out


def best_threshold(values: NDArray, ref: NDArray[np.bool_], *,
                   candidates: int = 256) -> tuple[float, float]:
    """(threshold, IoU) maximising the IoU of ``values >= threshold`` against ``ref``."""
    ok = np.isfinite(values)
    v, r = values[ok].astype(np.float64), ref[ok]
    if v.size == 0 or not r.any():
        return math.nan, math.nan
    pos, neg = np.sort(v[r]), np.sort(v[~r])
    ts = np.unique(np.quantile(v, np.linspace(0.0, 1.0, candidates)))
    tp = pos.size - np.searchsorted(pos, ts, side="left")
    fp = neg.size - np.searchsorted(neg, ts, side="left")
    fn = pos.size - tp
    iou = tp / np.maximum(tp + fp + fn, 1)
    j = int(np.argmax(iou))
    return float(ts[j]), float(iou[j])


def tuned_threshold(mosaics: Sequence[Mosaic], bands: Sequence[str], k: int,
                    ) -> tuple[list[NDArray[np.float32]], list[dict[str, float | str]]]:
    """The best single-index threshold, chosen and tuned on the training folds of each fold.

    For fold f, every index of :func:`indices` is thresholded for the best IoU on the labelled
    pixels of the other folds; the best index with its threshold then maps fold f. Returns the
    0/1 prediction mosaics and, per fold, the chosen index, threshold and training IoU.
    """
    idx = [indices(m.image, bands) for m in mosaics]
    refs = [eval_reference(m.labels) for m in mosaics]
    preds = [m.empty() for m in mosaics]
    choices: list[dict[str, float | str]] = []
    for f in range(k):
        best: tuple[float, str, float] = (-1.0, "", math.nan)
        for name in idx[0]:
            vals = np.concatenate([ix[name][(m.fold >= 0) & (m.fold != f) & known].ravel()
                                   for ix, m, (_, known) in zip(idx, mosaics, refs, strict=True)])
            ref = np.concatenate([r[(m.fold >= 0) & (m.fold != f) & known].ravel()
                                  for m, (r, known) in zip(mosaics, refs, strict=True)])
            t, iou = best_threshold(vals, ref)
            if math.isfinite(iou) and iou > best[0]:
                best = (iou, name, t)
        iou, name, t = best
        choices.append({"fold": f, "index": name, "threshold": t, "train_iou": iou})
        for ix, m, p in zip(idx, mosaics, preds, strict=True):
            sel = m.fold == f
            if name:
                with np.errstate(invalid="ignore"):
                    p[sel] = (ix[name][sel] >= t).astype(np.float32)
    return preds, choices

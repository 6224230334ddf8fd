"""Pixel metrics of a glacier mask against a reference, as the glacier-mapping field reports them.

Everything is pure numpy on boolean/float rasters of one grid, with an explicit ``valid`` mask:
pixels outside it (no data, clouds, unlabelled areas) count nowhere. Provided:

- confusion counts and IoU, F1, precision, recall (:func:`confusion`, :func:`scores`);
- recall inside the reference outlines and the false-positive fraction in a ring just outside them
  (:func:`ring_outside`), which stay meaningful where a reference is incomplete;
- mean symmetric boundary distance between the two masks' outlines (:func:`boundary_distance`);
- expected calibration error and reliability-diagram bins of probabilities (:func:`reliability`).

Distances are exact Euclidean pixel distances (a separable distance transform, no SciPy needed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

BoolArray = NDArray[np.bool_]

#: Query points per chunk in the boundary distance; bounds memory at ~chunk x width x 8 bytes.
_CHUNK = 1024


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of a binary prediction against a reference over the valid pixels."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                         self.tn + other.tn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _valid(shape: tuple[int, ...], valid: BoolArray | None) -> BoolArray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    if valid.shape != shape:
        raise ValueError(f"valid mask shape {valid.shape} differs from the raster shape {shape}")
    return valid.astype(bool, copy=False)


def confusion(pred: BoolArray, ref: BoolArray, valid: BoolArray | None = None) -> Confusion:
    """Counts of true/false positives/negatives of ``pred`` against ``ref`` where ``valid``."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    v = _valid(pred.shape, valid)
    p, r = pred & v, ref & v
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~pred & r))
    tn = int(np.count_nonzero(v)) - tp - fp - fn
    return Confusion(tp, fp, fn, tn)


def _ratio(num: int, den: int) -> float:
    # NaN (not 0 or 1) when undefined: an empty denominator is "no evidence", never a score.
    return num / den if den else math.nan


def scores(c: Confusion) -> dict[str, float]:
    """IoU, F1, precision, recall, accuracy and the reference and predicted positive fractions."""
    return {
        "iou": _ratio(c.tp, c.tp + c.fp + c.fn),
        "f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "precision": _ratio(c.tp, c.tp + c.fp),
        "recall": _ratio(c.tp, c.tp + c.fn),
        "accuracy": _ratio(c.tp + c.tn, c.n),
        "ref_fraction": _ratio(c.tp + c.fn, c.n),
        "pred_fraction": _ratio(c.tp + c.fp, c.n),
    }


# -- distances --------------------------------------------------------------------------------

def _column_distance(mask: BoolArray) -> NDArray[np.float64]:
    """Distance along each column to the nearest ``True`` pixel of that column (inf if none).

    Two scans over the rows, each vectorised across all columns: phase one of the separable
    exact Euclidean distance transform (Meijster et al. 2000).
    """
    h, w = mask.shape
    big = float(h + w) * 4.0
    g = np.empty((h, w), dtype=np.float64)
    run = np.full(w, big)
    for i in range(h):
        run = np.where(mask[i], 0.0, run + 1.0)
        g[i] = run
    run = np.full(w, big)
    for i in range(h - 1, -1, -1):
        run = np.where(mask[i], 0.0, run + 1.0)
        g[i] = np.minimum(g[i], run)
    g[g >= big] = np.inf
    return g


def distance_at(mask: BoolArray, rows: NDArray[np.integer], cols: NDArray[np.integer]) -> NDArray:
    """Exact Euclidean distance (pixels) from points ``(rows, cols)`` to the nearest ``mask`` pixel.

    ``inf`` when ``mask`` is empty. Cost ~ pixels + points x width, so it suits boundary points.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.full(rows.shape, np.inf)
    if not mask.any() or rows.size == 0:
        return out
    g2 = _column_distance(mask) ** 2
    ks = np.arange(mask.shape[1], dtype=np.float64)
    for s in range(0, rows.size, _CHUNK):
        r, c = rows[s:s + _CHUNK], cols[s:s + _CHUNK]
        d2 = g2[r] + (c[:, None] - ks[None, :]) ** 2
        out[s:s + _CHUNK] = np.sqrt(d2.min(axis=1))
    return out


def within_distance(mask: BoolArray, radius_px: float) -> BoolArray:
    """Pixels whose Euclidean distance to ``mask`` is at most ``radius_px`` (a disk dilation)."""
    mask = np.asarray(mask, dtype=bool)
    if radius_px < 0:
        raise ValueError(f"radius_px must be >= 0, got {radius_px}")
    g2 = _column_distance(mask) ** 2
    r = math.floor(radius_px)
    out = g2 <= radius_px**2
    w = mask.shape[1]
    for dk in range(1, min(r, w - 1) + 1):
        extra = radius_px**2 - dk * dk
        out[:, dk:] |= g2[:, :-dk] <= extra
        out[:, :-dk] |= g2[:, dk:] <= extra
    return out


def ring_outside(ref: BoolArray, inner_px: float, outer_px: float) -> BoolArray:
    """Pixels outside ``ref`` farther than ``inner_px`` and at most ``outer_px`` from it."""
    if not 0 <= inner_px < outer_px:
        raise ValueError(f"need 0 <= inner_px < outer_px, got {inner_px}, {outer_px}")
    ref = np.asarray(ref, dtype=bool)
    near = within_distance(ref, inner_px) if inner_px > 0 else ref
    return within_distance(ref, outer_px) & ~near


def boundary(mask: BoolArray, valid: BoolArray | None = None) -> BoolArray:
    """Pixels of ``mask`` with a 4-neighbour that is valid and not in ``mask``.

    Edges of the raster or of the valid area are not outlines, so they are not boundary.
    """
    m = np.asarray(mask, dtype=bool)
    v = _valid(m.shape, valid)
    m = m & v
    outside = v & ~m
    nb = np.zeros_like(m)
    nb[1:, :] |= outside[:-1, :]
    nb[:-1, :] |= outside[1:, :]
    nb[:, 1:] |= outside[:, :-1]
    nb[:, :-1] |= outside[:, 1:]
    return m & nb


def boundary_distance(pred: BoolArray, ref: BoolArray, valid: BoolArray | None = None,
                      pixel_size: float = 1.0) -> float:
    """Mean symmetric distance between the outlines of ``pred`` and ``ref`` (``pixel_size`` units).

    The average, over the boundary pixels of both masks, of the distance to the other mask's nearest
    boundary pixel (average symmetric surface distance). NaN when either mask has no boundary.
    """
    bp, br = boundary(pred, valid), boundary(ref, valid)
    if not bp.any() or not br.any():
        return math.nan
    d1 = distance_at(br, *np.nonzero(bp))
    d2 = distance_at(bp, *np.nonzero(br))
    return float(np.concatenate([d1, d2]).mean() * pixel_size)


# -- calibration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram bins: per bin count, mean predicted probability, observed frequency."""

    edges: tuple[float, ...]
    count: tuple[int, ...]
    confidence: tuple[float, ...]
    frequency: tuple[float, ...]
    ece: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def reliability(prob: NDArray, ref: BoolArray, valid: BoolArray | None = None,
                bins: int = 10) -> Reliability:
    """Equal-width probability bins and the expected calibration error (Guo et al. 2017).

    ECE = sum over bins of (bin share) x |observed glacier frequency - mean probability|; empty bins
    have NaN confidence/frequency and do not count.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    prob = np.asarray(prob, dtype=np.float64)
    ref = np.asarray(ref, dtype=bool)
    if prob.shape != ref.shape:
        raise ValueError(f"probabilities {prob.shape} and reference {ref.shape} differ in shape")
    v = _valid(prob.shape, valid) & np.isfinite(prob)
    p, y = np.clip(prob[v], 0.0, 1.0), ref[v]
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    psum = np.bincount(idx, weights=p, minlength=bins)
    ysum = np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = psum / count
        freq = ysum / count
    n = int(count.sum())
    ece = float(np.nansum(count * np.abs(freq - conf)) / n) if n else math.nan
    return Reliability(tuple(float(e) for e in np.linspace(0.0, 1.0, bins + 1)),
                       tuple(int(c) for c in count), tuple(float(c) for c in conf),
                       tuple(float(f) for f in freq), ece)


def merge_reliability(parts: list[Reliability]) -> Reliability:
    """Pool reliability bins of several areas (same bin edges) into one diagram and ECE."""
    if not parts:
        raise ValueError("nothing to merge")
    edges = parts[0].edges
    if any(p.edges != edges for p in parts):
        raise ValueError("reliability bins differ in edges; use the same number of bins")
    count = np.sum([p.count for p in parts], axis=0).astype(np.float64)
    psum = np.sum([np.nan_to_num(np.multiply(p.count, p.confidence)) for p in parts], axis=0)
    ysum = np.sum([np.nan_to_num(np.multiply(p.count, p.frequency)) for p in parts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, freq = psum / count, ysum / count
    n = count.sum()
    ece = float(np.nansum(count * np.abs(freq - conf)) / n) if n else math.nan
    return Reliability(edges, tuple(int(c) for c in count), tuple(float(c) for c in conf),
                       tuple(float(f) for f in freq), ece)


# -- the table row ----------------------------------------------------------------------------

def mask_metrics(pred: BoolArray, ref: BoolArray, valid: BoolArray | None = None, *,
                 pixel_size: float = 1.0, ring_px: tuple[float, float] = (1.0, 10.0),
                 prob: NDArray | None = None, bins: int = 10) -> dict[str, float]:
    """One row of an evaluation table: scores, ring false-positive fraction, boundary distance, ECE.

    ``ring_px`` = (inner, outer) radii of the ring outside the reference in which the
    false-positive fraction is measured; ``prob`` (optional) adds the ECE of the probabilities.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    v = _valid(pred.shape, valid)
    row = scores(confusion(pred, ref, v))
    ring = ring_outside(ref, *ring_px) & v
    row["ring_fp_fraction"] = _ratio(int(np.count_nonzero(pred & ring)),
                                     int(np.count_nonzero(ring)))
    row["boundary_distance"] = boundary_distance(pred, ref, v, pixel_size)
    row["n_pixels"] = float(np.count_nonzero(v))
    if prob is not None:
        row["ece"] = reliability(prob, ref, v, bins).ece
    return row

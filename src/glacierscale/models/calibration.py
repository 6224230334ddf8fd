"""Temperature scaling: one scalar that makes a model's probabilities honest.

``p = sigmoid(logit / T)``. T is fitted on held-out pixels by minimising the negative log-likelihood
(Guo et al. 2017), stored in a small calibration file (JSON/YAML ``{"temperature": T, ...}``), and
applied by the engine from the card, so calibration never changes which weights run.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import yaml

from glacierscale.models import weights as W
from glacierscale.models.base import GlacierModel, replace_card


def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    # log(1 + exp(-|z|)) + max(z, 0) - y z  is the numerically stable binary cross-entropy.
    loss = np.logaddexp(0.0, z) - labels * z
    return float(loss.mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05,
                    20.0), tol: float = 1e-4) -> float:
    """Temperature minimising the NLL of ``labels`` (0/1) under ``sigmoid(logits / T)``.

    Golden-section search on log T (the NLL is unimodal in T); non-finite pairs are ignored.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"logits ({z.shape}) and labels ({y.shape}) must have the same size")
    ok = np.isfinite(z) & np.isfinite(y)
    z, y = z[ok], y[ok]
    if z.size == 0:
        raise ValueError("no finite logit/label pairs to calibrate on")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _nll(z, y, math.exp(c)), _nll(z, y, math.exp(d))
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _nll(z, y, math.exp(d))
    return float(math.exp((a + b) / 2.0))


def write_calibration(url: str, temperature: float, **meta: Any) -> None:
    """Write a calibration file ``{"temperature": T, ...meta}`` atomically (any fsspec URL)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    doc = {"temperature": float(temperature), **meta}
    W._write_atomic(url, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def read_calibration(url: str) -> float:
    """The temperature of a calibration file (JSON or YAML with a ``temperature`` key)."""
    doc = yaml.safe_load(W.read_bytes(url).decode("utf-8"))
    if not isinstance(doc, dict) or "temperature" not in doc:
        raise ValueError(f"{url}: a calibration file is a mapping with a 'temperature' key")
    t = float(doc["temperature"])
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"{url}: temperature must be > 0, got {t}")
    return t


def with_temperature(model: GlacierModel, temperature: float | str) -> GlacierModel:
    """``model`` (same weights) whose card carries ``temperature`` (a number or a calibration file
    URL); the engine divides logits by it before the sigmoid."""
    t = read_calibration(temperature) if isinstance(temperature, str) else float(temperature)
    return replace_card(model, temperature=t)

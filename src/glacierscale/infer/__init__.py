"""Inference: arrays in, blended probabilities out (windows, batching, device, blending, ensembles).

Knows nothing of STAC or storage: callers hand over (C, H, W) arrays in the model card's band order
and receive :class:`Prediction` objects. :func:`predict_tiles` is the production path; a run
chooses its :class:`RuntimeChoice` once with :func:`select_runtime` and Dask workers hold the
prepared model (:mod:`glacierscale.infer.worker`).
"""

from __future__ import annotations

from glacierscale.infer.engine import Prediction, predict_tile, predict_tiles
from glacierscale.infer.probe import select_runtime
from glacierscale.infer.runtime import (
    Capabilities,
    Runtime,
    RuntimeChoice,
    choose_runtime,
    probe_capabilities,
    resolve_runtime,
)
from glacierscale.infer.uncertainty import TTA, MCDropout, with_uncertainty

__all__ = [
    "TTA",
    "Capabilities",
    "MCDropout",
    "Prediction",
    "Runtime",
    "RuntimeChoice",
    "choose_runtime",
    "predict_tile",
    "predict_tiles",
    "probe_capabilities",
    "resolve_runtime",
    "select_runtime",
    "with_uncertainty",
]

"""Training and evaluation: U-Nets trained on reference outlines by the same tiling machinery as
inference, judged by spatial cross-validation beside the band-ratio and NDSI baselines.

- :func:`train_cv` / :class:`TrainRequest` - chips, folds, K fold models, calibration, outputs;
- :func:`evaluate_model` - a trained model's folds on another scene (date, sensor) of its area;
- :func:`build_chips`, :class:`ChipSource`, :class:`LabelRules` - chips exactly as inference loads;
- :func:`spatial_folds` - folds of whole tiles, never random pixels;
- :func:`train_network`, :class:`TrainConfig` - one seeded, deterministic training run;
- :func:`everest_sample` - the Everest Landsat 7 sample as a local STAC catalog.
"""

from __future__ import annotations

from glacierscale.train.augment import Augment
from glacierscale.train.chips import Chip, ChipSource, band_statistics, build_chips, normalise
from glacierscale.train.cv import CVResult, TrainRequest, read_reference, train_cv
from glacierscale.train.everest import everest_sample
from glacierscale.train.folds import spatial_folds
from glacierscale.train.labels import UNKNOWN, LabelRules, make_labels, rasterize_outlines
from glacierscale.train.loop import TrainConfig, train_network
from glacierscale.train.reevaluate import evaluate_model

__all__ = [
    "UNKNOWN",
    "Augment",
    "CVResult",
    "Chip",
    "ChipSource",
    "LabelRules",
    "TrainConfig",
    "TrainRequest",
    "band_statistics",
    "build_chips",
    "evaluate_model",
    "everest_sample",
    "make_labels",
    "normalise",
    "rasterize_outlines",
    "read_reference",
    "spatial_folds",
    "train_cv",
    "train_network",
]

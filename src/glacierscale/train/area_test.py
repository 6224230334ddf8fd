"""An independent test on a box kept out of a model's training labels.

A model trained with an excluded box (``LabelRules.exclude``, ``--exclude-box``) never had a label
inside it, so the box is a test area in the strict sense: the shipped ensemble maps it, and the
best single-index threshold is chosen and tuned on the labelled training area only (the labels
the model had), then applied to the box. Both are scored on the reference labels of the pixels
whose centres lie inside the box, with the same label rules as training (ring, known distance).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

import numpy as np

from glacierscale.config import GridConfig, InferConfig
from glacierscale.models import load_model
from glacierscale.train.chips import Chip, ChipSource, build_chips
from glacierscale.train.cv import read_reference
from glacierscale.train.evaluate import predict_mosaics
from glacierscale.train.labels import UNKNOWN, LabelRules, eval_reference, excluded_pixels
from glacierscale.train.mosaic import build_mosaics
from glacierscale.train.reevaluate import card_tiles
from glacierscale.train.scoring import POOLED, best_threshold, indices, score

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def _inside(chips: Sequence[Chip], box: Box) -> list[Chip]:
    """The chips with labels kept only at pixel centres inside ``box``."""
    out = []
    for c in chips:
        labels = c.labels.copy()
        labels[~excluded_pixels(c.tile, [box])] = UNKNOWN
        if (labels != UNKNOWN).any():
            out.append(replace(c, labels=labels))
    return out


def tuned_index(chips: Sequence[Chip], bands: Sequence[str]) -> tuple[str, float, float]:
    """(index, threshold, IoU) of the best single-index threshold on the chips' labelled core
    pixels, among :func:`glacierscale.train.scoring.indices`."""
    mosaics = build_mosaics(chips, {c.tile_id: 0 for c in chips})
    best: tuple[str, float, float] = ("", float("nan"), -1.0)
    for m in mosaics:
        ref, known = eval_reference(m.labels)
        ok = known & np.isfinite(m.image).all(axis=0)
        for name, values in indices(m.image, bands).items():
            t, iou = best_threshold(values[ok], ref[ok])
            if np.isfinite(iou) and iou > best[2]:
                best = (name, t, iou)
    return best


def evaluate_box(model: str, catalog: str, box: Box, *, collections: Sequence[str] = (),
                 start: date | None = None, end: date | None = None,
                 outlines: str | None = None) -> dict[str, Any]:
    """Scores of ``model`` (trained with ``box`` excluded from its labels) on the box, beside the
    threshold tuned on its training labels and "everything is ice"."""
    ens = load_model(model)
    card = ens.card
    prov = card.provenance
    rules = LabelRules(**dict(prov.get("label_rules", {})))
    if tuple(box) not in rules.exclude:
        raise ValueError(f"model {card.name!r} was not trained with {box} excluded from its "
                         f"labels (its excluded boxes: {list(rules.exclude)}): no independent "
                         "test there")
    ref = read_reference(outlines or prov["data"]["outlines"])
    source = ChipSource(catalog, tuple(card.bands), start, end, tuple(collections))
    train_tiles, _, _ = card_tiles(card)
    train_chips = build_chips(train_tiles, source, ref, rules)
    index, threshold, train_iou = tuned_index(train_chips, card.bands)

    from glacierscale.plan import plan_tiles

    grid = GridConfig.model_validate({k: prov["grid"][k] for k in ("tile_size_px",
                                                                   "resolution", "halo_px")})
    tiles = list(plan_tiles(",".join(map(str, box)), grid).tiles)
    open_rules = replace(rules, exclude=())
    chips = _inside(build_chips(tiles, source, ref, open_rules), box)
    if not chips:
        raise ValueError(f"no labelled pixels inside {box}")
    mosaics = build_mosaics(chips, {c.tile_id: 0 for c in chips})
    cfg = InferConfig.model_validate({"window_px": int(prov.get("training", {}).get(
        "chip_px", 128)), "overlap": 0.5, "batch_size": 8, "device": "cpu"})
    probs = {"model (never had a label in the box)": predict_mosaics(ens, chips, card.bands,
                                                                     mosaics, cfg)}
    thresholded = []
    for m in mosaics:
        values = indices(m.image, card.bands)[index]
        with np.errstate(invalid="ignore"):
            thresholded.append(np.where(np.isfinite(values), (values >= threshold), np.nan)
                               .astype(np.float32))
    probs[f"best threshold tuned on the training labels ({index} >= {threshold:.3g})"] = \
        thresholded
    probs["everything is ice"] = [np.where(np.isfinite(m.image).all(axis=0), 1.0, np.nan)
                                  .astype(np.float32) for m in mosaics]
    rows = {name: score(mosaics, p, 1)[POOLED].row() for name, p in probs.items()}
    log.info("box %s: %s", box, {n: round(r["iou"], 3) for n, r in rows.items()})
    return {"model": card.tag, "box": list(box), "tiles": len(chips),
            "tuned_on_training_labels": {"index": index, "threshold": threshold,
                                         "train_iou": train_iou},
            "scores": rows}

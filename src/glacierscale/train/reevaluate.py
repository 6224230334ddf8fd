"""A cross-validated model judged on another scene of its area: another date, another sensor.

The card of a model trained by :func:`glacierscale.train.train_cv` records its tile grid, the fold
of every tile and its label rules. Here the same tiles are loaded from another catalog, collection
or date window; each tile is predicted by the fold model that did not train on it (members of the
ensemble are the folds, in order), and also by the whole ensemble, which did see the area in its
other folds' training (reported separately, and named so). Baselines run on the same pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

import numpy as np

from glacierscale.config import InferConfig
from glacierscale.core.tiles import TileSpec
from glacierscale.io import Store
from glacierscale.models import ModelCard, TorchModel, load_model
from glacierscale.models.floor import floored, fold_floors
from glacierscale.train.chips import ChipSource, build_chips
from glacierscale.train.cv import evaluation_markdown, read_reference
from glacierscale.train.evaluate import (
    Evaluation,
    evaluate_heldout,
    glacier_fraction,
    predict_mosaics,
)
from glacierscale.train.labels import LabelRules
from glacierscale.train.mosaic import build_mosaics
from glacierscale.train.outputs import json_bytes, reliability_png

log = logging.getLogger(__name__)

HELD_OUT = "U-Net fold models (held-out folds)"
ENSEMBLE = "U-Net ensemble (all folds; saw this area in training)"
HELD_OUT_FLOOR = "U-Net fold models under the physics floor (held-out folds)"
ENSEMBLE_FLOOR = "shipped model: ensemble under the physics floor (saw this area in training)"


def card_tiles(card: ModelCard) -> tuple[list[TileSpec], dict[str, int], int]:
    prov = card.provenance
    try:
        grid = prov["grid"]
        tile_folds = dict(prov["cross_validation"]["tile_folds"])
        k = int(prov["cross_validation"]["folds"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"model {card.name!r} has no cross-validation record in its card "
                         "(provenance.grid / cross_validation): only models made by "
                         "`glacierscale train` can be evaluated fold by fold") from exc
    tiles = [TileSpec.from_id(tid, int(grid["tile_size_px"]), float(grid["resolution"]),
                              int(grid["halo_px"])) for tid in sorted(tile_folds)]
    return tiles, {t: int(f) for t, f in tile_folds.items()}, k


def evaluate_model(model: str, catalog: str, *, collections: Sequence[str] = (),
                   start: date | None = None, end: date | None = None,
                   dem_collections: Sequence[str] = ("cop-dem-glo-30",),
                   outlines: str | None = None, rules: LabelRules | None = None,
                   out: str | None = None, infer: InferConfig | None = None,
                   ) -> tuple[Evaluation, dict[str, Any]]:
    """Evaluate a cross-validated model (name or card path) on a scene of its training area.

    ``outlines`` and ``rules`` default to those recorded in the card. Raises
    :class:`glacierscale.load.MissingBandError` (naming the band and the fix) when the scenes lack
    a band the model needs, e.g. no DEM in the catalog. Writes ``evaluation.json``,
    ``evaluation.md`` and ``reliability.png`` under ``out`` when given.
    """
    ens = load_model(model)
    card = ens.card
    tiles, folds, k = card_tiles(card)
    prov = card.provenance
    rules = rules or LabelRules(**dict(prov.get("label_rules", {})))
    ref_path = outlines or prov.get("data", {}).get("outlines")
    if not ref_path:
        raise ValueError("no reference outlines: pass outlines=...")
    source = ChipSource(catalog, tuple(card.bands), start, end, tuple(collections),
                        tuple(dem_collections))
    chips = build_chips(tiles, source, read_reference(ref_path), rules)
    chips = [c for c in chips if c.tile_id in folds]
    if not chips:
        raise ValueError(f"no labelled valid pixels in the scenes of {catalog} for the model's "
                         "tiles: check the collections and dates cover its area")
    mosaics = build_mosaics(chips, folds)
    icfg = infer or InferConfig.model_validate(
        {"window_px": int(prov.get("training", {}).get("chip_px", 128)), "overlap": 0.5,
         "batch_size": 8, "device": "cpu"})
    members = list(getattr(ens, "members", [])) or [getattr(ens, "net", ens)]
    if len(members) != k:
        raise ValueError(f"model {card.name!r} has {len(members)} members for {k} folds")
    held = [m.empty() for m in mosaics]
    floors = fold_floors(card)
    held_floor = [m.empty() for m in mosaics]
    for f, net in enumerate(members):
        fold_chips = [c for c in chips if folds[c.tile_id] == f]
        if not fold_chips:
            continue
        if floors:
            # The network alone at its own temperature; under the floor of its training folds.
            alone = replace(card, temperature=floors[f].net_temperature, floor={})
            predict_mosaics(TorchModel(net, alone), fold_chips, card.bands, mosaics, icfg,
                            out=held)
            predict_mosaics(floored(net, card, floors[f], card.temperature), fold_chips,
                            card.bands, mosaics, icfg, out=held_floor)
        else:
            predict_mosaics(TorchModel(net, card), fold_chips, card.bands, mosaics, icfg,
                            out=held)
    full = predict_mosaics(ens, chips, card.bands, mosaics, icfg)
    probs = {HELD_OUT: held, ENSEMBLE: full}
    if floors:
        probs = {HELD_OUT_FLOOR: held_floor, HELD_OUT: held, ENSEMBLE_FLOOR: full}
    ev = evaluate_heldout(chips, card.bands, mosaics, k, probs, icfg, calibrated=list(probs))
    items = sorted({i for c in chips for i in c.item_ids})
    meta = {"model": card.tag, "catalog": catalog, "collections": list(collections),
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None, "items": items,
            "trained_on_items": list(prov.get("data", {}).get("items", [])),
            "glacier_fraction_of_labelled_pixels": glacier_fraction(mosaics),
            "tiles": len(chips)}
    if out:
        store = Store(out)
        store.write_bytes_atomic("evaluation.json", json_bytes({**meta, **ev.to_dict()}))
        store.write_bytes_atomic("evaluation.md", evaluation_markdown(
            f"{card.name} on {', '.join(items) or catalog}", ev, meta, card).encode())
        store.write_bytes_atomic("reliability.png", reliability_png(
            {n: ev.reliability(n) for n in probs}, f"{card.name}: reliability on {items}"))
    log.info("evaluated %s on %d tiles of %s", card.tag, len(chips), items)
    return ev, meta


def summary_line(ev: Evaluation) -> dict[str, float]:
    """Pooled IoU per method, for a one-line print."""
    return {name: round(float(row["iou"]), 4) for name, row in ev.rows().items()
            if np.isfinite(row["iou"])}

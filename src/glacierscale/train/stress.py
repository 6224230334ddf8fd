"""Domain-shift stress tests of a cross-validated model on the held-out folds of its scenes.

Each held-out tile is predicted by the fold model that never trained on it, after a shift is
applied to that tile's pixels only (:mod:`glacierscale.train.shifts`): another sensor (the same
tiles loaded from another collection), per-band gain and offset, haze, illumination, another
pixel size, a missing band. Four methods run on exactly the same shifted pixels:

- ``default``: the fold network under the physics floor fitted on its own training folds;
- ``network``: the same fold network alone (its own temperature);
- ``band-ratio`` and ``ndsi``: the registry baselines.

All go through the inference engine, as in a run. The score is the IoU pooled over the labelled,
valid pixels of the held-out folds; the margin of a shift is the default's IoU minus the better of
the band ratio and the NDSI.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glacierscale.config import InferConfig
from glacierscale.models import GlacierModel, ModelCard, TorchModel, load_model
from glacierscale.models.floor import floored, fold_floors
from glacierscale.train.chips import Chip, ChipSource, build_chips
from glacierscale.train.cv import read_reference
from glacierscale.train.labels import LabelRules
from glacierscale.train.mosaic import Mosaic, build_mosaics
from glacierscale.train.reevaluate import card_tiles
from glacierscale.train.scoring import POOLED, score
from glacierscale.train.shifts import STRESS_SHIFTS, Shift, apply_shift, back_to_grid, resample

log = logging.getLogger(__name__)

METHODS = ("default", "network", "band-ratio", "ndsi")
UNSHIFTED = STRESS_SHIFTS[0]


@dataclass(frozen=True)
class StressRow:
    """One shift at one level: IoU per method on the same held-out pixels."""

    shift: str
    level: str
    scene: str
    iou: Mapping[str, float]
    n_pixels: int

    @property
    def best_baseline(self) -> float:
        return max(self.iou["band-ratio"], self.iou["ndsi"])

    @property
    def margin(self) -> float:
        """The default's IoU minus the better of band ratio and NDSI."""
        return self.iou["default"] - self.best_baseline

    def to_dict(self) -> dict[str, Any]:
        return {"shift": self.shift, "level": self.level, "scene": self.scene,
                "iou": {k: round(v, 4) for k, v in self.iou.items()},
                "margin": round(self.margin, 4), "n_pixels": self.n_pixels}


@dataclass(frozen=True)
class Scene:
    """Where a stress test loads its tiles: a catalog, collections and a date window."""

    name: str
    catalog: str
    collections: tuple[str, ...]
    start: date | None = None
    end: date | None = None


def _predict(model: GlacierModel, image: NDArray[np.float32], shift: Shift,
             cfg: InferConfig) -> NDArray[np.float32]:
    """Probability on the tile grid; a resolution shift predicts at the other pixel size."""
    import torch

    from glacierscale.infer import predict_tile, resolve_runtime

    # The caller's thread count, as in training's held-out evaluation (results do not change
    # with the machine's core count).
    rt = resolve_runtime(cfg, threads=torch.get_num_threads())
    if shift.kind != "resolution":
        return predict_tile(model, image, cfg, runtime=rt).prob
    f = float(shift.params["factor"])
    prob = predict_tile(model, resample(image, f), cfg, runtime=rt).prob
    return back_to_grid(prob, f, image.shape[1:])


def _models(model: Any, fold: int) -> dict[str, GlacierModel]:
    card = model.card
    floors = fold_floors(card)
    if not floors:
        raise ValueError(f"model {card.name!r} has no per-fold floor statistics in its card: "
                         "train it with --floor")
    params = floors[fold]
    net = model.members[fold]
    return {"default": floored(net, card, params, card.temperature),
            "network": TorchModel(net, replace(card, temperature=params.net_temperature,
                                               floor={})),
            "band-ratio": load_model("band-ratio"), "ndsi": load_model("ndsi")}


def stress_scene(model: Any, chips: Sequence[Chip], folds: Mapping[str, int], k: int,
                 shifts: Sequence[Shift], scene: str, cfg: InferConfig, *,
                 seed: int = 0) -> list[StressRow]:
    """Every shift of ``shifts`` on the held-out tiles ``chips`` of one scene."""
    card = model.card
    bands = tuple(card.bands)
    per_fold = {f: _models(model, f) for f in range(k)}
    rows = []
    for shift in shifts:
        mosaics: list[Mosaic] = build_mosaics(chips, folds)
        probs = {m: [mo.empty() for mo in mosaics] for m in METHODS}
        where = {mo.epsg: i for i, mo in enumerate(mosaics)}
        for n, c in enumerate(chips):
            image = apply_shift(shift, c.image, bands, seed * 100_003 + n, means=card.mean)
            i = where[c.tile.epsg]
            for name, m in per_fold[folds[c.tile_id]].items():
                pick = [bands.index(b) for b in m.card.bands]
                prob = _predict(m, image[pick], shift, cfg)
                mosaics[i].paste(probs[name][i], c.tile, prob[c.tile.core_slice])
        iou = {name: score(mosaics, p, k)[POOLED].row()["iou"] for name, p in probs.items()}
        n_px = int(score(mosaics, probs["default"], k)[POOLED].row()["n_pixels"])
        rows.append(StressRow(shift.kind, shift.level, scene, iou, n_px))
        log.info("%s %s on %s: %s", shift.kind, shift.level, scene,
                 {m: round(v, 3) for m, v in iou.items()})
    return rows


def stress_test(model_name: str, base: Scene, sensors: Sequence[Scene] = (), *,
                shifts: Sequence[Shift] = STRESS_SHIFTS, outlines: str | None = None,
                rules: LabelRules | None = None, seed: int = 0) -> list[StressRow]:
    """The stress table of a cross-validated, floored model: every shift on the held-out folds of
    the ``base`` scene, and the unshifted held-out folds of every ``sensors`` scene."""
    model = load_model(model_name)
    card = model.card
    tiles, folds, k = card_tiles(card)
    prov = card.provenance
    rules = rules or LabelRules(**dict(prov.get("label_rules", {})))
    ref = read_reference(outlines or prov["data"]["outlines"])
    cfg = InferConfig.model_validate(
        {"window_px": int(prov.get("training", {}).get("chip_px", 128)), "overlap": 0.5,
         "batch_size": 8, "device": "cpu"})
    rows: list[StressRow] = []
    for scene in (base, *sensors):
        source = ChipSource(scene.catalog, tuple(card.bands), scene.start, scene.end,
                            scene.collections)
        chips = [c for c in build_chips(tiles, source, ref, rules) if c.tile_id in folds]
        if not chips:
            raise ValueError(f"no labelled pixels of {scene.name} on the model's tiles")
        if scene is base:
            rows += stress_scene(model, chips, folds, k, shifts, scene.name, cfg, seed=seed)
        else:  # another sensor: the scene itself is the shift
            got = stress_scene(model, chips, folds, k, [UNSHIFTED], scene.name, cfg, seed=seed)
            rows += [replace(r, shift="sensor", level=scene.name) for r in got]
    return rows


def summary(rows: Sequence[StressRow]) -> dict[str, Any]:
    """The stress test in one mapping: every row, the mean IoU of the default and of the better
    baseline over all shifts, and the worst margin (with its shift)."""
    worst = min(rows, key=lambda r: r.margin)
    return {"shifts": [r.to_dict() for r in rows],
            "default_mean_iou": round(float(np.mean([r.iou["default"] for r in rows])), 4),
            "network_mean_iou": round(float(np.mean([r.iou["network"] for r in rows])), 4),
            "baseline_mean_iou": round(float(np.mean([r.best_baseline for r in rows])), 4),
            "worst_shift_margin": round(worst.margin, 4),
            "worst_shift": f"{worst.shift}: {worst.level}",
            "floor_holds": all(r.margin >= 0 for r in rows)}


def markdown(rows: Sequence[StressRow]) -> str:
    """The stress table as Markdown: one row per shift and level."""
    def cell(v: float) -> str:
        return f"{v:.3f}" if math.isfinite(v) else "–"

    lines = ["| shift | level | default | network alone | band ratio | NDSI | margin |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.shift} | {r.level} | {cell(r.iou['default'])} | "
                     f"{cell(r.iou['network'])} | {cell(r.iou['band-ratio'])} | "
                     f"{cell(r.iou['ndsi'])} | {r.margin:+.3f} |")
    return "\n".join(lines)


def record(card_path: str, rows: Sequence[StressRow], command: str = "") -> ModelCard:
    """Write the stress table into the card at ``card_path`` (``provenance.stress_test``); the
    weights and their hash are untouched."""
    from glacierscale.models.weights import _write_atomic, read_card

    card = read_card(card_path)
    prov = {**card.provenance, "stress_test": {**summary(rows), "command": command}}
    new = ModelCard.from_dict({**card.to_dict(), "provenance": prov})
    _write_atomic(card_path, new.to_json().encode())
    return new

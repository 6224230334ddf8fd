"""Spatial cross-validation training: K fold models, judged on the areas they never saw, shipped as
one ensemble with its card.

The tour of :func:`train_cv`:

1. plan the tiles of the area on the product's grid and build the chips (catalog + load, exactly
   as inference), labels from the reference outlines;
2. normalisation statistics from the chips; folds = spatial stripes of tiles;
3. for every seed and fold: train a U-Net on the other folds, predict the held-out fold with the
   inference engine;
4. temperature scaling on the held-out predictions; scores per fold and pooled beside the
   band-ratio, NDSI, tuned-threshold and "everything is ice" baselines on the same pixels;
5. write the K fold models of the first seed as an ensemble (safetensors + card) with metrics
   JSON, an evaluation table, training curves and a reliability diagram.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from glacierscale import __version__
from glacierscale.config import GridConfig, InferConfig
from glacierscale.io import Store
from glacierscale.models import Ensemble, ModelCard, TorchModel, save_model
from glacierscale.train.chips import Chip, ChipSource, band_statistics, build_chips
from glacierscale.train.domain_record import training_domain
from glacierscale.train.evaluate import (
    Evaluation,
    calibrate,
    evaluate_heldout,
    glacier_fraction,
    predict_mosaics,
)
from glacierscale.train.floor_fit import CVFloors, fit_cv_floors
from glacierscale.train.folds import fold_members, spatial_folds
from glacierscale.train.labels import LabelRules
from glacierscale.train.leakage import check_no_label_leak
from glacierscale.train.loop import TrainConfig, train_network
from glacierscale.train.mosaic import build_mosaics
from glacierscale.train.outputs import (
    curves_png,
    fold_table,
    json_bytes,
    markdown_table,
    reliability_png,
)
from glacierscale.train.scoring import POOLED, Tally, score

log = logging.getLogger(__name__)

UNET = "U-Net (held-out folds)"
DEFAULT = "U-Net under the physics floor (held-out folds)"


@dataclass(frozen=True)
class TrainRequest:
    """Everything a training run depends on; recorded in the model card."""

    name: str
    outlines: str
    source: ChipSource
    aoi: str | None = None
    folds: int = 4
    grid: GridConfig = field(default_factory=lambda: GridConfig.model_validate(
        {"tile_size_px": 128, "resolution": 30.0, "halo_px": 32}))
    rules: LabelRules = field(default_factory=LabelRules)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = (0,)
    region_column: str | None = None  # regional folds: whole regions of this outline attribute
    description: str = ""
    limitations: str = ""
    licence: str = "Apache-2.0"
    command: str = ""
    catalog_name: str = ""  # the catalog as the user named it (e.g. a preset), for the record
    #: ship the network under the physics floor (models.floor), fitted from the training chips
    floor: bool = False
    #: the labelled area's name in the card's domain
    region_name: str = ""

    def __post_init__(self) -> None:
        # Fail before minutes of chip extraction when an index needs a band that is not asked for.
        from glacierscale.models.features import index_pairs

        index_pairs(self.train.indices, self.source.bands)

    def infer_config(self) -> InferConfig:
        """The engine settings of held-out prediction: windows of the training chip size."""
        return InferConfig.model_validate({"window_px": self.train.chip_px, "overlap": 0.5,
                                           "batch_size": 8, "device": "cpu"})


@dataclass
class CVResult:
    """What :func:`train_cv` produced."""

    card: ModelCard
    metrics: dict[str, Any]
    evaluation: Evaluation
    chips: list[Chip]
    folds: dict[str, int]


def read_reference(path: str) -> Any:
    """Reference outlines as a GeoDataFrame, with a clear error when unreadable or empty."""
    import geopandas as gpd

    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for a bad path or format
        raise ValueError(f"cannot read reference outlines {path!r}: {exc}") from exc
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise ValueError(f"{path} holds no outline polygons")
    if gdf.crs is None:
        raise ValueError(f"{path} has no CRS; write it with one (e.g. EPSG:4326)")
    return gdf


def code_version() -> str:
    """Package version plus the git commit of the checkout when there is one."""
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5, check=False)
        if sha.returncode == 0 and sha.stdout.strip():
            mark = "+dirty" if dirty.stdout.strip() else ""
            return f"{__version__} (git {sha.stdout.strip()}{mark})"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def file_digest(path: str) -> str:
    """sha256 of a local file (the reference outlines), or "" when it is not a local file."""
    p = Path(path)
    if not p.is_file():
        return ""
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _plan(req: TrainRequest, outlines: Any) -> list[Any]:
    from glacierscale.plan import plan_tiles

    return list(plan_tiles(req.aoi if req.aoi else outlines, req.grid).tiles)


def tile_regions(chips: list[Chip], outlines: Any, column: str) -> dict[str, str]:
    """Region of every chip's tile: the ``column`` value of the outlines covering most of its core
    (or of the nearest outline when none touches it), for regional cross-validation."""
    from shapely.geometry import box

    if column not in outlines.columns:
        raise ValueError(f"the outlines have no column {column!r} to take regions from; columns: "
                         f"{sorted(c for c in outlines.columns if c != 'geometry')}")
    out: dict[str, str] = {}
    by_crs: dict[str, Any] = {}
    for c in chips:
        gdf = by_crs.setdefault(c.tile.crs, outlines.to_crs(c.tile.crs))
        core = box(*c.tile.core_bounds)
        area = gdf.geometry.intersection(core).area
        i = int(area.to_numpy().argmax()) if float(area.max()) > 0 else int(
            gdf.geometry.distance(core).to_numpy().argmin())
        out[c.tile_id] = str(gdf[column].iloc[i])
    return out


def _card(req: TrainRequest, chips: list[Chip]) -> ModelCard:
    mean, std = band_statistics(chips)
    cfg = req.train
    return ModelCard(
        name=req.name, architecture="unet", bands=req.source.bands, mean=mean, std=std,
        halo_px=req.grid.halo_px, params=cfg.network_params(),
        resolution_m=req.grid.resolution, licence=req.licence, description=req.description)


def train_cv(req: TrainRequest, out: str, *, client: Any = None,
             cache: str | None = None) -> CVResult:
    """Train and evaluate ``req`` by spatial cross-validation; write the model to ``out``."""
    t0 = time.perf_counter()
    outlines = read_reference(req.outlines)
    tiles = _plan(req, outlines)
    chips = build_chips(tiles, req.source, outlines, req.rules, client=client, cache=cache)
    if len(chips) < req.folds:
        raise ValueError(f"only {len(chips)} tiles hold labelled pixels, fewer than the "
                         f"{req.folds} folds: use smaller tiles (--tile-size-px), a larger area "
                         "or fewer folds")
    t_chips = time.perf_counter() - t0
    check_no_label_leak(chips, req.source.bands, outlines)
    card = _card(req, chips)
    k = req.folds
    regions = (tile_regions(chips, outlines, req.region_column) if req.region_column else None)
    folds = spatial_folds([c.tile for c in chips], k,
                          weights={c.tile_id: c.glacier_pixels() for c in chips}, regions=regions)
    mosaics = build_mosaics(chips, folds)
    icfg = req.infer_config()
    bands = req.source.bands
    nets: dict[int, list[Any]] = {}
    histories: list[dict[str, Any]] = []
    raw: dict[int, list[np.ndarray]] = {}
    for seed in req.seeds:
        cfg = replace(req.train, seed=seed)
        nets[seed] = []
        raw[seed] = [m.empty() for m in mosaics]
        for f in range(k):
            train = [c for c in chips if folds[c.tile_id] != f]
            held = [c for c in chips if folds[c.tile_id] == f]
            log.info("seed %d fold %d/%d: training on %d tiles, holding out %d", seed, f + 1, k,
                     len(train), len(held))
            net, hist = train_network(train, card, cfg, val_chips=held)
            nets[seed].append(net)
            histories.append({"fold": f, **hist})
            predict_mosaics(TorchModel(net, card), held, bands, mosaics, icfg, out=raw[seed])
    calibrated: dict[str, list[np.ndarray]] = {}
    temps: dict[int, tuple[float, list[float]]] = {}
    for seed in req.seeds:
        cal, t_all, t_fold = calibrate(raw[seed], mosaics, k)
        temps[seed] = (t_all, t_fold)
        calibrated[UNET if len(req.seeds) == 1 else f"{UNET}, seed {seed}"] = cal
    if len(req.seeds) > 1:
        calibrated[f"{UNET}, mean of {len(req.seeds)} seeds"] = [
            np.mean([calibrated[f"{UNET}, seed {s}"][i] for s in req.seeds], axis=0)
            for i in range(len(mosaics))]
    first = req.seeds[0]
    floors: CVFloors | None = None
    t_out = temps[first][0]
    if req.floor:
        floors = fit_cv_floors(chips, folds, k, nets[first], card, temps[first][0],
                               temps[first][1], mosaics, icfg, seed=first,
                               augment=req.train.augment)
        calibrated[DEFAULT], t_out, _ = calibrate(floors.raw, mosaics, k)
    ev = evaluate_heldout(chips, bands, mosaics, k, calibrated, icfg,
                          calibrated=list(calibrated))
    # The first seed's held-out probabilities before scaling: what the temperature corrected.
    uncal = score(mosaics, raw[first], k, calibrated=True)[POOLED]
    metrics = _metrics(req, ev, uncal, chips, folds, mosaics, temps, histories,
                       {"chips_s": round(t_chips, 1), "total_s": round(time.perf_counter() - t0,
                                                                        1)})
    if floors is not None:
        metrics["floor"] = {"temperature": t_out, "rate": floors.shipped.rate,
                            "rate_per_fold": [f.rate for f in floors.folds],
                            "nll_ref": floors.shipped.mixture.nll_ref}
    domain = training_domain(chips, req.source, req.grid.resolution,
                             region=req.region_name or f"training area of {req.name}",
                             excluded=req.rules.exclude)
    final = replace(card, temperature=t_out, floor=floors.card_floor() if floors else {},
                    domain=domain.to_dict(),
                    provenance=_provenance(req, chips, folds, metrics))
    ensemble = Ensemble(nets[first], final)
    saved = save_model(ensemble, final, out)
    _write_outputs(out, req, saved, ev, uncal, histories, metrics)
    return CVResult(saved, metrics, ev, chips, folds)


def _seed_spread(ev: Evaluation, seeds: tuple[int, ...]) -> dict[str, float]:
    if len(seeds) < 2:
        return {}
    vals = np.array([ev.rows()[f"{UNET}, seed {s}"]["iou"] for s in seeds])
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)),
            "per_seed": [float(v) for v in vals]}  # type: ignore[dict-item]


def _metrics(req: TrainRequest, ev: Evaluation, uncal: Tally, chips: list[Chip],
             folds: dict[str, int], mosaics: list[Any], temps: dict[int, tuple[float, list[float]]],
             histories: list[dict[str, Any]], seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "model": req.name,
        "held_out": ev.to_dict(),
        "before_temperature_scaling": uncal.row(),
        "iou_across_seeds": _seed_spread(ev, req.seeds),
        "temperature": {str(s): {"all_folds": t, "cross_fitted_per_fold": tf}
                        for s, (t, tf) in temps.items()},
        "glacier_fraction_of_labelled_pixels": glacier_fraction(mosaics),
        "tiles": len(chips),
        "tiles_per_fold": [len(m) for m in fold_members(folds, req.folds)],
        "labelled_pixels": int(sum(c.labelled_pixels() for c in chips)),
        "glacier_pixels": int(sum(c.glacier_pixels() for c in chips)),
        "training_seconds": [h["seconds"] for h in histories],
        "precision": histories[0]["precision"] if histories else None,
        "seconds": seconds,
    }


def _provenance(req: TrainRequest, chips: list[Chip], folds: dict[str, int],
                metrics: dict[str, Any]) -> dict[str, Any]:
    rows = metrics["held_out"]["pooled"]
    summary = {name: {k: rows[name][k] for k in ("iou", "precision", "recall", "f1")}
               for name in rows}
    return {
        "command": req.command,
        "code_version": code_version(),
        "data": {
            "catalog": req.catalog_name or req.source.catalog,
            "collections": list(req.source.collections),
            "dem_collections": list(req.source.dem_collections) if req.source.needs_dem else [],
            "start": req.source.start.isoformat() if req.source.start else None,
            "end": req.source.end.isoformat() if req.source.end else None,
            "items": sorted({i for c in chips for i in c.item_ids}),
            "outlines": req.outlines, "outlines_sha256": file_digest(req.outlines),
            "aoi": req.aoi,
        },
        "grid": {"tile_size_px": req.grid.tile_size_px, "resolution": req.grid.resolution,
                 "halo_px": req.grid.halo_px},
        "label_rules": req.rules.to_dict(),
        "training": {**asdict(req.train), "seeds": list(req.seeds),
                     "ensemble": f"{req.folds} fold models of seed {req.seeds[0]}"},
        "cross_validation": {"folds": req.folds,
                             "scheme": (f"whole regions of outline attribute {req.region_column}"
                                        if req.region_column else
                                        "spatial stripes of whole tiles"),
                             "tile_folds": dict(sorted(folds.items()))},
        "normalisation": "mean/std of every band over the valid core pixels of all chips",
        "temperature": ("fitted on the held-out fold predictions (all folds pooled)"
                        + ("; of the floored output, the network's own is floor.net_temperature"
                           if req.floor else "")),
        "metrics_held_out_pooled": summary,
        "limitations": req.limitations,
    }


def _write_outputs(out: str, req: TrainRequest, card: ModelCard, ev: Evaluation,
                   uncal: Tally, histories: list[dict[str, Any]],
                   metrics: dict[str, Any]) -> None:
    store = Store(out)
    store.write_bytes_atomic("metrics.json", json_bytes(metrics))
    store.write_bytes_atomic("curves.png", curves_png(histories, f"{req.name}: training curves"))
    rel = {name: ev.reliability(name) for name in ev.tallies
           if name.startswith(UNET) or name == DEFAULT}
    rel["before temperature scaling"] = uncal.reliability()
    store.write_bytes_atomic("reliability.png", reliability_png(
        rel, f"{req.name}: held-out reliability"))
    text = evaluation_markdown(req.name, ev, metrics, card)
    store.write_bytes_atomic("evaluation.md", text.encode())


def evaluation_markdown(name: str, ev: Evaluation, metrics: dict[str, Any],
                        card: ModelCard | None = None) -> str:
    """The evaluation report: pooled table with fold spread, per-fold IoU, notes."""
    lines = [f"# {name}: held-out evaluation", "",
             "Every pixel is predicted by a fold model that never trained on its area (spatial "
             "cross-validation by tile stripes); all methods are scored on the same labelled, "
             "valid pixels.", "",
             markdown_table(ev.rows(), ev.spreads()), "", "IoU per fold:", "",
             fold_table(ev.per_fold(), ev.k), ""]
    if metrics.get("iou_across_seeds"):
        s = metrics["iou_across_seeds"]
        lines += [f"IoU across seeds: {s['mean']:.3f} ± {s['std']:.3f} ({s['per_seed']})", ""]
    frac = metrics.get("glacier_fraction_of_labelled_pixels")
    if frac is not None:
        lines += [f"Glacier share of the labelled pixels: {frac:.3f} (the precision of "
                  "'everything is ice').", ""]
    if card is not None:
        lines += [f"Temperature: {card.temperature:.3f}; weights sha256 {card.weights_hash}.", ""]
    lines += [f"- {n}" for n in ev.notes]
    return "\n".join(lines) + "\n"

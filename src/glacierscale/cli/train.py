"""``glacierscale train``, ``glacierscale evaluate-model`` and ``glacierscale stress-test``.

Train by spatial cross-validation; judge a trained model on another scene of its area, and on
its held-out folds under domain shifts.
"""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from glacierscale.config import cache_dir, sample_data_dir

#: ``--catalog`` shortcuts for the real samples, built once in the cache folder.
SAMPLES = ("sample:athabasca", "sample:everest")


def _split(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date; use YYYY-MM-DD") from exc


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a W,S,E,N box of four numbers") from exc
    return w, s, e, n


def resolve_catalog(catalog: str) -> str:
    """A catalog URL/path, or the local catalog of a sample named ``sample:<name>``."""
    if not catalog.startswith("sample:"):
        return catalog
    data = sample_data_dir()
    if catalog not in SAMPLES or data is None:
        raise typer.BadParameter(f"{catalog!r}: sample catalogs are {list(SAMPLES)} and need the "
                                 "sample data (set GLACIERSCALE_SAMPLE_DATA)")
    if catalog == "sample:everest":
        from glacierscale.train import everest_sample

        return everest_sample(data, cache_dir()).catalog
    from glacierscale.demo import athabasca_sample

    return athabasca_sample(data, cache_dir()).catalog


def _text(value: str) -> str:
    """Inline text, or the contents of a file given as ``@path``."""
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value


@contextmanager
def _dask(workers: int, scheduler: str | None) -> Any:
    """A Dask client for chip extraction: a scheduler address, local processes, or none."""
    if scheduler is None and workers <= 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add train and evaluate-model to the CLI."""

    @app.command()
    def train(
        outlines: Annotated[str, typer.Option(help="reference outlines (RGI or any polygons)")],
        catalog: Annotated[str, typer.Option(help="STAC API URL, folder of items, ndjson, or "
                                             "sample:athabasca / sample:everest")],
        out: Annotated[str, typer.Option(help="model directory (local path or fsspec URL)")],
        bands: Annotated[str, typer.Option(help="comma-separated common band names")],
        start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
        aoi: Annotated[str | None, typer.Option(help="W,S,E,N; default: around the outlines")]
        = None,
        folds: Annotated[int, typer.Option(help="spatial cross-validation folds (K models)")] = 4,
        name: Annotated[str | None, typer.Option(help="model name (default: out's folder)")]
        = None,
        collections: Annotated[str, typer.Option(help="comma-separated collection ids")] = "",
        dem_collections: Annotated[str, typer.Option(help="DEM collections")] = "cop-dem-glo-30",
        resolution: Annotated[float, typer.Option(help="pixel size (m)")] = 30.0,
        tile_size_px: Annotated[int, typer.Option(help="tile (chip core) size, px")] = 128,
        halo_px: Annotated[int, typer.Option(help="context around each tile, px")] = 32,
        chip_px: Annotated[int, typer.Option(help="training crop size, px")] = 128,
        steps: Annotated[int, typer.Option(help="optimiser steps per fold model")] = 300,
        batch_size: Annotated[int, typer.Option(help="crops per step")] = 8,
        width: Annotated[int, typer.Option(help="U-Net width")] = 16,
        depth: Annotated[int, typer.Option(help="U-Net depth")] = 3,
        lr: Annotated[float, typer.Option(help="peak learning rate (one-cycle)")] = 3e-3,
        indices: Annotated[str, typer.Option(
            help="spectral index channels computed in the network from the bands, e.g. "
                 "ndsi,red_swir16,ndwi,ndvi,swir_ratio; 'valid' adds the no-data mask")] = "",
        fill_nodata: Annotated[bool, typer.Option(
            help="fill no data (scene edges, cloud masks) from the surrounding pixels inside "
                 "the network")] = False,
        seeds: Annotated[str, typer.Option(help="seeds; more than one reports seed variance, the "
                                           "first is shipped")] = "0",
        region_column: Annotated[str | None, typer.Option(
            help="regional folds: whole regions of this outline attribute (e.g. O2Region) "
                 "instead of stripes of tiles")] = None,
        ring_px: Annotated[int, typer.Option(help="uncertain ring at outlines, px per side")] = 1,
        known_within_m: Annotated[float | None, typer.Option(
            help="incomplete reference: label only within this distance of an outline")] = None,
        exclude_box: Annotated[list[str] | None, typer.Option(
            help="W,S,E,N lon/lat box with no training label (repeatable): an area kept for an "
                 "independent test")] = None,
        floor: Annotated[bool, typer.Option(
            help="ship the network under the physics floor: band ratio / NDSI where it is "
                 "unsure, its inputs are unlike its training pixels, or it contradicts clean "
                 "ice far more than in training")] = False,
        region_name: Annotated[str, typer.Option(
            help="name of the labelled area in the card's training domain")] = "",
        augment: Annotated[bool, typer.Option(help="flips/rotations, brightness/contrast")] = True,
        nodata_dropout: Annotated[float, typer.Option(
            help="probability of blanking a strip of a training crop to no data (teaches the "
                 "network scene edges and cloud masks)")] = 0.25,
        augment_gain: Annotated[float, typer.Option(
            help="per-band gain jitter: gains drawn from [1 - x, 1 + x] (half of the crops)")]
        = 0.0,
        augment_offset: Annotated[float, typer.Option(
            help="per-band offset jitter in reflectance, drawn from [-x, x] (half of the crops)")]
        = 0.0,
        augment_haze: Annotated[float, typer.Option(
            help="haze of a level drawn from [0, x] (half of the crops; 1 is moderate haze)")]
        = 0.0,
        augment_illumination: Annotated[float, typer.Option(
            help="probability of lighting a crop by synthetic terrain with cast shadows")] = 0.0,
        augment_coarsen: Annotated[float, typer.Option(
            help="probability of a crop at a coarser pixel size")] = 0.0,
        augment_coarsen_factors: Annotated[str, typer.Option(
            help="pixel-size factors of coarse crops, one drawn per crop, e.g. 2,4")] = "2",
        augment_drop: Annotated[float, typer.Option(
            help="probability of one of --augment-drop-bands missing from a crop")] = 0.0,
        augment_drop_bands: Annotated[str, typer.Option(
            help="bands that may be missing at inference, e.g. blue,nir,swir22 (the network "
                 "then reads their training mean)")] = "",
        precision: Annotated[str, typer.Option(help="auto, fp32 or bf16")] = "auto",
        threads: Annotated[int, typer.Option(help="torch CPU threads (fixed: deterministic)")] = 1,
        cache: Annotated[str | None, typer.Option(help="chip cache URL (COGs), e.g. s3://b/chips")]
        = None,
        workers: Annotated[int, typer.Option(help="local Dask processes for chip extraction "
                                             "(0: in this process)")] = 0,
        scheduler: Annotated[str | None, typer.Option(help="existing Dask scheduler")] = None,
        description: Annotated[str, typer.Option(help="card description (text or @file)")] = "",
        limitations: Annotated[str, typer.Option(help="card limitations (text or @file)")] = "",
        ship: Annotated[str | None, typer.Option(
            help="also copy card and weights into DIR/cards and DIR/weights (the layout of "
                 "glacierscale/models, where the registry finds shipped models)")] = None,
    ) -> None:
        """Train a U-Net ensemble by spatial cross-validation on imagery and reference outlines."""
        import torch

        from glacierscale.config import GridConfig
        from glacierscale.load import MissingBandError
        from glacierscale.train import (
            Augment,
            ChipSource,
            LabelRules,
            TrainConfig,
            TrainRequest,
            train_cv,
        )

        torch.set_num_threads(threads)
        try:
            req = TrainRequest(
                name=name or Path(out.rstrip("/")).name,
                outlines=outlines,
                source=ChipSource(resolve_catalog(catalog), _split(bands), _date(start),
                                  _date(end), _split(collections), _split(dem_collections)),
                aoi=aoi, folds=folds,
                grid=GridConfig.model_validate({"tile_size_px": tile_size_px,
                                                "resolution": resolution, "halo_px": halo_px}),
                rules=LabelRules(ring_px=ring_px, known_within_m=known_within_m,
                                 exclude=tuple(_box(b) for b in exclude_box or [])),
                train=TrainConfig(width=width, depth=depth, chip_px=chip_px, steps=steps,
                                  batch_size=batch_size, lr=lr, indices=_split(indices),
                                  fill_nodata=fill_nodata,
                                  precision=precision,  # type: ignore[arg-type]
                                  augment=Augment(
                                      enabled=augment, nodata=nodata_dropout, gain=augment_gain,
                                      offset=augment_offset, haze=augment_haze,
                                      illumination=augment_illumination,
                                      coarsen=augment_coarsen,
                                      coarsen_factors=tuple(
                                          int(f) for f in _split(augment_coarsen_factors)),
                                      drop=augment_drop,
                                      drop_bands=_split(augment_drop_bands))),
                seeds=tuple(int(s) for s in _split(seeds)), region_column=region_column,
                description=_text(description), limitations=_text(limitations),
                command=" ".join(["glacierscale", *map(shlex.quote, sys.argv[1:])]),
                catalog_name=catalog, floor=floor, region_name=region_name,
            )
            with _dask(workers, scheduler) as client:
                result = train_cv(req, out, client=client, cache=cache)
            if ship:
                from glacierscale.train.ship import ship_model

                shipped = ship_model(Path(out) / f"{req.name}.json", ship)
                typer.echo(f"shipped {shipped}")
        except (MissingBandError, ValueError, FileNotFoundError) as exc:
            raise _fail(exc) from exc
        rows = result.metrics["held_out"]["pooled"]
        typer.echo(json.dumps({"model": result.card.tag, "out": out,
                               "temperature": round(result.card.temperature, 4),
                               "held_out_iou": {k: round(v["iou"], 4) for k, v in rows.items()
                                                if v["iou"] == v["iou"]}}))

    @app.command("stress-test")
    def stress_test_cmd(
        model: Annotated[str, typer.Option(help="model name or card path of a model trained "
                                           "with --floor")],
        catalog: Annotated[str, typer.Option(help="STAC catalog (or sample:athabasca)")],
        collections: Annotated[str, typer.Option(help="collections of the scene the shifts "
                                                 "are applied to (the training scene)")],
        sensors: Annotated[str, typer.Option(
            help="comma-separated collections of other sensors over the same tiles")] = "",
        start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
        record: Annotated[bool, typer.Option(
            help="write the table into the model card (provenance.stress_test)")] = False,
        threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    ) -> None:
        """The model's held-out folds under domain shifts (sensor, gain/offset, haze,
        illumination, resolution, missing bands), beside its network alone, the band ratio and
        the NDSI; prints the table and one JSON line."""
        import torch

        from glacierscale.train.stress import Scene, markdown, stress_test, summary

        torch.set_num_threads(threads)
        cat = resolve_catalog(catalog)

        def scene(cols: str) -> Scene:
            return Scene(cols, cat, _split(cols), _date(start), _date(end))

        try:
            rows = stress_test(model, scene(collections), [scene(c) for c in _split(sensors)])
            if record:
                from glacierscale.models.registry import CARDS_DIR, REGISTRY
                from glacierscale.train.stress import record as record_rows

                target = REGISTRY.get(model, "")
                path = (str(CARDS_DIR / target.removeprefix("card:"))
                        if target.startswith("card:") else model)
                record_rows(path, rows, " ".join(["glacierscale",
                                                  *map(shlex.quote, sys.argv[1:])]))
        except ValueError as exc:
            raise _fail(exc) from exc
        typer.echo(markdown(rows))
        typer.echo(json.dumps(summary(rows)))

    @app.command("evaluate-model")
    def evaluate_model_cmd(
        model: Annotated[str, typer.Option(help="model name or card path/URL")],
        catalog: Annotated[str, typer.Option(help="STAC catalog (or sample:athabasca / "
                                             "sample:everest)")],
        start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
        collections: Annotated[str, typer.Option(help="comma-separated collection ids")] = "",
        dem_collections: Annotated[str, typer.Option(help="DEM collections")] = "cop-dem-glo-30",
        outlines: Annotated[str | None, typer.Option(help="reference (default: the card's)")]
        = None,
        out: Annotated[str | None, typer.Option(help="folder for evaluation.json/.md/.png")]
        = None,
        threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    ) -> None:
        """Per-fold and ensemble scores of a trained model on another scene of its area, beside
        the band-ratio, NDSI, tuned-threshold and everything-is-ice baselines."""
        import torch

        from glacierscale.load import MissingBandError
        from glacierscale.train import evaluate_model
        from glacierscale.train.reevaluate import summary_line

        torch.set_num_threads(threads)
        try:
            ev, meta = evaluate_model(model, resolve_catalog(catalog),
                                      collections=_split(collections), start=_date(start),
                                      end=_date(end), dem_collections=_split(dem_collections),
                                      outlines=outlines, out=out)
        except (MissingBandError, ValueError, FileNotFoundError) as exc:
            raise _fail(exc) from exc
        typer.echo(json.dumps({"items": meta["items"], "iou": summary_line(ev)}))

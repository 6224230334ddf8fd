"""``glacierscale run``, ``demo`` and ``evaluate``: the general form and its laptop preset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from glacierscale.config import GridConfig, InferConfig, RunConfig, cache_dir, sample_data_dir


def _summary_text(summary: Any) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    lines = [f"tiles -> {counts}",
             f"inventory: {summary.glaciers} polygons, {summary.glacier_km2:.2f} km²",
             f"outputs: {summary.out} (report.md, manifest.json, inventory/glaciers.parquet)"]
    if summary.evaluation:
        ev = summary.evaluation
        lines.append("evaluation: " + ", ".join(f"{k}={v:.3f}" for k, v in ev.items()))
    return "\n".join(lines)


def _execute(cfg: RunConfig) -> Any:
    from glacierscale.io import check_bucket
    from glacierscale.orchestrate import run as run_flow

    check_bucket(cfg.out)
    summary = run_flow(cfg)
    typer.echo(_summary_text(summary))
    failed = summary.counts().get("failed", 0)
    if failed:
        typer.echo(f"{failed} tile(s) failed; see the reasons in {cfg.out}/manifest.json", err=True)
    return summary


def register(app: typer.Typer) -> None:
    """Add run, demo and evaluate to the CLI."""

    @app.command()
    def run(
        aoi: Annotated[str, typer.Option(help="W,S,E,N in degrees, or a path/URL of outlines")],
        catalog: Annotated[str, typer.Option(help="STAC API URL, folder of items, or ndjson")],
        out: Annotated[str, typer.Option(help="output URL (local path, s3://, gs://, ...)")],
        start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
        model: Annotated[str, typer.Option(help="model name or card path/URL")] = "band-ratio",
        workers: Annotated[int, typer.Option(help="local Dask worker processes")] = 2,
        scheduler: Annotated[str | None, typer.Option(help="existing Dask scheduler")] = None,
        collections: Annotated[str, typer.Option(help="comma-separated collection ids")] = "",
        reference: Annotated[str | None, typer.Option(help="outlines to evaluate against")] = None,
        config: Annotated[Path | None, typer.Option(help="YAML with any RunConfig field")] = None,
        resolution: Annotated[float, typer.Option(help="pixel size (m)")] = 10.0,
        tile_size_px: Annotated[int, typer.Option(help="tile core size (px)")] = 1024,
        halo_px: Annotated[int, typer.Option(help="context halo (px)")] = 64,
        window_px: Annotated[int, typer.Option(help="inference window (px)")] = 512,
        overlap: Annotated[float, typer.Option(help="window overlap fraction")] = 0.5,
        batch_size: Annotated[int, typer.Option(help="windows per batch")] = 8,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    ) -> None:
        """Map glaciers over an area: plan tiles, process them on Dask, merge the inventory."""
        fields: dict[str, Any] = {
            "aoi": aoi, "catalog": catalog, "out": out, "start": start, "end": end,
            "model": model, "workers": workers, "scheduler": scheduler,
            "collections": collections or None, "reference": reference,
            "grid": GridConfig(tile_size_px=tile_size_px, resolution=resolution, halo_px=halo_px),
            "infer": InferConfig(window_px=window_px, overlap=overlap, batch_size=batch_size,
                                 device=device),
        }
        cfg = (RunConfig.from_yaml(config, **fields) if config
               else RunConfig.model_validate({k: v for k, v in fields.items() if v is not None}))
        _execute(cfg)

    @app.command()
    def demo(
        out: Annotated[str, typer.Option(help="output URL")] = "glacierscale-demo",
        model: Annotated[str, typer.Option(help="model name or card path/URL")] = "band-ratio",
        workers: Annotated[int, typer.Option(help="local Dask worker processes")] = 2,
    ) -> None:
        """Map the Athabasca Glacier sample end to end on this machine (no server needed)."""
        from glacierscale.sample import athabasca_sample

        sample = athabasca_sample(sample_data_dir(), cache_dir())
        where = "local sample catalog" if sample.offline else "public Earth Search STAC API"
        typer.echo(f"Athabasca Glacier demo: {where} {sample.catalog}")
        bbox = ",".join(f"{v:g}" for v in sample.bbox)
        cfg = RunConfig(aoi=bbox, catalog=sample.catalog, start=sample.start, end=sample.end,
                        collections=sample.collections, reference=sample.reference,
                        model=model, out=out, workers=workers)
        _execute(cfg)

    @app.command()
    def evaluate(
        inventory: Annotated[str, typer.Option(help="inventory GeoParquet (or a run's --out)")],
        reference: Annotated[str, typer.Option(help="reference outlines")],
        aoi: Annotated[str | None, typer.Option(help="valid area: W,S,E,N or a polygon file; "
                                                "default: the run's valid-data footprint")] = None,
        resolution: Annotated[float, typer.Option(help="evaluation pixel size (m)")] = 10.0,
    ) -> None:
        """IoU, precision and recall of an inventory against reference outlines."""
        from glacierscale.report import evaluate_inventory

        metrics = evaluate_inventory(inventory, reference, aoi=aoi, resolution=resolution)
        typer.echo(json.dumps({k: round(v, 4) for k, v in metrics.items()}))

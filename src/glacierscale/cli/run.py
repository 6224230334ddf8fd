"""``glacierscale run``, ``demo`` and ``evaluate``: the general form and its laptop preset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from glacierscale.config import RunConfig, cache_dir, sample_data_dir

#: ``run`` options that fill a nested section of RunConfig rather than a top-level field.
_GRID_OPTIONS = ("tile_size_px", "resolution", "halo_px")
_INFER_OPTIONS = ("window_px", "overlap", "batch_size", "device")


def _summary_text(summary: Any) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    lines = [f"tiles -> {counts}",
             f"inventory: {summary.glaciers} polygons, {summary.glacier_km2:.2f} km²",
             f"outputs: {summary.out} (report.md, manifest.json, inventory/glaciers.parquet)"]
    if summary.evaluation:
        ev = summary.evaluation
        lines.append("evaluation: " + ", ".join(f"{k}={v:.3f}" for k, v in ev.items()))
    return "\n".join(lines)


def _given_options(ctx: typer.Context) -> dict[str, Any]:
    """The options the user actually typed, by name.

    Options left at their default stay out of the config, so they neither override a ``--config``
    YAML file nor count as a choice: an untyped ``--resolution`` lets the model card decide.
    """
    # Compared by name: typer ships its own copy of click, whose ParameterSource is not click's.
    defaults = ("DEFAULT", "DEFAULT_MAP")
    return {name: value for name, value in ctx.params.items()
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in defaults}


def _run_config(given: dict[str, Any], config: Path | None) -> RunConfig:
    """RunConfig from the typed options and an optional YAML file (typed options win).

    Defaults come from RunConfig itself, so the CLI and YAML/Python users share one set.
    """
    fields = {k: v for k, v in given.items() if k not in (*_GRID_OPTIONS, *_INFER_OPTIONS)}
    fields.pop("config", None)
    if not fields.get("collections"):
        fields.pop("collections", None)  # "" means every collection of the catalog
    for section, names in (("grid", _GRID_OPTIONS), ("infer", _INFER_OPTIONS)):
        values = {k: given[k] for k in names if k in given}
        if values:
            fields[section] = values
    if config:
        return RunConfig.from_yaml(config, **fields)
    return RunConfig.model_validate(fields)


def _resolved(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the model's defaults applied; a model that cannot load is a --model error."""
    from glacierscale.run import resolve_config

    try:
        return resolve_config(cfg)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc


def _execute(cfg: RunConfig) -> Any:
    from glacierscale.io import check_bucket
    from glacierscale.orchestrate.flows import run as run_flow

    # Resolved here, the one door of run and demo, so the flow, the tiles' config token and the
    # manifest all see the resolution actually used.
    cfg = _resolved(cfg)
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
        ctx: typer.Context,
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
        resolution: Annotated[float | None, typer.Option(
            help="pixel size (m); default: the model card's resolution_m, else 10")] = None,
        tile_size_px: Annotated[int, typer.Option(help="tile core size (px)")] = 1024,
        halo_px: Annotated[int, typer.Option(help="context halo (px)")] = 64,
        window_px: Annotated[int, typer.Option(help="inference window (px)")] = 512,
        overlap: Annotated[float, typer.Option(help="window overlap fraction")] = 0.5,
        batch_size: Annotated[int, typer.Option(help="windows per batch")] = 8,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    ) -> None:
        """Map glaciers over an area: plan tiles, process them on Dask, merge the inventory."""
        # The parameters above define the options; their values are read back from ctx, which
        # also knows which ones were typed (see _given_options).
        _execute(_run_config(_given_options(ctx), config))

    @app.command()
    def demo(
        out: Annotated[str, typer.Option(help="output URL")] = "glacierscale-demo",
        model: Annotated[str, typer.Option(help="model name or card path/URL")] = "band-ratio",
        workers: Annotated[int, typer.Option(help="local Dask worker processes")] = 2,
    ) -> None:
        """Map the Athabasca Glacier sample end to end on this machine (no server needed)."""
        from glacierscale.demo import athabasca_sample

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

"""``glacierscale merge``: rebuild the inventory from the tile outputs of a run, at any time.

The work is ``glacierscale.inventory.build.rebuild_inventory``; this module only parses options.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer


def _parse_date(value: str | None, option: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD",
                                 param_hint=option) from exc


def register(app: typer.Typer) -> None:
    """Add ``merge`` to the CLI."""

    @app.command()
    def merge(
        out: Annotated[str, typer.Option(help="output URL of a run (local path, s3://, ...)")],
        reference: Annotated[str | None, typer.Option(
            help="reference outlines (RGI) for ids and area change")] = None,
        intersects: Annotated[str | None, typer.Option(
            help="RGI intersects (ice divide lines) of the reference")] = None,
        date_pred: Annotated[str | None, typer.Option(
            help="date of the mapped outlines, YYYY-MM-DD (default: from the tile items)")] = None,
        date_ref: Annotated[str | None, typer.Option(
            help="date of the reference, YYYY-MM-DD (default: per glacier from RGI)")] = None,
        export: Annotated[str, typer.Option(
            help="extra formats, comma-separated: gpkg, fgb, geojson")] = "",
        min_area_m2: Annotated[float, typer.Option(help="drop glaciers smaller than this")]
        = 5000.0,
        scheduler: Annotated[str | None, typer.Option(
            help="merge on the Dask cluster at this scheduler address (its workers must "
                 "reach --out); default: in this process. The inventory is the same")] = None,
    ) -> None:
        """Rebuild inventory/glaciers.parquet from tiles/*/outlines.parquet of a run."""
        from contextlib import nullcontext

        from glacierscale.inventory.build import rebuild_inventory

        if scheduler:
            from distributed import Client

            try:
                connect: Any = Client(scheduler, set_as_default=False, timeout="20s")
            except OSError as exc:
                raise typer.BadParameter(
                    f"no Dask scheduler answers at {scheduler!r} ({exc}); start one (dask "
                    "scheduler) or leave --scheduler out to merge in this process",
                    param_hint="--scheduler") from None
        else:
            connect = nullcontext(None)
        with connect as client:
            result = rebuild_inventory(
                out, reference=reference, intersects=intersects,
                date_pred=_parse_date(date_pred, "--date-pred"),
                date_ref=_parse_date(date_ref, "--date-ref"),
                exports=[e.strip().lower() for e in export.split(",") if e.strip()],
                min_area_m2=min_area_m2, client=client)
        typer.echo(f"merged {result['tiles_merged']} tiles -> {result['glaciers']} glaciers, "
                   f"{result['area_km2']:.3f} km² ({result['merged_by']})")
        if result["tiles_unfinished"]:
            typer.echo(f"{result['tiles_unfinished']} tile(s) without item.json were left out "
                       "(unfinished)", err=True)
        typer.echo("\n".join(f"wrote {w}" for w in result["written"]))

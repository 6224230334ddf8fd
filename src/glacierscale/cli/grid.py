"""``glacierscale grid``: plan the tiles of a run from RGI outlines, a centroid table or a box."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from glacierscale.config import GridConfig


def _split(text: str) -> list[str]:
    """Comma-separated values; ``@file`` reads one value per line (long glacier id lists)."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise typer.BadParameter(f"{path}: no such file (one glacier id per line)")
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [v.strip() for v in text.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    """Add the ``grid`` command to the CLI."""

    @app.command("grid")
    def grid(
        outlines: Annotated[str | None, typer.Option(
            help="RGI 6/7 outlines (shp, gpkg, parquet, zip) or a CenLon/CenLat CSV; path or URL"
        )] = None,
        out: Annotated[str | None, typer.Option(
            help="tiles GeoParquet to write (summary and glacier table go beside it)")] = None,
        regions: Annotated[str, typer.Option(help="RGI O1/O2 regions, e.g. 01,11 or 01-02")] = "",
        bbox: Annotated[str | None, typer.Option(
            help="W,S,E,N degrees: alone, the tiles covering it; with --outlines, a glacier filter"
        )] = None,
        glacier_ids: Annotated[str, typer.Option(
            help="comma-separated RGI ids, or @FILE with one id per line")] = "",
        tile_size_px: Annotated[int, typer.Option(help="tile core size (px)")] = 1024,
        resolution: Annotated[float, typer.Option(help="pixel size (m)")] = 10.0,
        halo_px: Annotated[int, typer.Option(help="context halo (px)")] = 64,
        buffer_m: Annotated[float, typer.Option(help="buffer around glaciers (m)")] = 500.0,
        estimate: Annotated[bool, typer.Option(
            "--estimate", help="estimate the tiles of the whole world from RGI 7.0 summaries")
        ] = False,
        summary_csv: Annotated[str | None, typer.Option(
            help="RGI 7.0 O1/O2 region summary CSV for --estimate")] = None,
    ) -> None:
        """Plan the tile grid: every glacier in exactly one tile, seamless across zones."""
        from glacierscale.core.footprint import parse_bbox
        from glacierscale.plan import estimate_global_tiles, plan_tiles, write_plan

        try:
            cfg = GridConfig(tile_size_px=tile_size_px, resolution=resolution, halo_px=halo_px,
                             buffer_m=buffer_m)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        if estimate:
            try:
                result = estimate_global_tiles(cfg, summary_csv)
            except (OSError, ValueError) as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from exc
            typer.echo(json.dumps(result, indent=2))
            return
        if out is None:
            raise typer.BadParameter("give --out tiles.parquet (or use --estimate)")
        if outlines is None and bbox is None:
            raise typer.BadParameter("give --outlines PATH_OR_URL or --bbox W,S,E,N")
        try:
            box_ = parse_bbox(bbox) if bbox else None
            if outlines is None:
                assert box_ is not None
                plan = plan_tiles(box_, cfg)
            else:
                plan = plan_tiles(outlines, cfg, regions=_split(regions),
                                  glacier_ids=_split(glacier_ids), bbox=box_)
            write_plan(plan, out)
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        from glacierscale.core.summary import summary_markdown

        typer.echo(summary_markdown(plan.summary))
        typer.echo(f"wrote {out}")

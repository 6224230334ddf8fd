"""``glacierscale catalog``: describe local rasters as STAC items, and search/select scenes."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

catalog_app = typer.Typer(
    name="catalog",
    help="STAC catalogs: index local rasters as items; search and rank scenes for a box.",
    no_args_is_help=True,
)


@catalog_app.command("index")
def index(
    directory: Annotated[Path, typer.Argument(help="folder of GeoTIFF/COG rasters")],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="items: a folder, a .ndjson or a .parquet file")],
    collection: Annotated[str | None, typer.Option(
        help="collection id for every item (default: guessed from names, e.g. HLSS30_2.0)")] = None,
    scale: Annotated[float | None, typer.Option(
        help="reflectance scale of the data bands (default: the guessed sensor's)")] = None,
    offset: Annotated[float | None, typer.Option(
        help="reflectance offset of the data bands")] = None,
) -> None:
    """Describe the rasters under DIRECTORY as STAC items (headers only; no pixels are read)."""
    from glacierscale.catalog import describe_rasters, write_items

    try:
        items = describe_rasters(directory, collection=collection, scale=scale, offset=offset)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    path = write_items(items, out)
    colls = sorted({i.collection_id or "" for i in items})
    typer.echo(f"wrote {len(items)} items ({', '.join(colls)}) to {path}")


def _day(text: str | None) -> date | None:
    return datetime.strptime(text, "%Y-%m-%d").date() if text else None


@catalog_app.command("search")
def search(
    catalog: Annotated[str, typer.Argument(
        help="STAC API URL, 'earth-search', 'planetary-computer', folder, .ndjson or .parquet")],
    bbox: Annotated[str, typer.Option(help="W,S,E,N in degrees")],
    start: Annotated[str | None, typer.Option(
        help="YYYY-MM-DD; with --end overrides the end-of-season window")] = None,
    end: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    year: Annotated[int | None, typer.Option(help="season year (default: latest with scenes)")]
    = None,
    collections: Annotated[str, typer.Option(help="comma-separated collection ids")] = "",
    max_cloud_cover: Annotated[float, typer.Option(help="percent")] = 80.0,
    max_scenes: Annotated[int, typer.Option(help="acquisitions to choose")] = 3,
) -> None:
    """Search CATALOG for a box and print the ranked selection with its reasons (JSON)."""
    from glacierscale.catalog import open_catalog, season_dates, select_scenes
    from glacierscale.core.footprint import parse_bbox

    try:
        w, s, e, n = parse_bbox(bbox)
    except ValueError as exc:
        typer.echo(f"error: --{exc}, e.g. -117.32,52.15,-117.23,52.21", err=True)
        raise typer.Exit(2) from exc
    lo, hi = _day(start), _day(end)
    colls = tuple(c.strip() for c in collections.split(",") if c.strip())
    query_lo, query_hi = lo, hi
    if lo is None and hi is None and year is not None:
        query_lo, query_hi = season_dates((s + n) / 2.0, year)
    items = open_catalog(catalog).search((w, s, e, n), query_lo, query_hi, colls)
    sel = select_scenes(items, bbox=(w, s, e, n), start=lo, end=hi, year=year,
                        max_cloud_cover=max_cloud_cover, max_scenes=max_scenes)
    typer.echo(json.dumps(sel.report(), indent=1))


def register(app: typer.Typer) -> None:
    """Add the ``catalog`` sub-commands (``index``, ``search``) to the CLI."""
    app.add_typer(catalog_app, name="catalog")

"""``glacierscale merge``: rebuild the inventory from the tile outputs of a run, at any time.

A tile counts once its ``item.json`` exists (the item is written last), so merging a run that is
still going, was interrupted or was resumed gives the inventory of the tiles finished so far.
"""

from __future__ import annotations

import io as _io
import json
import logging
import statistics
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any

import typer

log = logging.getLogger(__name__)

INVENTORY_KEY = "inventory/glaciers.parquet"
SUMMARY_KEY = "inventory/summary.csv"
EXPORT_FORMATS = ("gpkg", "fgb", "geojson")


def _item_date(props: dict[str, Any]) -> date | None:
    """Date of a tile item: its datetime, else the middle of start/end."""
    def parse(v: Any) -> datetime | None:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00")) if v else None

    dt = parse(props.get("datetime"))
    if dt is None:
        start, end = parse(props.get("start_datetime")), parse(props.get("end_datetime"))
        if start is None or end is None:
            return None
        dt = start + (end - start) / 2
    return dt.date()


def rebuild_inventory(out: str, *, reference: str | None = None, intersects: str | None = None,
                      date_pred: date | None = None, date_ref: date | None = None,
                      exports: Sequence[str] = (), min_area_m2: float = 5000.0,
                      write_stac: bool = True,
                      storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``tiles/*/outlines.parquet`` of the run at ``out`` into ``inventory/``.

    Writes ``inventory/glaciers.parquet`` (GeoParquet, EPSG:4326), ``inventory/summary.csv``
    (per region), any ``exports`` (gpkg, fgb, geojson) as ``inventory/glaciers.<ext>`` and the
    run's STAC ``collection.json``. With a ``reference``, glaciers get RGI ids and area change,
    and reference glaciers wholly inside the mapped area with no predicted ice are listed with
    zero area. Returns a summary dict.
    """
    import geopandas as gpd
    from shapely.geometry import shape
    from shapely.ops import unary_union

    from glacierscale.inventory import (
        attach_rgi,
        merge_tiles,
        missing_reference,
        read_outlines,
        region_summary,
    )
    from glacierscale.io import (
        Store,
        check_bucket,
        read_geoparquet,
        read_items,
        write_collection,
        write_geoparquet,
        write_vector,
    )

    bad = [e for e in exports if e not in EXPORT_FORMATS]
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; choose from {list(EXPORT_FORMATS)}")
    check_bucket(out, storage_options)
    store = Store(out, storage_options)
    keys = set(store.list("tiles/"))
    done = sorted(k.split("/")[1] for k in keys if k.endswith("/item.json"))
    pending = sorted({k.split("/")[1] for k in keys} - set(done))
    if not done:
        raise FileNotFoundError(
            f"no finished tiles under {store.url('tiles/')}; run `glacierscale run --out {out}` "
            "first (a tile is finished once its item.json exists)")
    frames = [read_geoparquet(store, f"tiles/{t}/outlines.parquet") for t in done
              if f"tiles/{t}/outlines.parquet" in keys]
    inventory = merge_tiles(frames, min_area_m2=min_area_m2)
    items = read_items(store)
    props = [json.loads(store.read_bytes(f"tiles/{t}/item.json")).get("properties", {})
             for t in done]
    if date_pred is None:
        dates = sorted(d for d in (_item_date(p) for p in props) if d is not None)
        date_pred = statistics.median_low(dates) if dates else None
    mapped = unary_union([shape(it.geometry) for it in items if it.geometry])
    if reference:
        ref = read_outlines(reference)
        divides = read_outlines(intersects) if intersects else None
        inventory = attach_rgi(inventory, ref, date_pred=date_pred, date_ref=date_ref,
                               intersects=divides)
        inventory = missing_reference(inventory, ref, mapped, date_pred=date_pred,
                                      date_ref=date_ref)
    written = [write_geoparquet(store, INVENTORY_KEY, gpd.GeoDataFrame(inventory))]
    summary = region_summary(inventory)
    buf = _io.StringIO()
    summary.to_csv(buf, index=False, float_format="%.6g")
    written.append(store.write_bytes_atomic(SUMMARY_KEY, buf.getvalue().encode()))
    for fmt in exports:
        written.append(write_vector(store, f"inventory/glaciers.{fmt}", inventory, fmt))
    if write_stac:
        written.append(write_collection(store, items))
    total = summary[summary["region"] == "total"]
    result = {
        "tiles_merged": len(done), "tiles_unfinished": len(pending),
        "glaciers": len(inventory),
        "area_km2": float(inventory["area_km2"].sum()) if len(inventory) else 0.0,
        "ref_area_km2": float(total["ref_area_km2"].iloc[0]) if reference and len(total)
        else None,
        "date_pred": date_pred.isoformat() if date_pred else None, "written": written,
    }
    log.info("merged %d tiles into %d glaciers", len(done), len(inventory))
    return result


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
    ) -> None:
        """Rebuild inventory/glaciers.parquet from tiles/*/outlines.parquet of a run."""
        result = rebuild_inventory(
            out, reference=reference, intersects=intersects,
            date_pred=_parse_date(date_pred, "--date-pred"),
            date_ref=_parse_date(date_ref, "--date-ref"),
            exports=[e.strip().lower() for e in export.split(",") if e.strip()],
            min_area_m2=min_area_m2)
        typer.echo(f"merged {result['tiles_merged']} tiles -> {result['glaciers']} glaciers, "
                   f"{result['area_km2']:.3f} km²")
        if result["tiles_unfinished"]:
            typer.echo(f"{result['tiles_unfinished']} tile(s) without item.json were left out "
                       "(unfinished)", err=True)
        typer.echo("\n".join(f"wrote {w}" for w in result["written"]))

"""Rebuild a run's inventory from its tile outputs: merge, RGI identity, summary, exports.

A tile counts once its ``item.json`` exists (the item is written last), so merging a run that is
still going, was interrupted or was resumed gives the inventory of the tiles finished so far.
A run merges its own tiles only (``tile_ids``); without that list every finished tile in the
output is merged, whatever run made it (``glacierscale merge``).
"""

from __future__ import annotations

import io as _io
import json
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any

import geopandas as gpd
import pystac
import shapely
from shapely.geometry import shape
from shapely.ops import unary_union

from glacierscale.inventory.merge import merge_tiles
from glacierscale.inventory.outlines import read_outlines
from glacierscale.inventory.rgi import attach_rgi, has_rgi_ids, missing_reference
from glacierscale.inventory.summary import region_summary
from glacierscale.io import (
    Store,
    check_bucket,
    read_geoparquet,
    write_collection,
    write_geoparquet,
    write_vector,
)

log = logging.getLogger(__name__)

INVENTORY_KEY = "inventory/glaciers.parquet"
SUMMARY_KEY = "inventory/summary.csv"
EXPORT_FORMATS = ("gpkg", "fgb", "geojson")


def item_date(props: dict[str, Any]) -> date | None:
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


def _read_item(store: Store, tile_id: str) -> pystac.Item:
    key = f"tiles/{tile_id}/item.json"
    return pystac.Item.from_dict(json.loads(store.read_bytes(key)), href=store.url(key),
                                 migrate=True)


def union_footprints(geometries: Iterable[Mapping[str, Any] | None]) -> Any:
    """Union (lon/lat) of tile items' GeoJSON footprints; None when there are none.

    Each footprint is made valid first: one that crosses the antimeridian or rounds a pole may
    come as a self-intersecting ring, and a union of those would fail the whole merge.
    """
    shapes = [shapely.make_valid(shape(g)) for g in geometries if g]
    return unary_union(shapes) if shapes else None


def finished_tiles(store: Store) -> list[str]:
    """Ids of the tiles under ``store`` whose outputs are complete (their item.json exists)."""
    return _finished(store.list("tiles/"))


def _finished(keys: Iterable[str]) -> list[str]:
    return sorted(k.split("/")[1] for k in keys if k.endswith("/item.json"))


def rebuild_inventory(out: str, *, reference: str | None = None, intersects: str | None = None,
                      date_pred: date | None = None, date_ref: date | None = None,
                      exports: Sequence[str] = (), min_area_m2: float = 5000.0,
                      write_stac: bool = True, tile_ids: Sequence[str] | None = None,
                      storage_options: dict[str, Any] | None = None,
                      client: Any | None = None) -> dict[str, Any]:
    """Merge ``tiles/*/outlines.parquet`` of the run at ``out`` into ``inventory/``.

    Writes ``inventory/glaciers.parquet`` (GeoParquet, EPSG:4326), ``inventory/summary.csv``
    (per region), any ``exports`` (gpkg, fgb, geojson) as ``inventory/glaciers.<ext>`` and the
    run's STAC ``collection.json``. With a ``reference``, glaciers get RGI ids and area change,
    and reference glaciers wholly inside the mapped area with no predicted ice are listed with
    zero area. ``tile_ids`` restricts the merge to those tiles (a run's own); finished tiles not
    in it are counted as ``tiles_other``. With a Dask ``client`` the merge and the RGI identity
    run on its cluster (:mod:`.cluster_merge`, :mod:`.cluster_rgi`: the same inventory); without
    one, in this process.
    Returns a summary dict.
    """
    bad = [e for e in exports if e not in EXPORT_FORMATS]
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; choose from {list(EXPORT_FORMATS)}")
    check_bucket(out, storage_options)
    store = Store(out, storage_options)
    keys = set(store.list("tiles/"))
    done = _finished(keys)
    pending = sorted({k.split("/")[1] for k in keys} - set(done))
    other: list[str] = []
    if tile_ids is not None:
        wanted = set(tile_ids)
        other = [t for t in done if t not in wanted]
        done = [t for t in done if t in wanted]
        pending = [t for t in pending if t in wanted]
    if not done and tile_ids is None:
        raise FileNotFoundError(
            f"no finished tiles under {store.url('tiles/')}; run `glacierscale run --out {out}` "
            "first (a tile is finished once its item.json exists)")
    with_outlines = [t for t in done if f"tiles/{t}/outlines.parquet" in keys]
    # Object stores answer many small reads in parallel far faster than one after another.
    with ThreadPoolExecutor(max_workers=16) as pool:
        items = list(pool.map(lambda t: _read_item(store, t), done))
        frames = [] if client is not None else list(pool.map(
            lambda t: read_geoparquet(store, f"tiles/{t}/outlines.parquet"), with_outlines))
    if client is not None:
        from glacierscale.inventory.cluster_merge import merge_inventory_on_cluster

        inventory = merge_inventory_on_cluster(client, store, with_outlines,
                                               min_area_m2=min_area_m2)
        merged_by = f"cluster of {len(client.scheduler_info().get('workers', {}))} workers"
    else:
        inventory = merge_tiles(frames, min_area_m2=min_area_m2)
        merged_by = "single process"
    if date_pred is None:
        dates = sorted(d for d in (item_date(it.properties) for it in items) if d is not None)
        date_pred = statistics.median_low(dates) if dates else None
    ref = read_outlines(reference) if reference else None
    if ref is not None and not has_rgi_ids(ref):
        raise ValueError(f"the reference {reference!r} has no RGI id column (RGIId or rgi_id); "
                         "merge without --reference, or pass RGI outlines")
    if ref is not None:
        divides = read_outlines(intersects) if intersects else None
        if client is not None:
            from glacierscale.inventory.cluster_rgi import attach_rgi_on_cluster

            inventory = attach_rgi_on_cluster(client, inventory, ref, date_pred=date_pred,
                                              date_ref=date_ref, intersects=divides)
        else:
            inventory = attach_rgi(inventory, ref, date_pred=date_pred, date_ref=date_ref,
                                   intersects=divides)
        mapped = union_footprints([it.geometry for it in items])
        inventory = missing_reference(inventory, ref, mapped, date_pred=date_pred,
                                      date_ref=date_ref)
    written = [write_geoparquet(store, INVENTORY_KEY, gpd.GeoDataFrame(inventory))]
    summary = region_summary(inventory)
    buf = _io.StringIO()
    summary.to_csv(buf, index=False, float_format="%.10g")
    written.append(store.write_bytes_atomic(SUMMARY_KEY, buf.getvalue().encode()))
    for fmt in exports:
        written.append(write_vector(store, f"inventory/glaciers.{fmt}", inventory, fmt))
    if write_stac:
        written.append(write_collection(store, items))
    total = summary[summary["region"] == "total"]
    result = {
        "tiles_merged": len(done), "tiles_unfinished": len(pending), "tiles_other": len(other),
        "glaciers": len(inventory),
        "area_km2": float(inventory["area_km2"].sum()) if len(inventory) else 0.0,
        "ref_area_km2": float(total["ref_area_km2"].iloc[0]) if reference and len(total)
        else None,
        "date_pred": date_pred.isoformat() if date_pred else None, "written": written,
        "merged_by": merged_by,
    }
    log.info("merged %d tiles into %d glaciers (%s)", len(done), len(inventory), merged_by)
    return result

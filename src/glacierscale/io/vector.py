"""Vector outputs: GeoParquet (primary), GeoPackage and FlatGeobuf exports, all atomic."""

from __future__ import annotations

import io as _io
import tempfile
from pathlib import Path

import geopandas as gpd

from glacierscale.io.store import Store

#: Export format name -> (pyogrio driver, file extension).
VECTOR_FORMATS = {"parquet": ("Parquet", ".parquet"), "gpkg": ("GPKG", ".gpkg"),
                  "fgb": ("FlatGeobuf", ".fgb"), "geojson": ("GeoJSON", ".geojson")}


def _check_gdf(gdf: gpd.GeoDataFrame, key: str) -> None:
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise TypeError(f"{key}: expected a GeoDataFrame, got {type(gdf).__name__}")
    if gdf.crs is None:
        raise ValueError(f"{key}: the GeoDataFrame has no CRS; set one with .set_crs(...)")


def geoparquet_bytes(gdf: gpd.GeoDataFrame) -> bytes:
    """``gdf`` serialized as GeoParquet (zstd, with a bbox covering column)."""
    _check_gdf(gdf, "GeoParquet")
    buf = _io.BytesIO()
    # The bbox covering column lets cloud readers skip row groups outside a query window.
    gdf.to_parquet(buf, index=False, compression="zstd", write_covering_bbox=True)
    return buf.getvalue()


def write_geoparquet(store: Store, key: str, gdf: gpd.GeoDataFrame) -> str:
    """Write ``gdf`` as GeoParquet (with a bbox covering column for row-group pruning), atomic."""
    _check_gdf(gdf, key)
    return store.write_bytes_atomic(key, geoparquet_bytes(gdf))


def read_geoparquet(store: Store, key: str) -> gpd.GeoDataFrame:
    """Read GeoParquet at ``key``; the bbox covering column (if any) is dropped."""
    gdf = gpd.read_parquet(_io.BytesIO(store.read_bytes(key)))
    return gdf.drop(columns=["bbox"], errors="ignore")


def write_vector(store: Store, key: str, gdf: gpd.GeoDataFrame, fmt: str | None = None) -> str:
    """Export ``gdf`` to ``key`` as GeoParquet, GeoPackage, FlatGeobuf or GeoJSON (atomic).

    The format comes from ``fmt`` (parquet, gpkg, fgb, geojson) or from the key's extension.
    """
    _check_gdf(gdf, key)
    if fmt is None:
        ext = Path(key).suffix.lower()
        fmt = next((k for k, (_, e) in VECTOR_FORMATS.items() if e == ext), None)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {key!r}; use one of "
                             f"{', '.join(e for _, e in VECTOR_FORMATS.values())}")
    fmt = fmt.lower()
    if fmt not in VECTOR_FORMATS:
        raise ValueError(f"unknown vector format {fmt!r}; choose from {sorted(VECTOR_FORMATS)}")
    if fmt == "parquet":
        return write_geoparquet(store, key, gdf)
    driver, ext = VECTOR_FORMATS[fmt]
    out = gdf.copy()
    for col in out.columns:
        # GPKG/FGB have no list or object-of-mixed types: store such columns as text.
        if col != out.geometry.name and out[col].dtype == object:
            out[col] = out[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    with tempfile.TemporaryDirectory(prefix="glacierscale-vec-") as tmp:
        local = Path(tmp) / f"out{ext}"
        layer = Path(key).stem if fmt == "gpkg" else None
        out.to_file(local, driver=driver, engine="pyogrio", layer=layer)
        return store.put_file_atomic(local, key)

"""Read glacier outlines from a file or URL: shapefile, GeoPackage, GeoParquet, zip, FlatGeobuf.

The one reader of vector inputs: :func:`read_outlines` for outlines that must carry a CRS (the
inventory, evaluation), :func:`read_table` also for centroid tables and plain attribute files
(tile planning reads RGI attribute CSVs as well as outlines).
"""

from __future__ import annotations

import io as _io
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
import geopandas as gpd
import pandas as pd

_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def _is_remote(path: str) -> bool:
    scheme = urlsplit(path).scheme
    return len(scheme) > 1 and scheme != "file"


def read_table(path_or_url: str) -> pd.DataFrame:
    """Outlines (a GeoDataFrame) or a plain table (CSV, attribute-only Parquet) from a path or URL.

    CSVs (optionally compressed) and Parquet files without geo metadata come back as DataFrames;
    every vector format :func:`read_outlines` knows comes back as a GeoDataFrame, unchecked.
    """
    src = str(path_or_url)
    lower = urlsplit(src).path.lower() if _is_remote(src) else src.lower()
    if not _is_remote(src) and not Path(src.removeprefix("file://")).expanduser().exists():
        raise FileNotFoundError(f"{src!r} not found; pass RGI outlines (shapefile, .gpkg, "
                                ".parquet, .fgb, .zip) or a CenLon/CenLat CSV, as a path or URL")
    if lower.endswith((".csv", ".csv.gz", ".txt")):
        with fsspec.open(src, "rb", compression="infer") as f:
            return pd.read_csv(f)
    if lower.endswith((".parquet", ".geoparquet")):
        with fsspec.open(src, "rb") as f:
            data = f.read()
        try:
            return gpd.read_parquet(_io.BytesIO(data))
        except ValueError:  # a plain table (no geo metadata), e.g. RGI attributes
            return pd.read_parquet(_io.BytesIO(data))
    return _read_vector(src)


def read_outlines(path_or_url: str) -> gpd.GeoDataFrame:
    """Outlines as a GeoDataFrame from a local path or any fsspec URL.

    Shapefiles (with their .dbf/.prj/... beside them), zipped shapefiles, GeoPackage,
    FlatGeobuf, GeoJSON and GeoParquet are recognised by extension. Raises with the fix when the
    file is missing or carries no CRS.
    """
    src = str(path_or_url)
    if not _is_remote(src) and not Path(src.removeprefix("file://")).expanduser().exists():
        raise FileNotFoundError(f"outlines {src!r} not found; pass a shapefile, .gpkg, .parquet, "
                                ".fgb or .zip path or URL")
    table = read_table(src)
    if not isinstance(table, gpd.GeoDataFrame):
        raise ValueError(f"outlines {src!r} hold no geometry; pass glacier polygons")
    return _checked(table, src)


def _read_vector(src: str) -> gpd.GeoDataFrame:
    if _is_remote(src):
        return _read_remote(src)
    path = Path(src.removeprefix("file://")).expanduser()
    if path.suffix.lower() == ".zip":
        return gpd.read_file(f"zip://{path}", engine="pyogrio")
    return gpd.read_file(path, engine="pyogrio")


def _read_remote(url: str) -> gpd.GeoDataFrame:
    suffix = Path(urlsplit(url).path).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="glacierscale-outlines-") as tmp:
        fs, path = fsspec.core.url_to_fs(url)
        # The name without the query: a signed URL's token must not end up in a file name.
        name = Path(urlsplit(url).path).name
        if suffix == ".shp":
            # A shapefile is several files; fetch the ones that exist next to it.
            stem = path[: -len(".shp")]
            for ext in _SIDECARS:
                if fs.exists(stem + ext):
                    fs.get_file(stem + ext, str(Path(tmp) / (Path(stem).name + ext)))
        else:
            fs.get_file(path, str(Path(tmp) / name))
        return _read_vector(str(Path(tmp) / name))


def _checked(gdf: gpd.GeoDataFrame, src: str) -> gpd.GeoDataFrame:
    if gdf.crs is None:
        raise ValueError(f"outlines {src!r} have no CRS; add a .prj (or set it with "
                         "gdf.set_crs(...)) so they can be compared with the imagery")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].reset_index(drop=True)
    if not gdf.geometry.is_valid.all():
        gdf = gdf.set_geometry(gdf.geometry.make_valid())
    return gdf

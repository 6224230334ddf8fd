"""Read glacier outlines from a file or URL: shapefile, GeoPackage, GeoParquet, zip, FlatGeobuf."""

from __future__ import annotations

import io as _io
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
import geopandas as gpd

_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def _is_remote(path: str) -> bool:
    scheme = urlsplit(path).scheme
    return len(scheme) > 1 and scheme != "file"


def read_outlines(path_or_url: str) -> gpd.GeoDataFrame:
    """Outlines as a GeoDataFrame from a local path or any fsspec URL.

    Shapefiles (with their .dbf/.prj/... beside them), zipped shapefiles, GeoPackage,
    FlatGeobuf, GeoJSON and GeoParquet are recognised by extension. Raises with the fix when the
    file is missing or carries no CRS.
    """
    src = str(path_or_url)
    if _is_remote(src):
        return _read_remote(src)
    path = Path(src.removeprefix("file://")).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"outlines {src!r} not found; pass a shapefile, .gpkg, .parquet, "
                                ".fgb or .zip path or URL")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        gdf = gpd.read_parquet(path)
    elif suffix == ".zip":
        gdf = gpd.read_file(f"zip://{path}", engine="pyogrio")
    else:
        gdf = gpd.read_file(path, engine="pyogrio")
    return _checked(gdf, src)


def _read_remote(url: str) -> gpd.GeoDataFrame:
    suffix = Path(urlsplit(url).path).suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        with fsspec.open(url, "rb") as f:
            return _checked(gpd.read_parquet(_io.BytesIO(f.read())), url)
    with tempfile.TemporaryDirectory(prefix="glacierscale-outlines-") as tmp:
        fs, path = fsspec.core.url_to_fs(url)
        name = Path(path).name
        if suffix == ".shp":
            # A shapefile is several files; fetch the ones that exist next to it.
            stem = path[: -len(".shp")]
            for ext in _SIDECARS:
                if fs.exists(stem + ext):
                    fs.get_file(stem + ext, str(Path(tmp) / (Path(stem).name + ext)))
        else:
            fs.get_file(path, str(Path(tmp) / name))
        return read_outlines(str(Path(tmp) / name))


def _checked(gdf: gpd.GeoDataFrame, src: str) -> gpd.GeoDataFrame:
    if gdf.crs is None:
        raise ValueError(f"outlines {src!r} have no CRS; add a .prj (or set it with "
                         "gdf.set_crs(...)) so they can be compared with the imagery")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].reset_index(drop=True)
    if not gdf.geometry.is_valid.all():
        gdf = gdf.set_geometry(gdf.geometry.make_valid())
    return gdf

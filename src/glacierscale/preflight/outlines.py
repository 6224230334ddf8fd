"""Preflight of an outlines AOI: the file exists, reads, holds glaciers of a usable kind."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from glacierscale.preflight.errors import PreflightError

_VECTOR_POLYGONS = ("Polygon", "MultiPolygon")
_VECTOR_POINTS = ("Point", "MultiPoint")


def _is_remote(path: str) -> bool:
    scheme = urlsplit(path).scheme
    return len(scheme) > 1 and scheme != "file"


def check_outlines(path: str) -> None:
    """An outlines file exists and holds polygons, glacier points or a CenLon/CenLat table."""
    culprit = f"--aoi {path!r}"
    if _is_remote(path):
        import fsspec

        try:
            fs, p = fsspec.core.url_to_fs(path)
            found = fs.exists(p)
        except Exception as exc:  # a missing filesystem package, refused credentials, no network
            raise PreflightError(f"{culprit} cannot be checked ({type(exc).__name__}: {exc}); "
                                 "check the URL and its credentials", "aoi") from exc
        if not found:
            raise PreflightError(f"{culprit} does not exist; give W,S,E,N or an existing outlines "
                                 "file", "aoi")
        return
    local = Path(path.removeprefix("file://")).expanduser()
    if not local.exists():
        raise PreflightError(f"{culprit} is neither a box W,S,E,N (four numbers, degrees) nor an "
                             "existing outlines file (shapefile, .gpkg, .parquet, .zip, CSV)",
                             "aoi")
    if local.name.lower().endswith((".csv", ".csv.gz", ".txt", ".parquet", ".geoparquet")):
        _check_table(local, culprit)
    else:
        _check_vector(local, culprit)


def _check_table(path: Path, culprit: str) -> None:
    """A CSV, or a Parquet file: GeoParquet outlines, or a table with CenLon/CenLat columns."""
    try:
        if path.name.lower().endswith((".parquet", ".geoparquet")):
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
            rows, names, geo = meta.num_rows, list(meta.schema.names), (
                meta.metadata or {}).get(b"geo")
        else:
            import pandas as pd

            head = pd.read_csv(path, nrows=5, compression="infer")
            rows, names, geo = len(head), list(head.columns), None
    except Exception as exc:
        raise PreflightError(f"{culprit} cannot be read ({type(exc).__name__}); give outlines "
                             "or an RGI attribute CSV with CenLon/CenLat", "aoi") from exc
    if rows == 0:
        raise PreflightError(f"{culprit} holds no glaciers (no rows)", "aoi")
    if geo is not None:
        import json

        columns = json.loads(geo).get("columns", {})
        _check_geometry_kinds({t.removesuffix(" Z") for c in columns.values()
                               for t in c.get("geometry_types", [])}, culprit)
        return
    cols = {c.lower() for c in names}
    if not ({"cenlon", "lon", "longitude"} & cols and {"cenlat", "lat", "latitude"} & cols):
        raise PreflightError(f"{culprit} has neither outlines nor CenLon/CenLat columns (it has "
                             f"{', '.join(names[:8])}); give glacier outlines or an RGI "
                             "attribute CSV", "aoi")


def _check_vector(path: Path, culprit: str) -> None:
    import pyogrio

    target = f"zip://{path}" if path.suffix.lower() == ".zip" else str(path)
    try:
        info = pyogrio.read_info(target)
    except Exception as exc:
        raise PreflightError(f"{culprit} cannot be read as a vector file "
                             f"({str(exc).splitlines()[0][:160]}); give a shapefile, .gpkg, "
                             ".fgb, .geojson, .parquet or .zip of glacier outlines", "aoi") from exc
    if int(info.get("features") or 0) == 0:
        raise PreflightError(f"{culprit} holds no features; give a file with glacier outlines",
                             "aoi")
    kind = str(info.get("geometry_type") or "Unknown").removesuffix(" Z")
    _check_geometry_kinds({kind} if kind != "Unknown" else set(), culprit)


def _check_geometry_kinds(kinds: set[str], culprit: str) -> None:
    if not kinds or kinds & {*_VECTOR_POLYGONS, *_VECTOR_POINTS, "Unknown", "GeometryCollection"}:
        return
    raise PreflightError(f"{culprit} holds {'/'.join(sorted(kinds))} geometries, not glacier "
                         "polygons; give outlines (polygons) or glacier points", "aoi")


# --------------------------------------------------------------------------- model

"""read_outlines: every supported container, local and through fsspec URLs."""

from __future__ import annotations

import shutil
import uuid
import zipfile
from pathlib import Path

import fsspec
import geopandas as gpd
import pytest
from shapely.geometry import box

from glacierscale.inventory import read_outlines


@pytest.fixture
def outlines() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"RGIId": ["RGI60-01.00001", "RGI60-01.00002"], "Area": [1.0, 2.0]},
                            geometry=[box(0, 0, 0.01, 0.01), box(0.02, 0, 0.03, 0.01)],
                            crs="EPSG:4326")


@pytest.mark.parametrize("ext, driver", [(".shp", "ESRI Shapefile"), (".gpkg", "GPKG"),
                                         (".fgb", "FlatGeobuf"), (".geojson", "GeoJSON")])
def test_files(tmp_path: Path, outlines: gpd.GeoDataFrame, ext: str, driver: str) -> None:
    path = tmp_path / f"o{ext}"
    outlines.to_file(path, driver=driver)
    got = read_outlines(str(path))
    # FlatGeobuf writes a spatial index and returns features in its order.
    assert sorted(got.RGIId) == list(outlines.RGIId) and got.crs.to_epsg() == 4326


def test_parquet_zip_and_memory_url(tmp_path: Path, outlines: gpd.GeoDataFrame) -> None:
    outlines.to_parquet(tmp_path / "o.parquet")
    assert len(read_outlines(str(tmp_path / "o.parquet"))) == 2
    shp = tmp_path / "shp"
    shp.mkdir()
    outlines.to_file(shp / "o.shp")
    with zipfile.ZipFile(tmp_path / "o.zip", "w") as z:
        for f in shp.iterdir():
            z.write(f, f.name)
    assert len(read_outlines(str(tmp_path / "o.zip"))) == 2
    # Any fsspec URL: a shapefile with its sidecar files, and GeoParquet.
    root = f"memory://outlines-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for f in shp.iterdir():
        fs.pipe_file(f"{root}/{f.name}", f.read_bytes())
    fs.pipe_file(f"{root}/o.parquet", (tmp_path / "o.parquet").read_bytes())
    assert list(read_outlines(f"{root}/o.shp").RGIId) == list(outlines.RGIId)
    assert len(read_outlines(f"{root}/o.parquet")) == 2


def test_real_rgi_files(shared_data: Path) -> None:
    g = read_outlines(str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"))
    assert len(g) == 86 and g.geometry.is_valid.all()


def test_missing_file_and_missing_crs(tmp_path: Path, outlines: gpd.GeoDataFrame) -> None:
    with pytest.raises(FileNotFoundError, match="not found; pass a shapefile"):
        read_outlines(str(tmp_path / "nope.shp"))
    outlines.to_file(tmp_path / "o.shp")
    (tmp_path / "o.prj").unlink()
    with pytest.raises(ValueError, match=r"no CRS; add a \.prj"):
        read_outlines(str(tmp_path / "o.shp"))
    shutil.rmtree(tmp_path)

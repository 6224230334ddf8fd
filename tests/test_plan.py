"""Planning from real RGI data: reading inputs, ownership, the GeoParquet plan, CLI, estimate."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import fsspec
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
import typer
from shapely.geometry import Polygon
from typer.testing import CliRunner

from glacierscale.cli.grid import register
from glacierscale.config import GridConfig
from glacierscale.core.estimate import FILL, SHAPE_FACTOR, estimate_region
from glacierscale.plan import (
    estimate_global_tiles,
    plan_tiles,
    read_glaciers,
    read_plan,
    sidecar_paths,
    write_plan,
)

GRID = GridConfig()
OUTLINES = ["everest/15_rgi60_glacier_outlines.gpkg",
            "outlines_dem/exploradores/17_rgi60_glacier_outlines.gpkg",
            "outlines_dem/iceland_icecap/RGI6_icecap.shp",
            "outlines_dem/oetztal/rgi_oetztal.shp",
            "outlines_dem/oetztal/rgi7g_hef_complex.shp"]


def _reference_points(data: Path) -> gpd.GeoDataFrame:
    """The ~800 reference glaciers of the three link tables, as points with RGI 6 ids."""
    g = data / "global"
    w = pd.read_csv(g / "rgi_wgms_links_20220112.csv")
    le = pd.read_csv(g / "rgi_leclercq_links_2014_RGIV6.csv")
    gt = pd.read_csv(g / "rgi_glathida_links.csv")
    df = pd.concat([
        pd.DataFrame({"RGIId": w.RGI60_ID, "lon": w.CenLon, "lat": w.CenLat}),
        pd.DataFrame({"RGIId": le.RGI_ID, "lon": le.LON, "lat": le.LAT}),
        pd.DataFrame({"RGIId": gt.RGI60_ID, "lon": gt.GTD_LON, "lat": gt.GTD_LAT}),
    ], ignore_index=True)
    return gpd.GeoDataFrame(df[["RGIId"]], geometry=gpd.points_from_xy(df.lon, df.lat),
                            crs=4326)


def test_athabasca_box_gives_the_10m_tiles_of_32611() -> None:
    plan = plan_tiles("-117.30,52.16,-117.20,52.22", GRID)
    assert [t.tile_id for t in plan.tiles] == [
        "32611_0046_0411", "32611_0047_0411", "32611_0046_0412", "32611_0047_0412"]
    assert all(t.resolution == 10.0 and t.size_px == 1024 and t.halo_px == 64 for t in plan.tiles)
    assert plan_tiles((-117.30, 52.16, -117.20, 52.22), GRID).tiles == plan.tiles
    box = shapely.box(-117.30, 52.16, -117.20, 52.22)
    assert shapely.union_all(plan.frame.geometry.values).covers(box)
    assert plan.summary["tiles"] == 4 and plan.glaciers is None


@pytest.mark.integration
def test_reference_glaciers_worldwide(shared_data: Path) -> None:
    pts = _reference_points(shared_data)
    plan = plan_tiles(pts, GRID)
    g, f = plan.glaciers, plan.frame
    assert g is not None and len(g) == len(pts)
    # every glacier in exactly one tile, whose core footprint holds its point
    assert f["n_glaciers"].sum() == len(g)
    own = f.set_index("tile_id").loc[g["tile_id"]]
    dist = shapely.distance(own.geometry.values, shapely.points(g["lon"], g["lat"]))
    assert dist.max() < 1e-9
    assert shapely.is_valid(f.geometry.values).all()
    widths = [b[2] - b[0] for b in shapely.bounds(f.geometry.values)]
    assert max(widths) < 1.0  # no footprint wraps around the globe
    per = plan.summary["per_region"]
    assert sorted(per) == [f"{i:02d}" for i in range(1, 20)]
    assert sum(r["glaciers"] for r in per.values()) == len(g)
    assert set(f["epsg"]) >= {32619, 32720}  # Ellesmere (82N) and the Antarctic Peninsula
    # the same plan from a shuffled input, and the WGMS CSV read in place by path
    again = plan_tiles(pts.sample(frac=1.0, random_state=3), GRID)
    pd.testing.assert_frame_equal(pd.DataFrame(again.frame), pd.DataFrame(plan.frame))
    wgms = plan_tiles(str(shared_data / "global" / "rgi_wgms_links_20220112.csv"), GRID)
    assert wgms.summary["glaciers"] == 290 and wgms.summary["per_region"]["19"]["glaciers"] == 5


@pytest.mark.integration
@pytest.mark.parametrize("name", [*OUTLINES, "outlines_dem/columbia/01_rgi60_Columbia.shp"])
def test_real_outlines_are_covered_and_owned_once(shared_data: Path, name: str) -> None:
    path = shared_data / name
    plan = plan_tiles(str(path), GRID)
    outlines = gpd.read_file(path).to_crs(4326)
    g = plan.glaciers
    assert g is not None and len(g) == len(outlines) and g["glacier_id"].is_unique
    cores = shapely.union_all(plan.frame.geometry.values)
    missing = shapely.area(shapely.difference(outlines.geometry.values, cores))
    assert missing.max() < 1e-12  # every bit of ice lies in some tile core
    assert plan.frame["n_glaciers"].sum() == len(g)
    # the representative point is inside the outline and inside its owner's core
    by_id = outlines.set_index(outlines.columns[[c.lower() in ("rgiid", "rgi_id")
                                                 for c in outlines.columns]][0])
    pts = shapely.points(g["lon"], g["lat"])
    assert shapely.covers(by_id.loc[g["glacier_id"]].geometry.values, pts).all()
    area_in = outlines[next(c for c in outlines.columns if c.lower() in ("area", "area_km2"))]
    assert plan.summary["glacier_km2"] == pytest.approx(area_in.sum(), abs=1e-3)
    assert plan.summary["core_km2"] >= plan.summary["glacier_km2"]


@pytest.mark.integration
def test_columbia_glacier_spans_many_tiles(shared_data: Path) -> None:
    plan = plan_tiles(str(shared_data / "outlines_dem/columbia/01_rgi60_Columbia.shp"), GRID)
    assert plan.glaciers is not None
    assert int(plan.glaciers["n_tiles"].iloc[0]) == len(plan.tiles) > 10
    assert plan.frame["n_glaciers"].sum() == 1


def _wrapped_glacier() -> gpd.GeoDataFrame:
    # An outline across the antimeridian stored with wrapped longitudes (as in the Chukotka data).
    ring = Polygon([(179.9, 66.0), (-179.9, 66.0), (-179.9, 66.05), (179.9, 66.05)])
    return gpd.GeoDataFrame({"rgi_id": ["RGI2000-v7.0-G-10-00001"], "area_km2": [5.0]},
                            geometry=[ring], crs=4326)


def test_glacier_across_the_antimeridian_is_planned_on_both_sides() -> None:
    plan = plan_tiles(_wrapped_glacier(), GRID)
    assert set(plan.frame["epsg"]) == {32601, 32660}
    assert plan.frame["n_glaciers"].sum() == 1
    assert plan.frame["regions"].eq("10").all()
    halo = plan.frame["halo_footprint"].values
    assert any(g.geom_type == "MultiPolygon" for g in halo)  # split, never wrapped
    assert max(b[2] - b[0] for p in halo for b in shapely.bounds(shapely.get_parts(p))) < 2.0


def test_filters_and_clear_errors(tmp_path: Path) -> None:
    pts = gpd.GeoDataFrame(
        {"RGIId": ["RGI60-11.00001", "RGI60-11.00002", "RGI60-01.00001"]},
        geometry=gpd.points_from_xy([10.8, 7.9, -147.0], [46.8, 46.0, 61.2]), crs=4326)
    assert len(plan_tiles(pts, GRID, regions=["11"]).glaciers) == 2  # type: ignore[arg-type]
    one = plan_tiles(pts, GRID, glacier_ids=["RGI60-01.00001"])
    assert set(one.frame["epsg"]) == {32606}
    boxed = plan_tiles(pts, GRID, bbox=(7.0, 45.0, 9.0, 47.0))
    assert boxed.summary["glaciers"] == 1
    with pytest.raises(ValueError, match=r"no glaciers in regions \['13'\].*\['01', '11'\]"):
        plan_tiles(pts, GRID, regions=["13"])
    with pytest.raises(ValueError, match="glacier-ids"):
        plan_tiles(pts, GRID, glacier_ids=["nope"])
    with pytest.raises(FileNotFoundError, match="CenLon/CenLat"):
        plan_tiles(str(tmp_path / "missing.gpkg"), GRID)
    bad = tmp_path / "table.csv"
    bad.write_text("name,x\na,1\n")
    with pytest.raises(ValueError, match="CenLon/CenLat"):
        plan_tiles(str(bad), GRID)
    with pytest.raises(ValueError, match="W,S,E,N"):
        plan_tiles("1,2,3", GRID)


@pytest.mark.integration
def test_zip_csv_and_fsspec_inputs_give_the_same_plan(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "outlines_dem/oetztal"
    direct = plan_tiles(str(src / "rgi_oetztal.shp"), GRID)
    zpath = tmp_path / "oetztal.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in src.glob("rgi_oetztal.*"):
            z.write(p, p.name)
    assert plan_tiles(str(zpath), GRID).tiles == direct.tiles
    mem = fsspec.filesystem("memory")
    mem.pipe("/inputs/oetztal.zip", zpath.read_bytes())
    assert plan_tiles("memory://inputs/oetztal.zip", GRID).tiles == direct.tiles
    # the attribute table alone (CenLon/CenLat + Area) plans the glaciers' tiles too
    attrs = pd.DataFrame(gpd.read_file(src / "rgi_oetztal.shp").drop(columns="geometry"))
    csv = tmp_path / "attrs.csv"
    attrs.to_csv(csv, index=False)
    from_csv = plan_tiles(str(csv), GRID)
    assert from_csv.glaciers is not None
    assert from_csv.summary["glaciers"] == direct.summary["glaciers"]
    assert {t.tile_id for t in direct.tiles} & {t.tile_id for t in from_csv.tiles}


@pytest.mark.integration
def test_write_and_read_back_local_and_memory(shared_data: Path, tmp_path: Path) -> None:
    plan = plan_tiles(str(shared_data / OUTLINES[0]), GRID)
    for out in (str(tmp_path / "plan" / "tiles.parquet"), "memory://plans/everest/tiles.parquet"):
        write_plan(plan, out)
        back = read_plan(out)
        assert back.tiles == plan.tiles and back.summary == json.loads(json.dumps(plan.summary))
        assert back.glaciers is not None and back.glaciers.equals(plan.glaciers)
        assert back.frame.geometry.geom_equals_exact(plan.frame.geometry, 0).all()
        assert isinstance(back.frame["halo_footprint"], gpd.GeoSeries)
    local = tmp_path / "plan" / "tiles.parquet"
    geo = json.loads(pq.read_schema(local).metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and "halo_footprint" in geo["columns"]
    side = sidecar_paths(str(local))
    assert Path(side["md"]).read_text().startswith("# Tile plan")
    assert not list(local.parent.glob(".tmp-*"))  # nothing half-written left behind


@pytest.mark.integration
def test_cli_grid_writes_the_plan_and_reports(shared_data: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    out = tmp_path / "tiles.parquet"
    res = runner.invoke(app, ["--outlines", str(shared_data / OUTLINES[0]), "--regions", "15",
                              "--tile-size-px", "512", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "# Tile plan" in res.output and "| 15 | 86 |" in res.output
    plan = read_plan(str(out))
    assert plan.tiles[0].size_px == 512 and len(plan.tiles) == plan.summary["tiles"]
    res = runner.invoke(app, ["--bbox", "-117.30,52.16,-117.20,52.22", "--out", str(out)])
    assert res.exit_code == 0 and len(read_plan(str(out)).tiles) == 4
    res = runner.invoke(app, ["--estimate"])
    assert res.exit_code == 0 and json.loads(res.output)["glaciers"] == 274531
    res = runner.invoke(app, ["--outlines", str(shared_data / OUTLINES[0]), "--regions", "11",
                              "--out", str(out)])
    assert res.exit_code == 1 and "no glaciers in regions" in res.output
    res = runner.invoke(app, ["--out", str(out)])
    assert res.exit_code == 2 and "--outlines" in res.output


@pytest.mark.integration
def test_estimate_counts_every_glacier_once(shared_data: Path) -> None:
    est = estimate_global_tiles(GRID)
    assert est["glaciers"] == 274531  # the "Global" row is not added again
    assert est["tiles_low"] <= est["tiles"] <= est["tiles_high"]
    assert est["per_region"]["20"]["tiles"] == 0
    o1_csv = shared_data / "global" / "RGI2000-v7.0-G-o1region-summary.csv"
    o1 = estimate_global_tiles(GRID, str(o1_csv))
    assert o1["glaciers"] == 274531
    assert o1["tiles"] == pytest.approx(est["tiles"], rel=0.5)
    coarse = estimate_global_tiles(GridConfig(resolution=30.0))
    assert coarse["tiles"] < est["tiles"] / 3


@pytest.mark.integration
def test_estimate_constants_match_real_outlines(shared_data: Path) -> None:
    """SHAPE_FACTOR and FILL are what the real samples show, and the estimate is near reality."""
    shapes, fills = [], []
    for name in OUTLINES:
        gdf = gpd.read_file(shared_data / name)
        proj = gdf.to_crs(gdf.estimate_utm_crs())
        area, per = proj.area.to_numpy(), proj.length.to_numpy()
        shapes += list(per / (2 * np.pi * np.sqrt(area / np.pi)))
        tiles = len(plan_tiles(str(shared_data / name), GRID).tiles)
        est = estimate_region(len(gdf), area.sum() / 1e6, 10240.0, GRID.buffer_m)
        fills.append(est["low"] / tiles)
        assert est["low"] <= tiles <= est["high"]
        assert 0.5 < est["central"] / tiles < 2.0
    assert np.median(shapes) == pytest.approx(SHAPE_FACTOR, rel=0.05)
    assert np.median(fills) == pytest.approx(FILL, rel=0.05)


def test_read_glaciers_normalises_rgi6_and_rgi7_columns() -> None:
    rgi7 = gpd.GeoDataFrame({"rgi_id": ["RGI2000-v7.0-G-13-00042"], "o1region": ["13"],
                             "o2region": ["13-01"], "area_km2": [1.5]},
                            geometry=[shapely.box(77.0, 39.0, 77.01, 39.01)], crs=4326)
    g = read_glaciers(rgi7)
    assert g.loc[0, ["glacier_id", "o1region", "o2region", "area_km2"]].tolist() == [
        "RGI2000-v7.0-G-13-00042", "13", "13-01", 1.5]
    rgi6 = pd.DataFrame({"RGIId": ["RGI60-07.00001"], "CenLon": [15.0], "CenLat": [78.0],
                         "Area": [2.0]})
    g6 = read_glaciers(rgi6)
    assert g6.loc[0, ["o1region", "lon", "lat"]].tolist() == ["07", 15.0, 78.0]
    assert g6["geometry"].isna().all()


def test_tiles_cut_by_a_zone_border_are_flagged_and_keep_their_share() -> None:
    # two glaciers 50 m either side of the 32632/32633 border at the equator and at 70N
    lon = [11.9995, 12.0005, 11.9995, 12.0005]
    lat = [0.5, 0.5, 70.0, 70.0]
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs=4326)
    plan = plan_tiles(pts, GRID)
    f = plan.frame
    assert set(f["epsg"]) == {32632, 32633} and f["clipped"].all()
    assert (f["core_km2"] < 0.999 * 10.24**2).all()
    g = plan.glaciers
    assert g is not None
    owners = g.sort_values(["lat", "lon"])["tile_id"].str[:5].tolist()
    assert owners == ["32632", "32633", "32632", "32633"]
    # without ids the glaciers are numbered by position, whatever the input order
    again = plan_tiles(pts.iloc[::-1], GRID)
    assert again.glaciers is not None and again.glaciers.equals(g)

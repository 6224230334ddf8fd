"""Real RGI outlines rasterised onto tiles, vectorized, merged and re-identified.

Everest (86 RGI6 glaciers, UTM 45), the Iceland ice cap (61 glaciers), Columbia Glacier (one
glacier of ~800-900 km²) and Oetztal (RGI5 with its intersects) are read in place from the shared
sample data; an ice cap straddling the UTM 45/46 border is generated for the cross-zone merge.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import CRS
from rasterio.features import rasterize
from shapely.geometry import LineString, Point, box

from glacierscale.core.tiles import TileSpec, cells_covering, local_utm_epsg
from glacierscale.inventory import (
    attach_rgi,
    equal_area_crs,
    merge_tiles,
    read_outlines,
    reference_ids,
    vectorize_tile,
)

pytestmark = pytest.mark.integration


def _tile_and_merge(ref: gpd.GeoDataFrame, size: int, res: float,
                    epsg: int | None = None) -> tuple[gpd.GeoDataFrame, int]:
    """Rasterise ``ref`` onto the tiles covering it, vectorize each tile, merge."""
    if epsg is None:
        c = ref.to_crs(4326).union_all().centroid
        epsg = local_utm_epsg(c.x, c.y)
    utm = ref.to_crs(epsg)
    frames = []
    cells = cells_covering(epsg, tuple(utm.total_bounds), size * res)
    for col, row in cells:
        t = TileSpec(epsg, col, row, size, res, 0)
        mask = rasterize(((g, 1) for g in utm.geometry), out_shape=(size, size),
                         transform=t.core_transform, dtype="uint8")
        prob = np.where(mask == 1, 0.9, 0.1).astype("float32")
        frames.append(vectorize_tile(mask, prob, transform=t.core_transform, crs=t.crs,
                                     tile_id=t.tile_id))
    return merge_tiles(frames), len(cells)


def _ref_area_km2(ref: gpd.GeoDataFrame) -> float:
    ea = equal_area_crs([tuple(ref.to_crs(4326).total_bounds)])
    return float(ref.to_crs(ea).area.sum() / 1e6)


def _divide_crossing(out: gpd.GeoDataFrame, ref: gpd.GeoDataFrame) -> float:
    """Largest share of an output glacier lying in *another* reference glacier (outside its own)."""
    ea = equal_area_crs([tuple(ref.to_crs(4326).total_bounds)])
    r = ref.to_crs(ea)
    r.index = reference_ids(ref).to_numpy()
    geoms = r.geometry.to_numpy()
    tree = shapely.STRtree(geoms)
    worst = 0.0
    for _, row in out[~out.is_new].to_crs(ea).iterrows():
        own = r.loc[row.rgi_id].geometry
        near = [geoms[j] for j in tree.query(row.geometry, predicate="intersects")
                if r.index[j] != row.rgi_id]
        if near:
            others = shapely.union_all(near).difference(own)
            worst = max(worst, row.geometry.intersection(others).area / row.geometry.area)
    return worst


def test_everest_86_glaciers_split_across_tiles_and_merged(shared_data: Path) -> None:
    ref = read_outlines(str(shared_data / "everest" / "15_rgi60_glacier_outlines.gpkg"))
    assert len(ref) == 86
    inv, n_tiles = _tile_and_merge(ref, size=512, res=30.0, epsg=32645)
    assert n_tiles >= 9 and inv.n_tiles.max() >= 4  # glaciers really were cut by tiles
    out = attach_rgi(inv, ref, date_pred=date(2020, 10, 30), date_ref=None)
    ref_km2 = _ref_area_km2(ref)
    assert out.area_km2.sum() == pytest.approx(ref_km2, rel=0.01)
    assert inv.area_km2.sum() == pytest.approx(ref_km2, rel=0.01)
    assert sorted(out.rgi_id) == sorted(ref.RGIId) and not out.is_new.any()  # each id once
    assert _divide_crossing(out, ref) < 1e-4
    big = out[out.ref_area_km2 > 2.0]
    assert ((big.area_km2 / big.ref_area_km2 - 1).abs() < 0.03).all()
    # Same outlines twenty years on: no real change, and a rate that says so.
    assert out.area_change_pct_per_yr.abs().median() < 0.05
    bgn = dict(zip(ref.RGIId, ref.BgnDate, strict=True))
    assert all(d.strftime("%Y%m%d") == bgn[i] for i, d in zip(out.rgi_id, out.date_ref,
                                                              strict=True))


def test_iceland_ice_cap_over_many_tiles(shared_data: Path) -> None:
    ref = read_outlines(str(shared_data / "outlines_dem" / "iceland_icecap" / "RGI6_icecap.shp"))
    inv, n_tiles = _tile_and_merge(ref, size=512, res=50.0)
    assert n_tiles >= 6
    cap = inv.loc[inv.area_km2.idxmax()]
    ea = equal_area_crs([tuple(ref.total_bounds)])
    bodies = shapely.get_parts(ref.to_crs(ea).union_all())
    largest = max(bodies, key=lambda b: b.area)
    assert cap.n_tiles >= 4  # one body over many tiles, not pieces
    assert cap.area_km2 == pytest.approx(largest.area / 1e6, rel=0.01)
    out = attach_rgi(inv, ref, date_pred=date(2020, 8, 28), date_ref=None)
    assert out.area_km2.sum() == pytest.approx(_ref_area_km2(ref), rel=0.01)
    assert sorted(out.rgi_id) == sorted(ref.RGIId)
    assert _divide_crossing(out, ref) < 1e-4


@pytest.mark.parametrize("name", ["RGI60-01.10689.shp", "01_rgi60_Columbia.shp"])
def test_columbia_glacier_whole_again(shared_data: Path, name: str) -> None:
    ref = read_outlines(str(shared_data / "outlines_dem" / "columbia" / name))
    inv, _ = _tile_and_merge(ref, size=512, res=50.0)
    main = inv.loc[inv.area_km2.idxmax()]
    assert main.n_tiles >= 4 and main.geometry.is_valid
    assert main.area_km2 == pytest.approx(_ref_area_km2(ref), rel=0.01)
    out = attach_rgi(inv, ref, date_pred=date(2019, 9, 6), date_ref=None)
    assert list(out.rgi_id) == ["RGI60-01.10689"]
    assert out.iloc[0]["name"] == "Columbia Glacier"
    assert out.iloc[0].area_change_pct_per_yr == pytest.approx(0.0, abs=0.05)


def test_oetztal_divides_hold_for_grown_ice(shared_data: Path) -> None:
    base = shared_data / "outlines_dem" / "oetztal"
    ref = read_outlines(str(base / "rgi_oetztal.shp"))
    divides = read_outlines(str(base / "rgi_intersect_oetztal.shp"))
    grown = ref.to_crs(32632).buffer(40.0, quad_segs=2)  # every glacier advanced by 40 m
    inv, _ = _tile_and_merge(gpd.GeoDataFrame(geometry=grown), size=256, res=30.0, epsg=32632)
    out = attach_rgi(inv, ref, date_pred=date(2020, 9, 1), date_ref=None, intersects=divides)
    known = out[~out.is_new]
    assert sorted(known.rgi_id) == sorted(ref.RGIId)
    # Divide lines between two mapped glaciers never run through an output glacier.
    ids = set(ref.RGIId)
    inner = divides[divides.RGIId_1.isin(ids) & divides.RGIId_2.isin(ids)]
    assert len(inner) > 10
    ea = equal_area_crs([tuple(ref.total_bounds)])
    pts = shapely.points(shapely.get_coordinates(
        shapely.segmentize(inner.to_crs(ea).geometry.to_numpy(), 5.0)))
    for g in out.to_crs(ea).geometry:
        shapely.prepare(g)
        inside = pts[shapely.contains(g, pts)]
        # Points of a divide deeper than 2 m inside an output glacier: the divide crosses it.
        assert not (shapely.distance(g.boundary, inside) > 2.0).any()
    # All the grown ice is accounted for, in known glaciers or new candidates.
    assert out.area_km2.sum() == pytest.approx(inv.area_km2.sum(), rel=1e-6)
    assert (known.area_change_km2 > 0).all()


def _straddling_cap() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """An ice cap centred on 90°E (the UTM 45/46 border), split in three by ice divides."""
    laea = CRS.from_proj4("+proj=laea +lat_0=28 +lon_0=90 +datum=WGS84 +units=m")
    cap = shapely.affinity.scale(Point(0, 0).buffer(9000, quad_segs=64), 1.0, 0.6)
    cap = cap.difference(Point(2000, 1000).buffer(1200))  # a nunatak
    cuts = [LineString([(-3000, -9000), (-2500, 9000)]), LineString([(4000, -9000), (3000, 9000)])]
    parts = shapely.get_parts(shapely.polygonize(shapely.get_parts(
        shapely.union_all([cap.boundary, *cuts]))))
    parts = sorted((p for p in parts if cap.contains(p.representative_point())),
                   key=lambda p: p.centroid.x)
    ref = gpd.GeoDataFrame({"RGIId": [f"RGI60-15.9000{i}" for i in range(3)]},
                           geometry=parts, crs=laea).to_crs(4326)
    return gpd.GeoDataFrame(geometry=[cap], crs=laea).to_crs(4326), ref


@pytest.mark.parametrize("mode", ["overlapping", "clipped"])
def test_ice_cap_across_utm_zones(mode: str) -> None:
    cap, ref = _straddling_cap()
    size, res = 256, 30.0
    frames, epsgs = [], set()
    for epsg, side in ((32645, box(84, 0, 90, 60)), (32646, box(90, 0, 96, 60))):
        # Each zone's tiles cover its half; "clipped" tiles map only their own side of 90°E,
        # "overlapping" ones map everything they see (cores of both zones overlap at the seam).
        seen = cap.clip(side) if mode == "clipped" else cap
        utm = seen.to_crs(epsg)
        for col, row in cells_covering(epsg, tuple(cap.clip(side).to_crs(epsg).total_bounds),
                                       size * res):
            t = TileSpec(epsg, col, row, size, res, 0)
            mask = rasterize(((g, 1) for g in utm.geometry), out_shape=(size, size),
                             transform=t.core_transform, dtype="uint8")
            frames.append(vectorize_tile(mask, None, transform=t.core_transform, crs=t.crs,
                                         tile_id=t.tile_id))
            epsgs.add(epsg)
    inv = merge_tiles(frames)
    assert len(inv) == 1  # one glacier, no duplicate from the overlap, no seam
    g = inv.iloc[0]
    assert {t.split("_")[0] for t in g.tile_ids.split(",")} == {"32645", "32646"}
    assert g.geometry.geom_type == "Polygon" and len(g.geometry.interiors) == 1
    assert g.area_km2 == pytest.approx(_ref_area_km2(cap), rel=0.01)
    out = attach_rgi(inv, ref, date_pred=None, date_ref=None)
    assert sorted(out.rgi_id) == sorted(ref.RGIId)
    ea = equal_area_crs([tuple(ref.total_bounds)])
    ref_km2 = ref.to_crs(ea).set_index("RGIId").area / 1e6
    for _, row in out.iterrows():
        assert row.area_km2 == pytest.approx(ref_km2[row.rgi_id], rel=0.02)
    assert _divide_crossing(out, ref) < 1e-4

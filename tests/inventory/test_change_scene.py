"""A generated two-epoch scene across the UTM zone 10 | 11 border (lon -120, lat 50).

Runs are written as the pipeline writes them (tile COGs and STAC items through
``write_tile_outputs``, a manifest with the run config), with probabilities that are the exact
sub-pixel ice cover of known polygons: the truth is the polygons' geodesic area, computed apart
from the code under test (pyproj.Geod). The scene builder is shared by the other change tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Geod
from rasterio.features import rasterize
from shapely import affinity
from shapely.geometry import Point, Polygon

from glacierscale.core.grid import core_mask
from glacierscale.core.tiles import TileSpec, cells_covering
from glacierscale.core.zones import zones_touching
from glacierscale.inventory.change import compare
from glacierscale.io import Provenance, Store, write_tile_outputs

#: Sub-pixels per pixel edge: probabilities are the ice cover of the pixel in 1/25 steps.
SUPER = 5
GEOD = Geod(ellps="WGS84")


def ellipse(lon: float, lat: float, a_deg: float, b_deg: float) -> Polygon:
    """An ellipse in lon/lat degrees (finely segmented, so its projection stays smooth)."""
    return affinity.translate(affinity.scale(Point(0, 0).buffer(1.0, 256), a_deg, b_deg), lon,
                              lat)


def ground_km2(geom: Any) -> float:
    """Geodesic area of a lon/lat (multi)polygon on WGS84, km² (independent of the code)."""
    return abs(GEOD.geometry_area_perimeter(shapely.segmentize(geom, 0.0005))[0]) / 1e6


@dataclass
class Scene:
    """Ice of one epoch (lon/lat polygons) and where that epoch saw nothing (clouds)."""

    ice: list[Any]
    clouds: list[Any] = field(default_factory=list)
    when: datetime = datetime(2020, 9, 1, 18)
    collection: str = "sentinel-2-l2a"


def _tiles(geoms: list[Any], size_px: int, res: float, margin: float = 0.002) -> list[TileSpec]:
    """Every grid tile whose core owns some ground within ``margin`` degrees of ``geoms``."""
    bounds = shapely.bounds(shapely.union_all(geoms).buffer(margin))
    out = []
    for epsg in zones_touching(tuple(bounds)):
        proj = gpd.GeoSeries([shapely.box(*bounds)], crs=4326).to_crs(epsg)
        for col, row in cells_covering(epsg, tuple(proj.total_bounds), size_px * res):
            tile = TileSpec(epsg, col, row, size_px, res, 0)
            if core_mask(tile).any():
                out.append(tile)
    return out


def _cover(geoms: list[Any], tile: TileSpec) -> np.ndarray:
    """Share of each core pixel covered by ``geoms`` (lon/lat), from SUPER² sub-pixels."""
    n = tile.size_px
    if not geoms:
        return np.zeros((n, n), "float32")
    proj = gpd.GeoSeries(geoms, crs=4326).to_crs(tile.epsg)
    fine = rasterize(((g, 1) for g in proj), out_shape=(n * SUPER, n * SUPER),
                     transform=tile.core_transform @ tile.core_transform.scale(1 / SUPER),
                     fill=0, dtype="uint8")
    return fine.reshape(n, SUPER, n, SUPER).mean(axis=(1, 3)).astype("float32")


def write_run(root: Path, scene: Scene, *, reference: str, size_px: int = 128,
              res: float = 10.0, threshold: float = 0.5, weights_hash: str = "a" * 64,
              uncertainty: float | None = None, extent: list[Any] | None = None,
              config_token: str = "cfg1") -> str:
    """Write a finished run of ``scene`` under ``root``: tiles, items and manifest.json.

    Probabilities are the ice cover of each pixel (the run's mask is cover >= threshold);
    pixels under ``scene.clouds`` and outside each tile's zone are no data. ``uncertainty``
    writes a constant per-pixel spread (as an ensemble would); None writes none. Tiles cover
    ``extent`` (default: the scene's ice).
    """
    store = Store(str(root))
    prov = Provenance((f"scene-{scene.when:%Y%m%d}",), "test-model", weights_hash=weights_hash,
                      config_token=config_token)
    sel = {"acquisitions": [{"item_ids": list(prov.input_ids), "collection": scene.collection,
                             "chosen": True}]}
    for tile in _tiles(extent or scene.ice, size_px, res):
        prob = _cover(scene.ice, tile)
        seen = core_mask(tile) & (_cover(scene.clouds, tile) < 0.5)
        prob = np.where(seen, prob, np.nan).astype("float32")
        unc = None if uncertainty is None else np.full(prob.shape, uncertainty, "float32")
        write_tile_outputs(store, tile, prob, provenance=prov, when=scene.when,
                           threshold=threshold, uncertainty=unc,
                           properties={"glacierscale:scene_selection": sel})
    config = {"grid": {"tile_size_px": size_px, "resolution": res, "halo_px": 0},
              "infer": {"threshold": threshold}, "reference": reference}
    store.write_bytes_atomic("manifest.json", json.dumps(
        {"config": config, "config_token": config_token, "tiles": []}).encode())
    return str(root)


# The scene: glacier 1 straddles lon -120 and loses its western tongue (23 % of its area), cut by
# an oblique front that itself crosses the zone border; glacier 2 does not change but is partly
# under cloud in B; a patch of ice outside every outline appears in B.
G1 = ellipse(-119.988, 50.0, 0.03, 0.008)
FRONT = Polygon([(-120.2, 49.99), (-119.985, 49.99), (-120.02, 50.01), (-120.2, 50.01)])
G1_B = shapely.difference(G1, FRONT)
G2 = ellipse(-119.935, 50.0, 0.008, 0.004)
CLOUD = shapely.box(-119.933, 49.99, -119.9, 50.01)
PATCH = ellipse(-119.988, 50.02, 0.004, 0.002)
IDS = ("RGI60-02.00001", "RGI60-02.00002")


def outlines_file(tmp: Path) -> str:
    """RGI-like outlines of both glaciers, each 20 % larger than the glacier in epoch A."""
    path = tmp / "rgi.gpkg"
    gpd.GeoDataFrame({"RGIId": list(IDS), "Name": ["One", "Two"], "O1Region": ["02", "02"]},
                     geometry=[affinity.scale(G1, 1.2, 1.2), affinity.scale(G2, 1.2, 1.2)],
                     crs=4326).to_file(path)
    return str(path)


def two_epochs(tmp: Path, **kw: Any) -> tuple[str, str, str]:
    ref = outlines_file(tmp)
    extent = [G1, G2, PATCH]  # both epochs map the same tiles
    a = write_run(tmp / "a", Scene([G1, G2], when=datetime(2016, 9, 1, 18)), reference=ref,
                  extent=extent, **kw)
    b = write_run(tmp / "b", Scene([G1_B, G2, PATCH], [CLOUD], when=datetime(2020, 9, 1, 18),
                                   collection="landsat-c2-l2"), reference=ref, extent=extent,
                  **kw)
    return a, b, ref


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """Epoch A (2016) and B (2020) of the scene, written once for the module."""
    return two_epochs(tmp_path_factory.mktemp("scene"))


def test_scene_retreat_crosses_the_zone_border() -> None:
    lost = shapely.difference(G1, G1_B)
    west = shapely.box(-121, 49, -120, 51)
    assert ground_km2(lost & west) > 0.1 and ground_km2(lost - west) > 0.1
    tiles = _tiles([G1], 128, 10.0)
    assert {t.epsg for t in tiles} == {32610, 32611}
    assert any(not core_mask(t).all() for t in tiles), "no tile crosses the zone border"


def test_known_retreat_across_a_zone_border(runs: tuple[str, str, str]) -> None:
    a, b, _ = runs
    result = compare(a, b)
    g = result.glaciers.set_index("glacier_id")
    one = g.loc[IDS[0]]
    truth = ground_km2(G1_B) - ground_km2(G1)
    assert -1.5 < truth < -1.0
    # Within 2 % of the truth, and the uncertainty covers the error.
    assert one["change_km2"] == pytest.approx(truth, rel=0.02)
    assert abs(one["change_km2"] - truth) <= one["change_unc_km2"]
    assert one["area_a_km2"] == pytest.approx(ground_km2(G1), rel=0.01)
    # Counted once across the two zones: the outline's pixels add up to its ground area.
    assert one["outline_km2"] == pytest.approx(ground_km2(affinity.scale(G1, 1.2, 1.2)), rel=5e-3)
    assert one["seen_share"] == 1.0 and one["compared"]
    # Dates four years apart: a rate per year.
    assert one["years"] == pytest.approx(4.0, abs=1e-3)
    assert one["change_km2_per_yr"] == pytest.approx(one["change_km2"] / one["years"])
    assert one["change_pct_per_yr"] == pytest.approx(
        100 * one["change_km2"] / one["years"] / one["area_a_km2"])
    assert (one["sensor_a"], one["sensor_b"]) == ("sentinel-2-l2a", "landsat-c2-l2")


def test_partly_seen_glacier_is_flagged_and_compared_only_where_seen(
        runs: tuple[str, str, str]) -> None:
    a, b, _ = runs
    result = compare(a, b)
    two = result.glaciers.set_index("glacier_id").loc[IDS[1]]
    assert 0.2 < two["seen_share"] < 0.9 and two["seen_share_a"] == 1.0
    assert not two["compared"] and "seen" in two["flag"]
    # The cloud hides part of the glacier in B but takes no area away: only common ground counts.
    assert two["change_km2"] == pytest.approx(0.0, abs=1e-9)
    # Left out of the regional sums, counted apart.
    region = result.regions.set_index("region").loc["02"]
    assert (region["glaciers"], region["flagged"]) == (1, 1)
    one = result.glaciers.set_index("glacier_id").loc[IDS[0]]
    assert region["change_km2"] == pytest.approx(one["change_km2"])
    assert region["flagged_outline_km2"] == pytest.approx(two["outline_km2"])
    # A lower bar compares it.
    lenient = compare(a, b, min_seen=0.2).regions.set_index("region").loc["02"]
    assert (lenient["glaciers"], lenient["flagged"]) == (2, 0)


def test_ice_outside_every_outline_is_reported_apart(runs: tuple[str, str, str]) -> None:
    a, b, _ = runs
    result = compare(a, b)
    total = result.regions.set_index("region").loc["total"]
    assert total["outside_change_km2"] == pytest.approx(ground_km2(PATCH), rel=0.03)
    assert result.outside["change_km2"].sum() == pytest.approx(total["outside_change_km2"])
    # The patch is not in any glacier's area.
    assert result.glaciers["area_b_km2"].sum() < ground_km2(G1_B) + ground_km2(G2) + 0.01


def test_written_outputs(runs: tuple[str, str, str], tmp_path: Path) -> None:
    a, b, _ = runs
    out = tmp_path / "change"
    result = compare(a, b, out=str(out))
    back = gpd.read_parquet(out / "glaciers.parquet")
    assert back.crs.to_epsg() == 4326 and set(back["glacier_id"]) == set(IDS)
    assert (out / "regions.csv").read_text().startswith("region,glaciers,flagged")
    png = (out / "plots" / "region_02.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "change.json").read_text())
    assert [list(e["sensors"]) for e in summary["epochs"]] == [["sentinel-2-l2a"],
                                                                ["landsat-c2-l2"]]
    assert summary["written"][-1].endswith("change.json")
    assert set(result.plot_urls) == {"02"}
    assert "quadrature" in summary["errors_combined"]["glacier_change"]
    assert "linearly" in summary["errors_combined"]["region"]
    md = result.markdown()
    assert "| 02 |" in md and "region_02.png" in md and "landsat-c2-l2" in md
    assert result.table_rows()[0]["region"] == "02"

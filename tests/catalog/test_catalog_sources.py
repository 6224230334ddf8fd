"""Catalog sources: local folders, ndjson, stac-geoparquet, a real STAC API, the antimeridian."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pystac
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from glacierscale.catalog import (
    CatalogSource,
    LocalSource,
    StacApiSource,
    item_footprint,
    open_catalog,
)
from glacierscale.catalog.index import write_items
from glacierscale.core.footprint import bbox_polygon, split_bbox
from glacierscale.core.grid import tile_at, tile_bbox_lonlat
from glacierscale.core.tiles import TileSpec
from glacierscale.testing.services import stac_api

COLUMBIA = (-147.5, 60.8, -147.3, 61.0)  # Columbia Glacier, Alaska: the PC Sentinel-2 item


def _feature(item_id: str, coll: str, when: str, geometry: dict, bbox: list[float]) -> dict:
    return {"type": "Feature", "stac_version": "1.1.0", "id": item_id, "collection": coll,
            "geometry": geometry, "bbox": bbox, "properties": {"datetime": when},
            "assets": {"data": {"href": f"{item_id}.tif"}}, "links": []}


def _poly(w: float, s: float, e: float, n: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


@pytest.fixture()
def dateline_items(tmp_path: Path) -> Path:
    """Items near 180 degrees: one split per GeoJSON, one naive polygon jumping across 180."""
    split = {"type": "MultiPolygon", "coordinates": [
        [[[179.5, 64.9], [180, 64.9], [180, 65.1], [179.5, 65.1], [179.5, 64.9]]],
        [[[-180, 64.9], [-179.6, 64.9], [-179.6, 65.1], [-180, 65.1], [-180, 64.9]]]]}
    naive = {"type": "Polygon", "coordinates": [
        [[179.8, 65.0], [-179.9, 65.0], [-179.9, 65.3], [179.8, 65.3], [179.8, 65.0]]]}
    docs = [_feature("split", "s2", "2020-08-10T00:00:00Z", split, [179.5, 64.9, -179.6, 65.1]),
            _feature("naive", "s2", "2020-08-11T00:00:00Z", naive, [179.8, 65.0, -179.9, 65.3]),
            _feature("far", "s2", "2020-08-12T00:00:00Z", _poly(10, 64.9, 11, 65.1),
                     [10, 64.9, 11, 65.1])]
    path = tmp_path / "dateline.ndjson"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.mark.integration
def test_folder_of_real_items_search_by_place_time_collection(shared_data: Path) -> None:
    src = open_catalog(str(shared_data / "stac_items"))
    assert isinstance(src, LocalSource) and isinstance(src, CatalogSource)
    assert len(src.items) == 11  # items only: the collection JSON files are skipped
    hits = src.search(COLUMBIA, date(2019, 6, 1), date(2019, 6, 30))
    assert [i.id for i in hits] == ["S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"]
    assert src.search(COLUMBIA, date(2019, 6, 30), date(2019, 7, 30)) == []
    assert src.search(COLUMBIA, None, None, ["landsat-c2-l2"]) == []
    # DEM collections are searched by place with no dates.
    dem = src.search((-114.6, 53.4, -114.4, 53.6), None, None, ["cop-dem-glo-30"])
    assert [i.collection_id for i in dem] == ["cop-dem-glo-30"]
    # Relative hrefs are resolved against the item file.
    assert Path(dem[0].assets["data"].href).is_absolute()
    assert open_catalog(str(shared_data / "stac_items")) is src  # cached per process


def test_antimeridian_queries_and_footprints(dateline_items: Path) -> None:
    src = open_catalog(str(dateline_items))
    across = src.search((179.7, 64.95, -179.7, 65.05), None, None)
    assert sorted(i.id for i in across) == ["naive", "split"]
    east_only = src.search((-179.95, 65.2, -179.92, 65.25), None, None)
    assert [i.id for i in east_only] == ["naive"]
    assert src.search((-179.95, 64.91, -179.92, 64.95), None, None)[0].id == "split"
    assert src.search((0, 64, 1, 66), None, None) == []


@given(st.floats(-180, 180), st.floats(-180, 180), st.floats(-80, 79))
@example(0.0, 1.0770370606151477e-90, 0.0)  # a thin box once became the whole world
def test_split_bbox_never_crosses_and_keeps_area(w: float, e: float, s: float) -> None:
    parts = split_bbox((w, s, e, s + 1))
    assert all(p[0] <= p[2] for p in parts)
    width = (e - w) if w <= e else (180 - w) + (e + 180)
    assert sum(p[2] - p[0] for p in parts) == pytest.approx(width)
    assert bbox_polygon((w, s, e, s + 1)).area == pytest.approx(width)


def test_footprint_of_a_naive_dateline_polygon_is_two_small_parts() -> None:
    naive = {"type": "Polygon", "coordinates": [[[179, 0], [-179, 0], [-179, 1], [179, 1],
                                                 [179, 0]]]}
    assert item_footprint(naive, None).area == pytest.approx(2.0)


def test_ndjson_parquet_and_folder_give_the_same_items(tmp_path: Path,
                                                       dateline_items: Path) -> None:
    items = LocalSource(dateline_items).items
    ids = sorted(i.id for i in items)
    for out in (tmp_path / "c.parquet", tmp_path / "folder", tmp_path / "c.ndjson"):
        write_items(items, out)
        got = open_catalog(str(out)).search((-180, -90, 180, 90), None, None)
        assert sorted(i.id for i in got) == ids, out
        assert all(isinstance(i, pystac.Item) for i in got)


def test_bad_catalogs_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="STAC API URL"):
        open_catalog(str(tmp_path / "missing"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"\.ndjson"):
        open_catalog(str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="swap"):
        LocalSource(tmp_path, items=[]).search((0, 0, 1, 1), date(2020, 2, 1), date(2020, 1, 1))
    assert isinstance(open_catalog("earth-search"), StacApiSource)
    pc = open_catalog("planetary-computer")
    assert isinstance(pc, StacApiSource) and pc.sign


@pytest.mark.integration
def test_real_stac_api_on_loopback(shared_data: Path, tmp_path: Path,
                                   dateline_items: Path) -> None:
    """rustac serves real items; pystac-client searches them by bbox, dates, collections."""
    real = LocalSource(shared_data / "stac_items").items + LocalSource(dateline_items).items
    path = tmp_path / "items.ndjson"
    path.write_text("".join(json.dumps(i.to_dict(transform_hrefs=False)) + "\n" for i in real))
    with stac_api([path]) as url:
        api = open_catalog(url)
        assert isinstance(api, StacApiSource)
        hits = api.search(COLUMBIA, date(2019, 6, 1), date(2019, 6, 30), ["sentinel-2-l2a"])
        assert [i.id for i in hits] == ["S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"]
        assert api.search(COLUMBIA, date(2019, 7, 1), None, ["sentinel-2-l2a"]) == []
        dem = api.search((-114.6, 53.4, -114.4, 53.6), None, None, ["cop-dem-glo-30"])
        assert [i.collection_id for i in dem] == ["cop-dem-glo-30"]
        # A box across the antimeridian is queried as two boxes.
        across = api.search((179.7, 64.95, -179.7, 65.05), None, None, ["s2"])
        assert sorted(i.id for i in across) == ["naive", "split"]


def _dateline_tile_items() -> tuple[TileSpec, list[pystac.Item]]:
    """A UTM zone 1 tile across 180° at 65N, and scenes beside it, across it and far along 65N."""
    tile = tile_at(-179.99, 65.0)
    both = {"type": "MultiPolygon", "coordinates": [
        [[[179.5, 64.8], [180, 64.8], [180, 65.2], [179.5, 65.2], [179.5, 64.8]]],
        [[[-180, 64.8], [-179.5, 64.8], [-179.5, 65.2], [-180, 65.2], [-180, 64.8]]]]}
    docs = [_feature("west", "s2", "2020-08-10T00:00:00Z", _poly(179.0, 64.8, 179.99, 65.2),
                     [179.0, 64.8, 179.99, 65.2]),
            _feature("east", "s2", "2020-08-10T00:00:00Z", _poly(-179.9, 64.8, -179.0, 65.2),
                     [-179.9, 64.8, -179.0, 65.2]),
            _feature("both", "s2", "2020-08-10T00:00:00Z", both, [179.5, 64.8, -179.5, 65.2]),
            # Same latitude band, far from the tile: a world-wide box would wrongly find these.
            _feature("band-0", "s2", "2020-08-10T00:00:00Z", _poly(0.0, 64.8, 1.0, 65.2),
                     [0.0, 64.8, 1.0, 65.2]),
            _feature("band-178", "s2", "2020-08-10T00:00:00Z", _poly(-178.5, 64.8, -178.0, 65.2),
                     [-178.5, 64.8, -178.0, 65.2])]
    return tile, [pystac.Item.from_dict(d) for d in docs]


def test_a_tile_across_the_antimeridian_finds_scenes_on_both_sides_in_every_local_format(
        tmp_path: Path) -> None:
    tile, items = _dateline_tile_items()
    box = tile_bbox_lonlat(tile)
    assert box[0] > box[2]  # W > E: the STAC way to say "across the antimeridian"
    for out in (tmp_path / "c.ndjson", tmp_path / "folder", tmp_path / "c.parquet"):
        write_items(items, out)
        got = [i.id for i in open_catalog(str(out)).search(box, None, None, ["s2"])]
        assert sorted(got) == ["both", "east", "west"], out
        assert len(got) == len(set(got)), out  # an item on both sides is found once


class _RecordingClient:
    """A pystac-client stand-in: records each /search bbox, answers from an item list."""

    def __init__(self, items: list[pystac.Item]) -> None:
        self.items = items
        self.boxes: list[list[float]] = []

    def search(self, *, bbox: list[float], **_: object) -> _RecordingClient._Result:
        self.boxes.append(bbox)
        hits = [i for i in self.items if item_footprint(i.geometry, i.bbox).intersects(
            bbox_polygon(bbox))]
        return _RecordingClient._Result(hits)

    class _Result:
        def __init__(self, hits: list[pystac.Item]) -> None:
            self.hits = hits

        def items(self) -> list[pystac.Item]:
            return list(self.hits)


def test_stac_api_searches_a_box_across_the_antimeridian_as_two_and_dedupes() -> None:
    tile, items = _dateline_tile_items()
    w, s, e, n = tile_bbox_lonlat(tile)
    api = StacApiSource("https://stac.invalid/v1")
    api._client = client = _RecordingClient(items)
    got = [i.id for i in api.search((w, s, e, n), None, None, ["s2"])]
    # Every box sent to the API is an ordinary one (W <= E), each half of the tile's box.
    assert client.boxes == [[w, s, 180.0, n], [-180.0, s, e, n]]
    assert sorted(got) == ["both", "east", "west"]  # "both" answered twice, returned once


def test_stac_api_searches_a_pole_tile_box_once_over_all_longitudes() -> None:
    box = tile_bbox_lonlat(tile_at(0.0, 90.0))
    api = StacApiSource("https://stac.invalid/v1")
    api._client = client = _RecordingClient([])
    assert api.search(box, None, None) == []
    assert client.boxes == [[-180.0, box[1], 180.0, 90.0]]

"""The preflight, check by check, on tiny catalogs and files made in the test: every problem is one
PreflightError naming the culprit and the fix; what passes comes back resolved, with notes.

Catalog items here describe files that never exist: the preflight reads metadata only, and a run
would be the first to open the pixels (the CLI suite in tests/cli runs those).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import LineString, box

from glacierscale.config import RunConfig
from glacierscale.preflight import (
    PreflightError,
    check_aoi,
    check_out,
    load_config,
    preflight,
)
from glacierscale.testing import services
from glacierscale.testing.faultproxy import fault_proxy
from glacierscale.testing.injection import FaultPlan

BOX = "-117.32,52.156,-117.232,52.21"
S2_KEYS = {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "swir16": "B11",
           "swir22": "B12"}


def item_doc(item_id: str, collection: str, *, bbox: tuple[float, float, float, float] =
             (-117.4, 52.1, -117.1, 52.3), when: str = "2020-09-11T18:40:00Z",
             keys: dict[str, str] | None = None, mask: str | None = "scl",
             href: str = "/nowhere/{}.tif") -> dict[str, Any]:
    """A STAC item dict like Earth Search's (asset keys by common name), hrefs made up."""
    w, s, e, n = bbox
    assets = {k: {"href": href.format(band), "type": "image/tiff"}
              for k, band in (keys if keys is not None else S2_KEYS).items()}
    if mask:
        assets[mask] = {"href": href.format(mask.upper()), "type": "image/tiff"}
    return {"type": "Feature", "stac_version": "1.1.0", "id": item_id, "collection": collection,
            "geometry": json.loads(json.dumps(box(w, s, e, n).__geo_interface__)),
            "bbox": [w, s, e, n], "properties": {"datetime": when}, "assets": assets,
            "links": []}


def write_catalog(root: Path, *docs: dict[str, Any]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (root / f"{d['id']}.json").write_text(json.dumps(d))
    return str(root)


@pytest.fixture
def catalog(tmp_path: Path) -> str:
    """Sentinel-2 with SCL, an RGB+NIR-only collection, a Landsat item without its QA band."""
    rgbn = {"blue": "blue", "green": "green", "red": "red", "nir08": "nir08"}
    return write_catalog(
        tmp_path / "catalog",
        item_doc("s2-a", "sentinel-2-l2a"),
        item_doc("rgbn-a", "rgbn-camera", keys=rgbn, mask=None),
        item_doc("ls-a", "landsat-c2-l2", mask=None, when="2020-08-16T18:30:00Z"))


def cfg_for(catalog: str, tmp_path: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = {"aoi": BOX, "catalog": catalog, "out": str(tmp_path / "out"),
                            "start": date(2020, 8, 1), "end": date(2020, 9, 30),
                            "collections": ("sentinel-2-l2a",)}
    return RunConfig.model_validate({**base, **kw})


def error_of(cfg: RunConfig, **kw: Any) -> PreflightError:
    with pytest.raises(PreflightError) as info:
        preflight(cfg, **kw)
    message = info.value.message
    assert "\n" not in message.strip() and "Traceback" not in message
    return info.value


# --------------------------------------------------------------------------- AOI


@pytest.mark.parametrize(("aoi", "expected"), [
    ("-117.32,52.21,-117.232,52.156", "write -117.32,52.156,-117.232,52.21"),
    ("-117.32,52.156,-117.232", "has 3 numbers"),
    ("north of Jasper", "neither a box W,S,E,N"),
    ("a,b,c,d", "is not a box"),
    ("-200,52,-117,53", "longitudes must lie in -180..180"),
    ("52.1,-117.3,52.2,-117.2", "were longitude and latitude swapped?"),
    ("-117.3,52,-117.3,53", "west equals east"),
    ("", "--aoi is empty"),
])
def test_a_bad_box_is_named_with_its_fix(aoi: str, expected: str) -> None:
    with pytest.raises(PreflightError, match=expected.replace("?", r"\?")) as info:
        check_aoi(aoi)
    assert info.value.field == "aoi"


def test_west_above_east_crosses_the_antimeridian_and_a_pole_box_is_fine() -> None:
    notes: list[str] = []
    assert check_aoi("179.5,51.5,-179.5,52.5", notes) == (179.5, 51.5, -179.5, 52.5)
    assert "crossing the antimeridian (1° wide)" in notes[0]
    notes.clear()
    assert check_aoi("-180,-90,180,-89.9", notes) == (-180.0, -90.0, 180.0, -89.9)
    assert "south pole" in notes[0]


def test_outline_files_must_hold_polygons(tmp_path: Path) -> None:
    polys = gpd.GeoDataFrame({"RGIId": ["RGI60-02.00001"]},
                             geometry=[box(-117.3, 52.15, -117.25, 52.2)], crs=4326)
    polys.to_file(tmp_path / "glaciers.gpkg")
    polys.to_parquet(tmp_path / "glaciers.parquet")
    assert check_aoi(str(tmp_path / "glaciers.gpkg")) is None
    assert check_aoi(str(tmp_path / "glaciers.parquet")) is None
    lines = gpd.GeoDataFrame(geometry=[LineString([(0, 0), (1, 1)])], crs=4326)
    lines.to_file(tmp_path / "lines.gpkg")
    with pytest.raises(PreflightError, match="holds LineString geometries, not glacier"):
        check_aoi(str(tmp_path / "lines.gpkg"))
    polys.iloc[:0].to_file(tmp_path / "empty.gpkg")
    with pytest.raises(PreflightError, match="holds no features"):
        check_aoi(str(tmp_path / "empty.gpkg"))
    (tmp_path / "table.csv").write_text("name,area\nA,1.0\n")
    with pytest.raises(PreflightError, match="has neither outlines nor CenLon/CenLat columns"):
        check_aoi(str(tmp_path / "table.csv"))
    (tmp_path / "rgi.csv").write_text("RGIId,CenLon,CenLat\nRGI60-02.00001,-117.3,52.2\n")
    assert check_aoi(str(tmp_path / "rgi.csv")) is None
    (tmp_path / "broken.shp").write_bytes(b"not a shapefile")
    with pytest.raises(PreflightError, match="cannot be read as a vector file"):
        check_aoi(str(tmp_path / "broken.shp"))


# --------------------------------------------------------------------------- config


def test_yaml_errors_name_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("aoi: -117.32,52.156,-117.232,52.21\ncatalog: [earth-search\nmodel: x\n")
    with pytest.raises(PreflightError, match=rf"^{bad}:3:6: invalid YAML") as info:
        load_config({}, bad)
    assert "<unicode string>" not in info.value.message
    typo = tmp_path / "typo.yaml"
    typo.write_text("aoi: 1,2,3,4\ncatalog: x\ngrid:\n  tile_size_px: 256\n  resolutoin: 20\n")
    with pytest.raises(PreflightError, match=rf"^{typo}:5:3: unknown key 'resolutoin' in "
                                             r"section 'grid'; did you mean 'resolution'\?$"):
        load_config({}, typo)
    top = tmp_path / "top.yaml"
    top.write_text("aoi: 1,2,3,4\ncatalgo: x\n")
    with pytest.raises(PreflightError, match=r"top.yaml:2:1: unknown key 'catalgo'; did you "
                                             r"mean 'catalog'\?"):
        load_config({}, top)
    with pytest.raises(PreflightError, match=r"config file .* does not exist"):
        load_config({}, tmp_path / "missing.yaml")


def test_typed_options_are_named_as_options(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"^--end: start 2020-09-30 is after end 2020-08-01; "
                                             "swap them$"):
        load_config({"aoi": BOX, "catalog": "c", "start": "2020-09-30", "end": "2020-08-01"})
    with pytest.raises(PreflightError, match=r"^--start: .*'2020-13-01'.*; use YYYY-MM-DD$"):
        load_config({"aoi": BOX, "catalog": "c", "start": "2020-13-01"})
    with pytest.raises(PreflightError, match=r"^--resolution: Input should be greater than 0"):
        load_config({"aoi": BOX, "catalog": "c", "grid": {"resolution": -10}})
    # An option that overrides the file is named as the option, not as the file's line.
    f = tmp_path / "run.yaml"
    f.write_text("aoi: 1,2,3,4\ncatalog: x\nstart: 2020-09-01\n")
    with pytest.raises(PreflightError, match=r"^--end: start 2020-09-01 is after end"):
        load_config({"end": "2020-08-01"}, f)


# --------------------------------------------------------------------------- catalog, bands


def test_a_collection_typo_is_named_with_what_the_catalog_offers(catalog: str,
                                                                 tmp_path: Path) -> None:
    err = error_of(cfg_for(catalog, tmp_path, collections=("sentinel-2-l2",)))
    assert err.field == "collections"
    assert "'sentinel-2-l2' is not in catalog" in err.message
    assert "did you mean 'sentinel-2-l2a'?" in err.message
    assert "landsat-c2-l2, rgbn-camera, sentinel-2-l2a" in err.message


def test_a_missing_or_empty_catalog_is_named(tmp_path: Path) -> None:
    err = error_of(cfg_for(str(tmp_path / "no-such-folder"), tmp_path))
    assert err.field == "catalog" and "neither a folder, a file nor a URL" in err.message
    (tmp_path / "empty").mkdir()
    assert "holds no STAC items" in error_of(cfg_for(str(tmp_path / "empty"), tmp_path)).message


def test_model_bands_must_be_offered_by_the_chosen_collections(catalog: str,
                                                               tmp_path: Path) -> None:
    err = error_of(cfg_for(catalog, tmp_path, collections=("rgbn-camera",)))
    assert err.field == "model"
    assert "needs bands ['swir16'], which no chosen collection offers (rgbn-camera: blue, " \
           "green, red, nir)" in err.message
    card = tmp_path / "rededge.json"
    card.write_text(json.dumps({"name": "rededge-ratio", "architecture": "band-ratio",
                                "bands": ["red", "rededge1"], "mean": [0, 0], "std": [1, 1]}))
    err = error_of(cfg_for(catalog, tmp_path, model=str(card)))
    assert "needs bands ['rededge1'], which glacierscale cannot load" in err.message
    # Every collection (none chosen): the Sentinel-2 items offer what band-ratio needs.
    assert preflight(cfg_for(catalog, tmp_path, collections=())).collections == (
        "landsat-c2-l2", "rgbn-camera", "sentinel-2-l2a")


def test_pickled_weights_and_unknown_models_are_refused(catalog: str, tmp_path: Path) -> None:
    import torch

    weights = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    err = error_of(cfg_for(catalog, tmp_path, model=str(weights)))
    assert err.field == "model" and "pickled checkpoint" in err.message
    assert "save_model" in err.message
    err = error_of(cfg_for(catalog, tmp_path, model="unet-everest"))
    assert "unknown model 'unet-everest'" in err.message and "unet-everest-rgbn" in err.message


def test_the_model_card_decides_the_resolution(catalog: str, tmp_path: Path) -> None:
    checked = preflight(cfg_for(catalog, tmp_path, model="default"))
    assert checked.cfg.grid.resolution == 30.0 and checked.cfg.resolution_is_explicit()
    assert preflight(cfg_for(catalog, tmp_path)).cfg.grid.resolution == 10.0


def test_items_without_cloud_masks_and_requester_pays_buckets(tmp_path: Path) -> None:
    plain = write_catalog(tmp_path / "plain", item_doc("a", "sentinel-2-l2a", mask=None))
    checked = preflight(cfg_for(plain, tmp_path))
    assert len(checked.notes) == 1 and "carry no cloud mask" in checked.notes[0]
    landsat = write_catalog(tmp_path / "ls", item_doc(
        "LC08_a", "landsat-c2-l2", mask="qa_pixel",
        href="s3://usgs-landsat/collection02/level-2/standard/oli-tirs/{}.TIF"))
    cfg = cfg_for(landsat, tmp_path, collections=("landsat-c2-l2",))
    os.environ.pop("AWS_REQUEST_PAYER", None)
    err = error_of(cfg)
    assert "requester-pays" in err.message and "AWS_REQUEST_PAYER=requester" in err.message
    os.environ["AWS_REQUEST_PAYER"] = "requester"
    try:
        assert preflight(cfg).collections == ("landsat-c2-l2",)
    finally:
        del os.environ["AWS_REQUEST_PAYER"]


def test_an_empty_search_is_an_error_before_any_tile(catalog: str, tmp_path: Path) -> None:
    err = error_of(cfg_for(catalog, tmp_path, start=date(2021, 8, 1), end=date(2021, 9, 1)))
    assert "no scenes in sentinel-2-l2a" in err.message
    assert "between 2021-08-01 and 2021-09-01" in err.message
    err = error_of(cfg_for(catalog, tmp_path, aoi="10,45,10.1,45.1"))
    assert "no scenes" in err.message and "10,45,10.1,45.1" in err.message


@pytest.mark.integration
def test_a_stac_api_is_checked_like_a_local_catalog(catalog: str, tmp_path: Path) -> None:
    """Collections of a real STAC API (rustac on loopback): typo, bands, scenes."""
    ndjson = tmp_path / "items.ndjson"
    ndjson.write_text("\n".join(p.read_text() for p in sorted(Path(catalog).glob("*.json"))))
    with services.stac_api([ndjson]) as url:
        err = error_of(cfg_for(url, tmp_path, collections=("sentinel2-l2a",)))
        assert "did you mean 'sentinel-2-l2a'?" in err.message
        checked = preflight(cfg_for(url, tmp_path))
        assert checked.bands["sentinel-2-l2a"] == ("blue", "green", "red", "nir", "swir16",
                                                   "swir22")
        err = error_of(cfg_for(url, tmp_path, start=date(2019, 1, 1), end=date(2019, 2, 1)))
        assert "no scenes in sentinel-2-l2a" in err.message
    err = error_of(cfg_for(url, tmp_path))  # the server is gone now
    assert err.field == "catalog" and "does not answer" in err.message


@pytest.mark.integration
def test_an_api_that_errors_gets_patience_and_one_nobody_answers_gets_none(
        catalog: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ndjson = tmp_path / "items.ndjson"
    ndjson.write_text("\n".join(p.read_text() for p in sorted(Path(catalog).glob("*.json"))))
    with services.stac_api([ndjson]) as upstream, fault_proxy(upstream) as (url, log):
        log.plan = FaultPlan(fail_first=3, first="error")  # three 503s before it answers
        checked = preflight(cfg_for(url, tmp_path))
        assert "sentinel-2-l2a" in checked.bands
        assert log.summary()["faults"] == {"error": 3}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="glacierscale.core.faults"):
        err = error_of(cfg_for(url, tmp_path))  # nothing listens at that port now
    assert err.field == "catalog" and "does not answer" in err.message
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 1, "a refused connection is asked twice, not for half a minute"


# --------------------------------------------------------------------------- output


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_local_output_is_probed_and_left_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "new" / "out"
    check_out(str(out))
    assert not (tmp_path / "runs").exists(), "folders made for the probe are removed"
    old = tmp_path / "old"
    (old / "tiles" / "t1").mkdir(parents=True)
    (old / "tiles" / "t1" / "item.json").write_text("{}")
    before = snapshot(old)
    check_out(str(old))
    assert snapshot(old) == before and sorted(os.listdir(old)) == ["tiles"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PreflightError, match="a-file is a file, so no folder can be made"):
        check_out(str(tmp_path / "a-file" / "out"))


@contextmanager
def refusing_s3() -> Iterator[str]:
    """A moto S3 server that checks credentials (it knows no user, so every key is refused)."""
    previous = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    try:
        with services.s3_server() as url:
            yield url
    finally:
        if previous is None:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = previous


@pytest.mark.integration
def test_object_store_outputs_missing_bucket_refused_keys(s3_bucket: str, s3_env: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    check_out(f"s3://{s3_bucket}/runs/a")
    assert boto3.client("s3").list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    missing = f"gs-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(PreflightError, match=f"bucket '{missing}' does not exist.*aws s3 mb"):
        check_out(f"s3://{missing}/runs/a")
    import s3fs

    with refusing_s3() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        s3fs.S3FileSystem.clear_instance_cache()
        with pytest.raises(PreflightError) as info:
            check_out(f"s3://{s3_bucket}/runs/a")
    assert "was denied; check the credentials" in info.value.message
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in info.value.message


def test_messages_are_redacted(tmp_path: Path) -> None:
    secret = "sv=2024&sig=Zq8vX2pLw9sT4nB7kD3m"
    err = error_of(cfg_for(f"https://user:pw-{uuid.uuid4().hex}@127.0.0.1:9/stac?{secret}",
                           tmp_path))
    assert "Zq8vX2pLw9sT4nB7kD3m" not in err.message and "pw-" not in err.message
    assert "sig=***" in err.message


# --------------------------------------------------------------------------- deployments


def test_every_deployment_names_a_model_and_a_working_directory_that_exist() -> None:
    """Deployed = local: each deployment's model loads, and a deployment that runs in an image
    changes into a directory the image has, where its entrypoint file is."""
    import re

    import yaml

    from glacierscale.models import load_model

    repo = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((repo / "prefect.yaml").read_text())
    for dep in doc["deployments"]:
        assert load_model(dep["parameters"]["model"]).card.name, dep["name"]
        image = dep["work_pool"].get("job_variables", {}).get("image")
        steps = dep.get("pull", doc["pull"])
        workdir = steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
        entry = dep["entrypoint"].split(":")[0]
        if image is None:  # a local process worker: `prefect deploy` ran in the repository root
            assert workdir == "{{ $PWD }}" and (repo / entry).is_file(), dep["name"]
            continue
        flavour = "cuda" if "cuda" in image else "cpu"
        dockerfile = (repo / "docker" / f"{flavour}.Dockerfile").read_text()
        final = dockerfile.rsplit("\nFROM ", 1)[-1]  # the runtime stage
        assert re.search(rf"^WORKDIR {re.escape(workdir)}$", final, re.M), (dep["name"], workdir)
        assert re.search(r"^COPY .*\./flows$", final, re.M), "flows/ copied into the WORKDIR"
        assert entry.startswith("flows/"), entry

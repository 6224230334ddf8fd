"""Bad input as a user types it, caught by the preflight: exit 2, one or two lines naming the
culprit and the fix, no traceback, Prefect never started, and an earlier run's outputs untouched.

Each case runs ``glacierscale run ...`` in a fresh process (the time to the message includes
Python's start and imports, as a user waits for it). Set ``GLACIERSCALE_ERRORS_TABLE=FILE`` to
collect the rows of the table in docs/errors.md.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_bad_input_world import (
    AOI,
    DATES,
    SMALL,
    World,
    aoi_text,
    build_world,
    earlier_run,
    glacierscale,
    record,
    snapshot,
)

from glacierscale.testing import services

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = build_world(tmp_path_factory.mktemp("world"))
    root = w.root
    # A camera without SWIR, and Landsat items in the requester-pays bucket.
    rgbn = json.loads(next(Path(w.catalogs["clear"]).glob("*.json")).read_text())
    rgbn["id"], rgbn["collection"] = "rgbn-a", "rgbn-camera"
    rgbn["assets"] = {k: v for k, v in rgbn["assets"].items() if k not in ("swir16", "swir22")}
    rgbn["links"] = []
    (root / "rgbn").mkdir()
    (root / "rgbn" / "rgbn-a.json").write_text(json.dumps(rgbn))
    landsat = dict(rgbn, id="LC08_a", collection="landsat-c2-l2", assets={
        k: {"href": f"s3://usgs-landsat/collection02/level-2/LC08_a_{k}.TIF", "type": "image/tiff"}
        for k in ("red", "green", "blue", "nir08", "swir16", "swir22", "qa_pixel")})
    (root / "landsat").mkdir()
    (root / "landsat" / "LC08_a.json").write_text(json.dumps(landsat))
    w.catalogs.update(rgbn=str(root / "rgbn"), landsat=str(root / "landsat"))
    return w


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    """An output folder holding an earlier run; the case must leave it exactly as it was."""
    folder = tmp_path / "out"
    before = earlier_run(folder)
    yield folder
    assert snapshot(folder) == before, "a failed preflight changed an earlier run's outputs"


def run_args(world: World, out: Path | str, catalog: str = "clear", *extra: str,
             aoi: str = aoi_text(AOI)) -> list[str]:
    cat = world.catalogs.get(catalog, catalog)
    return ["run", "--aoi", aoi, "--catalog", cat, "--out", str(out), *DATES, *SMALL, *extra]


def expect_user_error(case: str, args: list[str], tmp_path: Path, *fragments: str,
                      env: dict[str, str] | None = None) -> str:
    outcome = glacierscale(*args, home=tmp_path / "prefect-home", env=env)
    record(case, outcome)
    assert outcome.code == 2, outcome.console
    assert outcome.stderr.startswith("error: "), outcome.stderr
    assert "Traceback" not in outcome.console and outcome.stdout == ""
    assert len(outcome.stderr.strip().splitlines()) <= 2, outcome.stderr
    assert not outcome.prefect_started, "the error came after Prefect started"
    for fragment in fragments:
        assert fragment in outcome.stderr, (fragment, outcome.stderr)
    return outcome.stderr


CASES: dict[str, Callable[[World, Path, Path], tuple[list[str], tuple[str, ...]]]] = {
    "catalog folder that does not exist": lambda w, o, t: (
        run_args(w, o, str(t / "no-such-catalog")),
        ("--catalog", "no-such-catalog", "neither a folder, a file nor a URL")),
    "collection id with a typo": lambda w, o, t: (
        run_args(w, o, "clear", "--collections", "sentinel-2-l2"),
        ("collection 'sentinel-2-l2' is not in catalog", "did you mean 'sentinel-2-l2a'?")),
    "--start after --end": lambda w, o, t: (
        ["run", "--aoi", aoi_text(AOI), "--catalog", w.catalogs["clear"], "--out", str(o),
         "--start", "2020-09-30", "--end", "2020-08-01"],
        ("--end: start 2020-09-30 is after end 2020-08-01; swap them",)),
    "date that is not a date": lambda w, o, t: (
        run_args(w, o, "clear", "--start", "2020-13-01"), ("--start:", "use YYYY-MM-DD")),
    "AOI with south above north": lambda w, o, t: (
        run_args(w, o, aoi="-117.28,52.181,-117.262,52.17"),
        ("south 52.181 is not below north 52.17", "write -117.28,52.17,-117.262,52.181")),
    "garbage AOI string": lambda w, o, t: (
        run_args(w, o, aoi="Athabasca Glacier"),
        ("'Athabasca Glacier' is neither a box W,S,E,N",)),
    "malformed YAML --config": lambda w, o, t: (
        run_args(w, o, "clear", "--config", str(_write(t / "run.yaml",
                                                        "model: band-ratio\ngrid: [1, 2\n"))),
        (f"{t / 'run.yaml'}:3:1: invalid YAML",)),
    "unknown key in the YAML": lambda w, o, t: (
        run_args(w, o, "clear", "--config", str(_write(t / "run.yaml",
                                                        "max_cloud_cover: 50\nmax_scene: 2\n"))),
        (f"{t / 'run.yaml'}:2:1: unknown key 'max_scene'; did you mean 'max_scenes'?",)),
    "output path under a regular file": lambda w, o, t: (
        run_args(w, o / "report.md" / "again"), ("report.md is a file, so no folder can be made",)),
    "empty search (no scene in the window)": lambda w, o, t: (
        ["run", "--aoi", aoi_text(AOI), "--catalog", w.catalogs["clear"], "--out", str(o),
         "--start", "2021-08-01", "--end", "2021-09-30"],
        ("no scenes in any collection", "widen --start/--end")),
    "model card naming bands no collection has": lambda w, o, t: (
        run_args(w, o, "clear", "--model", str(_write(t / "rededge.json", json.dumps(
            {"name": "rededge-ratio", "architecture": "band-ratio", "bands": ["red", "rededge1"],
             "mean": [0, 0], "std": [1, 1]})))),
        ("needs bands ['rededge1'], which glacierscale cannot load",)),
    "model bands the chosen collection lacks": lambda w, o, t: (
        run_args(w, o, "rgbn", "--collections", "rgbn-camera"),
        ("needs bands ['swir16'], which no chosen collection offers",)),
    "pickled weights": lambda w, o, t: (
        run_args(w, o, "clear", "--model", str(_pickle(t / "unet.pth"))),
        ("is a pickled checkpoint", "save_model")),
    "unknown model name": lambda w, o, t: (
        run_args(w, o, "clear", "--model", "unet-everest"),
        ("unknown model 'unet-everest'", "unet-everest-rgbn")),
    "outlines file holding lines": lambda w, o, t: (
        run_args(w, o, aoi=_lines(t / "flowlines.gpkg")),
        ("holds LineString geometries, not glacier polygons",)),
    "Landsat from a requester-pays bucket": lambda w, o, t: (
        run_args(w, o, "landsat", "--collections", "landsat-c2-l2"),
        ("requester-pays", "AWS_REQUEST_PAYER=requester", "planetary-computer")),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _pickle(path: Path) -> Path:
    import torch

    torch.save({"head.weight": torch.zeros(1, 8, 1, 1)}, path)
    return path


def _lines(path: Path) -> str:
    import geopandas as gpd
    from shapely.geometry import LineString

    gpd.GeoDataFrame(geometry=[LineString([(-117.3, 52.1), (-117.2, 52.2)])],
                     crs=4326).to_file(path)
    return str(path)


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_is_one_line_before_anything_starts(case: str, world: World, out: Path,
                                                         tmp_path: Path) -> None:
    args, fragments = CASES[case](world, out, tmp_path)
    expect_user_error(case, args, tmp_path, *fragments)


def test_debug_shows_the_traceback(world: World, out: Path, tmp_path: Path) -> None:
    outcome = glacierscale(*run_args(world, out, "clear", "--collections", "sentinel-2-l2",
                                     "--debug"), home=tmp_path / "home")
    assert outcome.code == 2 and "Traceback" in outcome.stderr
    assert "PreflightError" in outcome.stderr and "did you mean 'sentinel-2-l2a'?" in outcome.stderr


@pytest.mark.parametrize("case", ["bucket that does not exist", "credentials that are refused"])
def test_object_store_outputs(case: str, world: World, s3_server: str,
                              tmp_path: Path) -> None:
    """A real S3 server (moto): a bucket nobody created, and a server that refuses the keys."""
    import boto3

    keys = {"AWS_ACCESS_KEY_ID": "AKIAGLACIERSCALEBAD0", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_SECRET_ACCESS_KEY": f"refused-{uuid.uuid4().hex}"}
    if case == "bucket that does not exist":
        bucket = f"gs-never-made-{uuid.uuid4().hex[:6]}"
        stderr = expect_user_error(
            case, run_args(world, f"s3://{bucket}/run"), tmp_path,
            f"bucket '{bucket}' does not exist", f"aws s3 mb s3://{bucket}",
            env={"AWS_ENDPOINT_URL": s3_server, **keys})
        assert keys["AWS_SECRET_ACCESS_KEY"] not in stderr
        return
    previous = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # moto then checks every request's keys
    try:
        with services.s3_server() as strict:
            stderr = expect_user_error(
                case, run_args(world, "s3://glaciers/run"), tmp_path,
                "access to bucket 'glaciers'", "was denied; check the credentials",
                env={"AWS_ENDPOINT_URL": strict, **keys})
            s3 = boto3.client("s3", endpoint_url=strict, aws_access_key_id="x",
                              aws_secret_access_key="x", region_name="us-east-1")
            with pytest.raises(s3.exceptions.ClientError):
                s3.list_buckets()  # the server really refuses unknown keys
    finally:
        if previous is None:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = previous
    assert keys["AWS_SECRET_ACCESS_KEY"] not in stderr

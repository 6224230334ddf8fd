"""Bad input that only a run can find, through the CLI as a user types it: the exit code, the one
line per cause, outputs written whatever failed, no traceback on the console, and no secret in
any output, log or Prefect record. Also: stale tiles of another run, the antimeridian, the pole,
the progress bar, and a deployed flow failing its preflight.

Runs report to one Prefect server started for the module (as a deployment would), so each run
costs its Dask cluster and its tiles, not a Prefect start. Set ``GLACIERSCALE_ERRORS_TABLE=FILE``
to collect the rows of the table in docs/errors.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import geopandas as gpd
import httpx
import pytest
from pyproj import Transformer
from shapely.geometry import Point, shape
from test_bad_input_world import (
    ANTIMERIDIAN_AOI,
    AOI,
    BIN,
    DATES,
    POLE_AOI,
    SMALL,
    WHEN,
    World,
    aoi_text,
    build_world,
    glacierscale,
    record,
    scene,
)

from glacierscale.testing import services
from glacierscale.testing.rangeserver import range_server
from glacierscale.testing.rasters import make_item

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``prefect server start`` on loopback with its own home; yields (API URL, home)."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = services.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api")
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=home)
    try:
        services.wait_http(f"http://127.0.0.1:{port}/api/health", timeout=180)
        yield f"http://127.0.0.1:{port}/api", home
    finally:
        # Flows run in this process leave Prefect's background services (events, concurrency
        # leases) holding clients of this server: stop them before it goes, so later tests'
        # in-process runs start their own against their own server.
        from prefect._internal.concurrency.services import QueueService

        QueueService.drain_all(timeout=30)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def run(world: World, prefect: tuple[str, Path], tmp_path: Path, catalog: str, *extra: str,
        aoi: tuple[float, float, float, float] = AOI, out: str | None = None,
        env: dict[str, str] | None = None) -> tuple[Path, object]:
    target = out or str(tmp_path / "out")
    args = ["run", "--aoi", aoi_text(aoi), "--catalog", world.catalogs.get(catalog, catalog),
            "--out", target, *DATES, *SMALL, *extra]
    outcome = glacierscale(*args, home=tmp_path / "home",
                           env={"PREFECT_API_URL": prefect[0], **(env or {})})
    assert "Traceback" not in outcome.console, outcome.console
    assert "━" not in outcome.stderr, "a progress bar on a console that is not a terminal"
    return Path(target), outcome


def manifest(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "manifest.json").read_text())


# --------------------------------------------------------------------------- outcomes


def test_an_item_whose_asset_file_is_missing(world: World, prefect: tuple[str, Path],
                                              tmp_path: Path) -> None:
    out, o = run(world, prefect, tmp_path, "missing")
    record("item whose asset file is missing", o)
    assert o.code == 1, o.console
    tiles = manifest(out)["tiles"]
    n = len(tiles)
    assert {t["status"] for t in tiles} == {"failed"} and n > 1
    lines = o.stderr.splitlines()
    header = next(i for i, ln in enumerate(lines) if f"{n} tile(s) failed, by cause" in ln)
    # One cause, then one line per tile naming the asset (five, then a count).
    assert lines[header + 1].startswith(f"  {n} x "), lines[header:]
    assert all("red-deleted.tif" in ln for ln in lines[header + 2:header + 7]), lines[header:]
    assert not [ln for ln in lines if "odc.loader" in ln], "one line per tile, not per read"
    report = (out / "report.md").read_text()
    assert "## Failed tiles, by cause" in report and "red-deleted.tif" in report
    assert (out / "inventory" / "glaciers.parquet").is_file(), "outputs written anyway"


@pytest.mark.parametrize("catalog", ["cloudy", "nodata"])
def test_a_scene_all_cloud_or_all_nodata_is_no_data_in_one_line(
        catalog: str, world: World, prefect: tuple[str, Path], tmp_path: Path) -> None:
    out, o = run(world, prefect, tmp_path, catalog)
    record(f"{'all-cloud' if catalog == 'cloudy' else 'all-no-data'} scene", o)
    assert o.code == 0, o.console
    tiles = manifest(out)["tiles"]
    assert {t["status"] for t in tiles} == {"no-data"}
    no_data = [ln for ln in o.stderr.splitlines() if ln.startswith("no tile had usable data")]
    assert len(no_data) == 1 and f"{len(tiles)} tile(s) no-data" in no_data[0], o.stderr


def test_an_item_without_a_cloud_mask(world: World, prefect: tuple[str, Path],
                                      tmp_path: Path) -> None:
    out, o = run(world, prefect, tmp_path, "nomask")
    record("item without a cloud mask", o)
    assert o.code == 0, o.console
    assert "note: items of sentinel-2-l2a carry no cloud mask" in o.stderr
    assert {t["status"] for t in manifest(out)["tiles"]} == {"done"}
    assert "## Clouds" in (out / "report.md").read_text()


@pytest.mark.parametrize("where", ["antimeridian", "pole"])
def test_an_aoi_across_the_antimeridian_or_at_a_pole(where: str, world: World,
                                                     prefect: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    aoi = ANTIMERIDIAN_AOI if where == "antimeridian" else POLE_AOI
    out, o = run(world, prefect, tmp_path, where, "--resolution", "30", aoi=aoi)
    record(f"AOI {'across the antimeridian' if where == 'antimeridian' else 'at a pole'}", o)
    assert o.code == 0, o.console
    tiles = manifest(out)["tiles"]
    assert tiles and {t["status"] for t in tiles} == {"done"}, tiles
    zones = {t["tile_id"].split("_")[0] for t in tiles}
    assert zones == ({"32660", "32601"} if where == "antimeridian" else {"3031"}), zones
    inventory = gpd.read_parquet(out / "inventory" / "glaciers.parquet")
    # The scene's glacier disk: radius 0.3 x 96 px x 30 m, about 2.3 km².
    assert 1.5 < inventory["area_km2"].sum() < 3.0, inventory["area_km2"].sum()
    for t in tiles:  # footprints split at ±180 / closed along the pole, never round the world
        footprint = shape(json.loads((out / "tiles" / t["tile_id"] / "item.json").read_text())[
            "geometry"])
        assert footprint.is_valid, (t["tile_id"], footprint.bounds)
        if where == "antimeridian":  # two thin parts at ±180, not a band round the Earth
            assert footprint.area < 0.01, (t["tile_id"], footprint.bounds)


def test_a_second_run_into_the_same_out_holds_only_its_own_tiles(
        world: World, prefect: tuple[str, Path], tmp_path: Path) -> None:
    out, first = run(world, prefect, tmp_path, "clear")
    n1 = len(manifest(out)["tiles"])
    assert first.code == 0 and n1 > 2, first.console
    first_km2 = gpd.read_parquet(out / "inventory" / "glaciers.parquet")["area_km2"].sum()
    small = (-117.2715, 52.1752, -117.2705, 52.1758)  # the glacier's centre: one or two tiles
    out, second = run(world, prefect, tmp_path, "clear", "--model", "ndsi", aoi=small)
    record("second run, smaller area, other model, same --out", second)
    assert second.code == 0, second.console
    m = manifest(out)
    mine = {t["tile_id"] for t in m["tiles"]}
    other = n1 - len(mine)
    assert other > 0 and m["other_tiles_ignored"] == other, m
    inventory = gpd.read_parquet(out / "inventory" / "glaciers.parquet")
    assert {t for ids in inventory["tile_ids"] for t in str(ids).split(",")} <= mine
    assert 0 < inventory["area_km2"].sum() < first_km2
    assert f"{other} tile(s) of other runs in this output left out" in second.stdout
    assert f"left out of this inventory: {other}" in (out / "report.md").read_text()
    assert len(list((out / "tiles").glob("*/item.json"))) == n1, "nothing written was lost"
    merged = glacierscale("merge", "--out", str(out), home=tmp_path / "home")
    assert merged.code == 0 and f"merged {n1} tiles" in merged.stdout, merged.console


# --------------------------------------------------------------------------- secrets


SECRETS = {
    "asset signature": "SigZq8vX2pLw9sT4nB7kD3mF6hJ",
    "catalog password (in the YAML config)": "PwYk2Lq8Nd4Rt6Vb",
    "AWS secret key": "AwsSecretW9xC3vB7nM2kL5pQ8rT1",
    "AWS access key id": "AKIAGLACIERPLANTED01",
    "reference URL token": "TokQ7wE4rT9yU2iO5p",
    "GDAL bearer token": "BearerX8cV3bN6mQ1wE",
}


@pytest.fixture
def secret_world(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Scenes, items and a reference served over HTTP with signed URLs, behind a STAC API."""
    root = tmp_path / "served"
    athabasca = (0.5 * (AOI[0] + AOI[2]), 0.5 * (AOI[1] + AOI[3]))
    to_utm = Transformer.from_crs(4326, 32611, always_xy=True)
    cx, cy = to_utm.transform(*athabasca)
    east = Transformer.from_crs(32611, 4326, always_xy=True).transform(cx + 2600, cy)
    a = scene(root / "a", 32611, athabasca, 256)
    b = scene(root / "b", 32611, east, 128)
    gpd.GeoDataFrame(geometry=[Point(cx, cy).buffer(700)], crs=32611).to_crs(4326).to_file(
        root / "ref.gpkg")
    sig = quote(SECRETS["asset signature"])
    with range_server(root) as (url, _log):
        def signed(path: Path) -> str:
            return f"{url}/{path.relative_to(root)}?se=2030-01-01&sp=r&sig={sig}"

        raster = {k: {"scale": 1e-4, "offset": 0.0, "nodata": 0} for k in a if k != "scl"}
        items = []
        for name, files in (("s2-a", a), ("s2-b", b)):
            item = make_item(name, "sentinel-2-l2a", WHEN, files, raster=raster,
                             properties={"eo:cloud_cover": 5.0})
            for key, path in files.items():
                item.assets[key].href = signed(path)
            items.append(item)
        items[1].assets["red"].href = signed(root / "b" / "red-missing.tif")
        ndjson = tmp_path / "items.ndjson"
        ndjson.write_text("\n".join(json.dumps(i.to_dict(transform_hrefs=False)) for i in items))
        w, s = Transformer.from_crs(32611, 4326, always_xy=True).transform(cx - 300, cy - 300)
        e, n = Transformer.from_crs(32611, 4326, always_xy=True).transform(cx + 2900, cy + 300)
        with services.stac_api([ndjson]) as stac:
            yield {"stac": stac, "aoi": f"{w:.5f},{s:.5f},{e:.5f},{n:.5f}",
                   "reference": f"{url}/ref.gpkg?token={SECRETS['reference URL token']}"}


def test_no_secret_leaves_the_process(world: World, prefect: tuple[str, Path], tmp_path: Path,
                                      secret_world: dict[str, str], s3_server: str) -> None:
    """Secrets planted in every place a user could put one; every output, the console and the
    Prefect server's records are searched for each of them."""
    import boto3

    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": SECRETS["AWS access key id"],
           "AWS_SECRET_ACCESS_KEY": SECRETS["AWS secret key"], "AWS_DEFAULT_REGION": "us-east-1",
           "GDAL_HTTP_BEARER": SECRETS["GDAL bearer token"]}
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    bucket = f"gs-secrets-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    catalog = secret_world["stac"].replace(
        "http://", f"http://glacier:{SECRETS['catalog password (in the YAML config)']}@")
    config = tmp_path / "run.yaml"
    config.write_text(f"catalog: {catalog}\nmax_cloud_cover: 80\n")
    outcome = glacierscale(
        "run", "--aoi", secret_world["aoi"], "--config", str(config), "--out",
        f"s3://{bucket}/run", "--reference", secret_world["reference"], *DATES, *SMALL,
        home=tmp_path / "home", env={"PREFECT_API_URL": prefect[0], **env})
    record("secrets planted everywhere (signed hrefs, one asset missing)", outcome)
    assert outcome.code == 1, outcome.console
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "run/manifest.json" in keys and "run/report.md" in keys
    assert any(k.endswith("/glacier_prob.tif") for k in keys), "some tiles were done"
    assert any(k.endswith("/item.json") for k in keys)
    places = {"console": outcome.console.encode()}
    places.update({f"s3://{bucket}/{k}": s3.get_object(Bucket=bucket, Key=k)["Body"].read()
                   for k in keys})
    # The Prefect server's records: flow and subflow parameters, logs, artifacts (its database).
    places.update({str(p): p.read_bytes() for p in prefect[1].rglob("*") if p.is_file()})
    api = httpx.post(f"{prefect[0]}/artifacts/filter", json={}).text
    places["artifacts via the API"] = api.encode()
    assert "glacierscale-run-summary" in api
    manifest_doc = json.loads(places[f"s3://{bucket}/run/manifest.json"])
    assert "sig=***" in json.dumps(manifest_doc), "the failed asset is named, redacted"
    for what, secret in SECRETS.items():
        for form in {secret, quote(secret, safe="")}:
            leaks = {where: _around(data, form.encode()) for where, data in places.items()
                     if form.encode() in data}
            assert not leaks, f"the {what} leaked into {leaks}"


def _around(data: bytes, needle: bytes, width: int = 120) -> str:
    i = data.index(needle)
    return data[max(0, i - width):i + len(needle) + 20].decode(errors="replace")


# --------------------------------------------------------------------------- console, flows


def test_the_progress_bar_counts_tiles_km2_and_eta() -> None:
    import io

    from rich.console import Console

    from glacierscale.cli.run import TileProgress, make_progress
    from glacierscale.pipeline import TileResult

    buf = io.StringIO()
    progress = make_progress(Console(file=buf, force_terminal=True, width=160))
    with progress:
        bar = TileProgress(progress)
        bar.planned(4)
        for status, km2 in (("done", 1.25), ("no-data", 0.0), ("failed", 0.0)):
            bar.tile_done(TileResult(f"32611_0046_041{len(bar.counts)}", status,
                                     glacier_km2=km2))
        progress.refresh()
    text = buf.getvalue()
    assert "3/4" in text and "done 1 · no-data 1 · failed 1 · 1.2 km²" in text
    assert "ETA" in text


def test_a_local_run_tells_its_progress_listener_of_every_tile(
        world: World, prefect: tuple[str, Path], tmp_path: Path) -> None:
    """The path behind the progress bar (which a test's console, not a terminal, never shows):
    ``run`` tells the listener of the plan, then of each tile once, as it lands."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from glacierscale.config import GridConfig, InferConfig, RunConfig
    from glacierscale.orchestrate import run as run_flow

    class Listener:
        def __init__(self) -> None:
            self.total: int | None = None
            self.tiles: list[str] = []

        def planned(self, n_tiles: int) -> None:
            self.total = n_tiles

        def tile_done(self, result: object) -> None:
            assert self.total is not None, "told of a tile before the plan"
            self.tiles.append(result.tile_id)  # type: ignore[attr-defined]

    cfg = RunConfig(aoi=aoi_text(AOI), catalog=world.catalogs["clear"], out=str(tmp_path / "o"),
                    start="2020-08-01", end="2020-09-30", workers=1,
                    grid=GridConfig(tile_size_px=64, halo_px=8), infer=InferConfig(window_px=64))
    listener = Listener()
    with temporary_settings({PREFECT_API_URL: prefect[0]}):
        summary = run_flow(cfg, progress=listener)
    ids = [r["tile_id"] for r in summary.manifest]
    assert listener.total == len(ids) and sorted(listener.tiles) == sorted(ids)


def test_a_deployed_flow_fails_its_preflight_at_once(world: World, prefect: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    """The flow run fails before any task, its state message the preflight's message."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from glacierscale.orchestrate import global_inventory

    with temporary_settings({PREFECT_API_URL: prefect[0]}):
        state = global_inventory(out=str(tmp_path / "out"), catalog=world.catalogs["clear"],
                                 bbox=aoi_text(AOI), sensors=["sentinel-2-l2"],
                                 start=None, end=None, return_state=True)
        assert state.is_failed()
        assert state.message.startswith("--collections: collection 'sentinel-2-l2' is not in")
        assert "did you mean 'sentinel-2-l2a'?" in state.message
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(run_id)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[run_id])))
        assert flow_run.state is not None and flow_run.state.message == state.message
        assert not tasks, "a task ran before the preflight failed the flow"
    assert not (tmp_path / "out").exists()

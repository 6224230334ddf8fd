"""The small world the bad-input suite runs in, and the way a user runs the CLI.

Seeded Sentinel-2-like scenes (a bright glacier disk on dark rock, 10 m, uint16 x 0.0001, SCL),
each in its own local STAC catalog: a clean scene, one all cloud, one all no-data, one without a
cloud mask, one whose red band file is missing, one across the antimeridian and one at the south
pole. ``glacierscale`` is run as a user types it, in a subprocess with its own ``PREFECT_HOME``, so
the console it prints and whether Prefect ever started can both be checked.

The test modules ``test_bad_input*.py`` import these helpers; the tests here check the world is
what those cases assume.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from glacierscale.catalog import write_items
from glacierscale.testing.rasters import make_item, write_cog

BIN = Path(sys.executable).parent
#: The Sentinel-2 bands of a scene: (glacier DN, rock DN); reflectance is DN x 0.0001.
BANDS = {"blue": (6500, 1500), "green": (6000, 1500), "red": (6000, 1000),
         "nir08": (5000, 1800), "swir16": (500, 2000), "swir22": (300, 1800)}
SCL_CLEAR, SCL_CLOUD = 4, 9
WHEN = datetime(2020, 9, 11, 18, 40, tzinfo=UTC)
DATES = ["--start", "2020-08-01", "--end", "2020-09-30"]
#: Small tiles keep a run to seconds: 64 px cores, 8 px halo, one 64 px window.
SMALL = ["--tile-size-px", "64", "--halo-px", "8", "--window-px", "64", "--workers", "1"]
#: Athabasca-like place: a box of 2 x 2 tiles at 10 m and the scene under it.
AOI = (-117.28, 52.17, -117.262, 52.181)
ANTIMERIDIAN_AOI = (179.995, 52.0, -179.995, 52.005)
POLE_AOI = (-180.0, -90.0, 180.0, -89.995)


def aoi_text(box: tuple[float, float, float, float]) -> str:
    return ",".join(f"{v:g}" for v in box)


def scene(root: Path, epsg: int, center: tuple[float, float], size_px: int,
          kind: str = "clear", resolution: float = 10.0) -> dict[str, Path]:
    """COGs of one scene centred at lon/lat ``center``: S2 bands + SCL; ``kind`` is ``clear``,
    ``cloud`` (SCL all cloud) or ``nodata`` (every pixel 0, the nodata value)."""
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(*center)
    half = size_px * resolution / 2
    transform = Affine(resolution, 0, x - half, 0, -resolution, y + half)
    yy, xx = np.mgrid[:size_px, :size_px] - (size_px - 1) / 2
    ice = np.hypot(xx, yy) < 0.3 * size_px
    rng = np.random.default_rng(14497)
    crs = f"EPSG:{epsg}"
    paths = {}
    for key, (glacier, rock) in BANDS.items():
        data = np.where(ice, glacier, rock) + rng.integers(0, 50, ice.shape)
        if kind == "nodata":
            data[:] = 0
        paths[key] = write_cog(root / f"{key}.tif", data.astype("uint16"), crs, transform,
                               nodata=0, blocksize=128)
    scl = np.full(ice.shape, SCL_CLOUD if kind == "cloud" else SCL_CLEAR, "uint8")
    paths["scl"] = write_cog(root / "scl.tif", scl, crs, transform, nodata=0, blocksize=128)
    return paths


def catalog_of(root: Path, item_id: str, assets: dict[str, Path],
               hrefs: dict[str, str] | None = None) -> str:
    """A one-item local catalog (a folder of item JSON) of the Sentinel-2 collection."""
    raster = {k: {"scale": 1e-4, "offset": 0.0, "nodata": 0} for k in assets if k != "scl"}
    item = make_item(item_id, "sentinel-2-l2a", WHEN, assets, raster=raster,
                     properties={"eo:cloud_cover": 5.0, "platform": "sentinel-2a"})
    for key, href in (hrefs or {}).items():
        item.assets[key].href = href
    folder = root / "catalog"
    write_items([item], folder)
    return str(folder)


@dataclass(frozen=True)
class World:
    """Catalog folders by case, and the folder they live in."""

    root: Path
    catalogs: dict[str, str]


def build_world(root: Path) -> World:
    """Every catalog of the suite (about two seconds of COG writing)."""
    athabasca = (0.5 * (AOI[0] + AOI[2]), 0.5 * (AOI[1] + AOI[3]))
    cats: dict[str, str] = {}
    for name, kind in (("clear", "clear"), ("cloudy", "cloud"), ("nodata", "nodata")):
        cats[name] = catalog_of(root / name, f"s2-{name}",
                                scene(root / name / "cog", 32611, athabasca, 256, kind))
    clear = scene(root / "nomask" / "cog", 32611, athabasca, 256)
    clear.pop("scl")
    cats["nomask"] = catalog_of(root / "nomask", "s2-nomask", clear)
    assets = scene(root / "missing" / "cog", 32611, athabasca, 256)
    cats["missing"] = catalog_of(root / "missing", "s2-missing", assets,
                                 {"red": str(root / "missing" / "cog" / "red-deleted.tif")})
    cats["antimeridian"] = catalog_of(root / "antimeridian", "s2-antimeridian", scene(
        root / "antimeridian" / "cog", 32660, (180.0, 52.0025), 96, resolution=30.0))
    cats["pole"] = catalog_of(root / "pole", "s2-pole", scene(
        root / "pole" / "cog", 3031, (0.0, -90.0), 96, resolution=30.0))
    return World(root, cats)


# --------------------------------------------------------------------------- running the CLI


@dataclass(frozen=True)
class Outcome:
    """What a user saw: exit code, console, seconds to the exit, whether Prefect started."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    prefect_started: bool

    @property
    def console(self) -> str:
        return self.stdout + self.stderr

    @property
    def message(self) -> str:
        """The first line glacierscale itself printed about the problem."""
        for line in self.stderr.splitlines():
            if line.startswith(("error:", "note:")) or "tile(s) failed" in line \
                    or line.startswith("no tile had"):
                return line
        return (self.stdout.strip().splitlines() or [""])[0]


def glacierscale(*args: str, home: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 900) -> Outcome:
    """Run ``glacierscale ARGS`` in a fresh process with its own, empty ``PREFECT_HOME``."""
    home.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "AWS_", "GLACIERSCALE_DEBUG"))}
    base.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "COLUMNS": "200", **(env or {})})
    t0 = time.perf_counter()
    res = subprocess.run([str(BIN / "glacierscale"), *args], capture_output=True, text=True,
                         env=base, cwd=cwd or home, timeout=timeout)
    seconds = time.perf_counter() - t0
    return Outcome(res.returncode, res.stdout, res.stderr, seconds,
                   any(p.name.startswith("prefect.db") for p in home.rglob("*")))


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def earlier_run(out: Path) -> dict[str, str]:
    """An output folder as an earlier run left it (a tile, manifest, report, inventory)."""
    tile = out / "tiles" / "32611_0046_0411"
    tile.mkdir(parents=True)
    (tile / "item.json").write_text(json.dumps({"type": "Feature", "id": "32611_0046_0411"}))
    (tile / "glacier_mask.tif").write_bytes(b"II*\0 earlier run")
    (out / "inventory").mkdir()
    (out / "inventory" / "glaciers.parquet").write_bytes(b"PAR1 earlier run PAR1")
    (out / "manifest.json").write_text('{"tiles": []}')
    (out / "report.md").write_text("# an earlier run\n")
    return snapshot(out)


def record(case: str, outcome: Outcome) -> None:
    """Add a row to the table of docs/errors.md when ``GLACIERSCALE_ERRORS_TABLE`` names a file."""
    path = os.environ.get("GLACIERSCALE_ERRORS_TABLE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, "exit": outcome.code, "message": outcome.message,
                                "seconds": round(outcome.seconds, 1),
                                "prefect_started": outcome.prefect_started}) + "\n")


# --------------------------------------------------------------------------- the world itself


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def _read(path: str) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.asarray(ds.read(1))


def test_the_scenes_are_what_the_cases_assume(world: World) -> None:
    items = {name: json.loads(next(Path(c).glob("*.json")).read_text())
             for name, c in world.catalogs.items()}
    clear = items["clear"]["assets"]
    ratio = _read(clear["red"]["href"]).astype(float) / _read(clear["swir16"]["href"])
    assert 0.2 < (ratio > 2.8).mean() < 0.4, "a glacier disk of about 28 % of the scene"
    assert (_read(items["cloudy"]["assets"]["scl"]["href"]) == SCL_CLOUD).all()
    assert not _read(items["nodata"]["assets"]["red"]["href"]).any()
    assert "scl" not in items["nomask"]["assets"]
    assert not Path(items["missing"]["assets"]["red"]["href"]).exists()
    assert Path(items["missing"]["assets"]["green"]["href"]).exists()
    w, _, e, _ = items["antimeridian"]["bbox"]
    assert w > e, "the antimeridian scene's bbox crosses 180°"
    assert items["pole"]["bbox"][1] == -90.0, "the polar scene covers the south pole"

"""A rehearsal world: glacier-like shapes everywhere glaciers are, seen by scene-sized STAC items.

:func:`build_world` makes, for the real reference glaciers of ``../shared/data/global`` (every RGI
region) plus generated shapes that cross borders (UTM zones, the antimeridian, the UTM/polar edge,
plain tile borders):

- the glacier outlines (GeoParquet, lon/lat, RGI ids and O1 regions): the run's ``outlines``;
- scene-sized Sentinel-2 L2A items, each in its own UTM zone or polar projection on a 100 km scene
  grid of its own (MGRS-like: squares of ``scene_km`` with overlap, offset from the tile grid), so
  tiles read across scenes and reproject across zones as with real data; each scene's COG assets
  (``red``, ``swir16``) hold the shapes as bright-red/dark-SWIR ice on dark rock;
- a STAC item file (``items.ndjson``) whose asset hrefs are completed when served.

Scenes exist where the plan's tiles (with halo) need them, one acquisition date per zone. Every
pixel is a pure function of the shapes, so two runs of the same plan must give identical outputs.
:mod:`glacierscale.testing.world_services` serves a world (COGs over HTTP with ranges, a STAC API,
an S3 store) behind fault-injecting servers.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from glacierscale.config import GridConfig, sample_data_dir
from glacierscale.core.tiles import grid_origin
from glacierscale.core.zones import (
    UTM_NORTH_LIMIT,
    UTM_SOUTH_LIMIT,
    to_projected,
    zone_clip_polygon,
    zone_epsg,
    zones_touching,
)

COLLECTION = "sentinel-2-l2a"
#: Reflectance DN (x 1e-4) of ice and rock: red/SWIR = 15 on ice, 0.4 on rock (threshold 2.8).
ICE = {"red": 6000, "swir16": 400}
ROCK = {"red": 700, "swir16": 1700}
BASE_TOKEN = "@WORLD_BASE@"  # asset hrefs are "@WORLD_BASE@/scenes/<id>/<band>.tif" until served
KINDS = ("reference", "utm-border", "antimeridian", "polar-edge", "tile-border")


@dataclass(frozen=True)
class WorldSpec:
    """The world's grid, scenes and generated border shapes."""

    tile_size_px: int = 128
    resolution: float = 120.0
    halo_px: int = 16
    window_px: int = 64  # tiles of 2x2 inference windows
    scene_km: float = 109.8  # MGRS: 100 km squares with 9.8 km overlap
    scene_step_km: float = 100.0
    scene_offset_m: float = 4_037.0  # scene grids do not sit on the tile grid
    n_utm_border: int = 24
    n_antimeridian: int = 3
    n_polar_edge: int = 3
    n_tile_border: int = 24
    regions: tuple[str, ...] = ()  # reference glaciers of these O1 regions only (all if empty)
    max_reference: int | None = None  # at most this many reference glaciers (spread evenly)
    date: str = "2024-08-20"
    seed: int = 0

    def grid(self) -> GridConfig:
        return GridConfig(tile_size_px=self.tile_size_px, resolution=self.resolution,
                          halo_px=self.halo_px)

    def settings(self) -> dict[str, Any]:
        """The ``settings`` flow parameter that runs this world's grid and windows."""
        return {"grid": self.grid().model_dump(), "infer": {"window_px": self.window_px}}

    def token(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class World:
    """A built world on disk."""

    root: Path
    spec: WorldSpec
    shapes: gpd.GeoDataFrame  # rgi_id, o1region, kind, geometry (EPSG:4326)
    n_scenes: int

    @property
    def outlines(self) -> Path:
        return self.root / "outlines.parquet"

    @property
    def items_template(self) -> Path:
        return self.root / "items.template.ndjson"

    def border_shapes(self) -> gpd.GeoDataFrame:
        return self.shapes[self.shapes["kind"] != "reference"]

    def items_ndjson(self, base_url: str, path: Path | None = None) -> Path:
        """The items with asset hrefs under ``base_url`` (where ``root`` is served)."""
        out = path or self.root / "items.ndjson"
        out.write_text(self.items_template.read_text().replace(BASE_TOKEN, base_url.rstrip("/")))
        return out


# --------------------------------------------------------------------------- shapes


def reference_glaciers(data: Path | None = None) -> pd.DataFrame:
    """The real reference glaciers (WGMS, Leclercq, GlaThiDa links), one row per RGI id:
    ``rgi_id, o1region, lon, lat, area_km2`` (area NaN when the source has none)."""
    base = data or sample_data_dir()
    if base is None:
        raise FileNotFoundError("sample data not found: set GLACIERSCALE_SAMPLE_DATA")
    g = base / "global"
    w = pd.read_csv(g / "rgi_wgms_links_20220112.csv")
    le = pd.read_csv(g / "rgi_leclercq_links_2014_RGIV6.csv")
    gt = pd.read_csv(g / "rgi_glathida_links.csv")
    df = pd.concat([
        pd.DataFrame({"rgi_id": w.RGI60_ID, "lon": w.CenLon, "lat": w.CenLat, "area_km2": np.nan}),
        pd.DataFrame({"rgi_id": le.RGI_ID, "lon": le.LON, "lat": le.LAT, "area_km2": le.AREA}),
        pd.DataFrame({"rgi_id": gt.RGI60_ID, "lon": gt.GTD_LON, "lat": gt.GTD_LAT,
                      "area_km2": gt.GTD_AREA}),
    ], ignore_index=True).dropna(subset=["rgi_id", "lon", "lat"])
    df["area_km2"] = pd.to_numeric(df["area_km2"], errors="coerce")
    df["o1region"] = df["rgi_id"].str.extract(r"RGI\d\d-(\d\d)\.", expand=False)
    df = df.dropna(subset=["o1region"]).sort_values(["rgi_id", "area_km2"])
    return df.drop_duplicates("rgi_id").sort_values("rgi_id").reset_index(drop=True)


def glacier_shape(lon: float, lat: float, area_km2: float, rng: np.random.Generator,
                  along_deg: float = 0.0, elongation: float = 1.6) -> Polygon | MultiPolygon:
    """A lumpy ellipse of ``area_km2`` centred on lon/lat, its long axis ``along_deg`` from east.

    Built in local metres and returned in lon/lat; one that crosses the antimeridian is split at
    ±180 into a MultiPolygon (RFC 7946), as outline files store it.
    """
    k = 48
    t = np.linspace(0.0, 2.0 * np.pi, k, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, 3)
    lump = 1.0 + 0.12 * np.sin(3 * t + phase[0]) + 0.08 * np.sin(5 * t + phase[1]) \
        + 0.05 * np.sin(7 * t + phase[2])
    b = math.sqrt(area_km2 * 1e6 / (math.pi * elongation))
    a = b * elongation
    x, y = a * np.cos(t) * lump, b * np.sin(t) * lump
    ang = math.radians(along_deg)
    xr, yr = x * math.cos(ang) - y * math.sin(ang), x * math.sin(ang) + y * math.cos(ang)
    cos = max(math.cos(math.radians(lat)), 0.02)
    lons = lon + xr / (111_320.0 * cos)
    lats = lat + yr / 110_574.0
    poly = Polygon(np.column_stack([lons, lats]))
    if lons.max() <= 180.0 and lons.min() >= -180.0:
        return poly
    east = poly.intersection(box(-360.0, -90.0, 180.0, 90.0))
    west = shapely.affinity.translate(poly.intersection(box(180.0, -90.0, 540.0, 90.0)), -360.0)
    return MultiPolygon([east, west])


def _local_gap(geom: Any, gap_m: float) -> Any:
    lat = geom.centroid.y
    return geom.buffer(gap_m / (111_320.0 * max(math.cos(math.radians(lat)), 0.05)))


class _Placer:
    """Shapes placed so far; a candidate is accepted only ``gap_m`` away from all of them."""

    def __init__(self, gap_m: float = 4_000.0) -> None:
        self.gap_m = gap_m
        self.geoms: list[Any] = []

    def free(self, geom: Any) -> bool:
        probe = _local_gap(geom, self.gap_m)
        return not any(probe.intersects(g) for g in self.geoms
                       if abs(g.centroid.y - geom.centroid.y) < 1.0)

    def add(self, geom: Any) -> None:
        self.geoms.append(geom)


@dataclass(frozen=True)
class _Ref:
    rgi_id: str
    o1region: str
    lon: float
    lat: float
    area_km2: float


def _refs(df: pd.DataFrame) -> list[_Ref]:
    cols = [df[c].tolist() for c in ("rgi_id", "o1region", "lon", "lat", "area_km2")]
    return [_Ref(str(i), str(o), float(x), float(y), float(a)) for i, o, x, y, a in zip(
        *cols, strict=True)]


def _reference_shapes(refs: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = []
    for r in _refs(refs):
        area = float(np.clip(r.area_km2, 1.5, 12.0)) if np.isfinite(r.area_km2) else 3.0
        rows.append({"rgi_id": r.rgi_id, "o1region": r.o1region, "kind": "reference",
                     "geometry": glacier_shape(r.lon, r.lat, area, rng,
                                               along_deg=float(rng.uniform(0, 180)))})
    return rows


def _border_shapes(refs: pd.DataFrame, spec: WorldSpec, placer: _Placer,
                   rng: np.random.Generator) -> list[dict[str, Any]]:
    """Shapes centred on UTM zone borders, the antimeridian, 84N/80S and tile corners."""
    rows: list[dict[str, Any]] = []

    def put(kind: str, region: str, lon: float, lat: float, along: float, area: float) -> bool:
        geom = glacier_shape(lon, lat, area, rng, along_deg=along, elongation=2.2)
        if not placer.free(geom):
            return False
        placer.add(geom)
        n = sum(1 for r in rows if r["kind"] == kind)
        rows.append({"rgi_id": f"WORLD-{kind}-{n + 1:03d}", "o1region": region, "kind": kind,
                     "geometry": geom})
        return True

    # Fixed places: the antimeridian (Chukotka, Aleutians, Ross Sea coast) and the UTM/polar
    # edges (Ellesmere and North Greenland at 84N, the Ellsworth Mountains at 80S).
    for region, lat in (("10", 65.2), ("01", 51.9), ("19", -71.4))[:spec.n_antimeridian]:
        put("antimeridian", region, 180.0, lat, 0.0, 6.0)
    for region, lon, lat in (("03", -70.5, UTM_NORTH_LIMIT), ("05", -38.0, UTM_NORTH_LIMIT),
                             ("19", -81.0, UTM_SOUTH_LIMIT))[:spec.n_polar_edge]:
        put("polar-edge", region, lon, lat, 90.0, 6.0)
    # Zone borders and tile corners near reference glaciers, spread over regions.
    order = refs.sample(frac=1.0, random_state=spec.seed).sort_values(
        "o1region", kind="stable").groupby("o1region").cumcount()
    spread = _refs(refs.loc[order.sort_values(kind="stable").index])
    size_m = spec.tile_size_px * spec.resolution
    for r in spread:
        if sum(x["kind"] == "utm-border" for x in rows) >= spec.n_utm_border:
            break
        border = round(r.lon / 6.0) * 6.0
        if abs(border) >= 180.0 or not UTM_SOUTH_LIMIT + 1 < r.lat < UTM_NORTH_LIMIT - 1:
            continue
        for dlat in (0.0, 0.08, -0.08, 0.16, -0.16, 0.3, -0.3):
            if put("utm-border", r.o1region, border, r.lat + dlat, 0.0, 5.0):
                break
    for r in spread[::-1]:
        if sum(x["kind"] == "tile-border" for x in rows) >= spec.n_tile_border:
            break
        epsg = int(zone_epsg(r.lon, r.lat))
        ox, oy = grid_origin(epsg)
        x, y = to_projected(epsg).transform(r.lon, r.lat)
        cx, cy = ox + round((x - ox) / size_m) * size_m, oy - round((oy - y) / size_m) * size_m
        for dx, dy in ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1)):
            lon, lat = to_projected(epsg).transform(cx + dx * size_m, cy + dy * size_m,
                                                    direction="INVERSE")
            if int(zone_epsg(lon, lat)) != epsg:
                continue
            if put("tile-border", r.o1region, lon, lat, float(rng.uniform(20, 70)), 4.0):
                break
    return rows


def world_shapes(spec: WorldSpec, data: Path | None = None) -> gpd.GeoDataFrame:
    """Reference glacier shapes plus the generated border shapes (EPSG:4326)."""
    rng = np.random.default_rng(spec.seed)
    refs = reference_glaciers(data)
    if spec.regions:
        refs = refs[refs["o1region"].isin(spec.regions)].reset_index(drop=True)
    if spec.max_reference is not None and len(refs) > spec.max_reference:
        step = len(refs) / spec.max_reference
        refs = refs.iloc[[int(i * step) for i in range(spec.max_reference)]].reset_index(
            drop=True)
    placer = _Placer()
    ref_rows = _reference_shapes(refs, rng)
    for row in ref_rows:
        placer.add(row["geometry"])
    rows = ref_rows + _border_shapes(refs, spec, placer, rng)
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)


# --------------------------------------------------------------------------- scenes


def _scene_origin(epsg: int, spec: WorldSpec) -> tuple[float, float]:
    ox, oy = grid_origin(epsg)
    return ox + spec.scene_offset_m, oy - spec.scene_offset_m


def needed_scenes(halo_footprints: Any, spec: WorldSpec) -> list[tuple[int, int, int]]:
    """(epsg, i, j) of every scene whose square meets a tile footprint (lon/lat) within the
    ground of the scene's own zone: how a real catalog covers the tiles, with overlap."""
    step = spec.scene_step_km * 1000.0
    side = spec.scene_km * 1000.0
    found: set[tuple[int, int, int]] = set()
    for fp in halo_footprints:
        parts = list(fp.geoms) if hasattr(fp, "geoms") else [fp]
        for part in parts:
            for epsg in zones_touching(part.bounds):
                tr = to_projected(epsg)
                ring = shapely.get_coordinates(shapely.segmentize(part.exterior, 0.01))
                x, y = tr.transform(ring[:, 0], ring[:, 1])
                poly = Polygon(np.column_stack([x, y])).buffer(0)
                ground = zone_clip_polygon(epsg, poly.bounds).intersection(poly)
                if ground.is_empty:
                    continue
                sx, sy = _scene_origin(epsg, spec)
                minx, miny, maxx, maxy = ground.bounds
                for i in range(math.floor((minx - sx - side) / step) + 1,
                               math.floor((maxx - sx) / step) + 1):
                    for j in range(math.floor((sy - maxy - side) / step) + 1,
                                   math.floor((sy - miny) / step) + 1):
                        x0, y1 = sx + i * step, sy - j * step
                        if box(x0, y1 - side, x0 + side, y1).intersects(ground):
                            found.add((epsg, i, j))
    return sorted(found)


def _acquired(epsg: int, lon: float, spec: WorldSpec) -> datetime:
    """One acquisition per zone: zones alternate dates; ~local noon, so the solar day holds."""
    day = date.fromisoformat(spec.date) + timedelta(days=(epsg % 100) % 3)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return noon - timedelta(hours=lon / 15.0)


def write_scene(root: Path, epsg: int, i: int, j: int, shapes: gpd.GeoDataFrame,
                spec: WorldSpec) -> dict[str, Any]:
    """Write one scene's COGs (red, swir16) and return its STAC item (hrefs under BASE_TOKEN)."""
    import rasterio
    from affine import Affine
    from rasterio.features import rasterize

    from glacierscale.catalog.index import raster_asset, raster_item
    from glacierscale.core.footprint import raster_footprint
    from glacierscale.core.zones import to_lonlat
    from glacierscale.io.cog import build_cog

    step, side, res = spec.scene_step_km * 1000.0, spec.scene_km * 1000.0, spec.resolution
    sx, sy = _scene_origin(epsg, spec)
    x0, y1 = sx + i * step, sy - j * step
    n = round(side / res)
    transform = Affine(res, 0.0, x0, 0.0, -res, y1)
    bounds = (x0, y1 - n * res, x0 + n * res, y1)
    tr = to_projected(epsg)
    clon, clat = to_lonlat(epsg).transform(x0 + side / 2, y1 - side / 2)
    footprint, _ = raster_footprint(f"EPSG:{epsg}", bounds)
    # Shapes on the scene, projected into the scene's CRS part by part.
    near = []
    for idx in shapes.sindex.query(footprint, predicate="intersects"):
        geom = shapes.geometry.iloc[int(idx)]
        for p in (list(geom.geoms) if hasattr(geom, "geoms") else [geom]):
            c = shapely.get_coordinates(p.exterior)
            x, y = tr.transform(c[:, 0], c[:, 1])
            near.append(Polygon(np.column_stack([x, y])))
    ice = rasterize([(g, 1) for g in near], out_shape=(n, n), transform=transform,
                    fill=0, dtype="uint8") if near else np.zeros((n, n), "uint8")
    item_id = f"S2W_{epsg}_{i:+04d}_{j:+04d}"
    folder = root / "scenes" / item_id
    folder.mkdir(parents=True, exist_ok=True)
    assets: dict[str, dict[str, Any]] = {}
    for band in ("red", "swir16"):
        data = np.where(ice == 1, ICE[band], ROCK[band]).astype("uint16")
        path = build_cog(folder / f"{band}.tif", data, transform=transform, crs=f"EPSG:{epsg}",
                         nodata=0, descriptions=[band])
        with rasterio.open(path) as ds:
            asset = raster_asset(ds, f"{BASE_TOKEN}/scenes/{item_id}/{band}.tif",
                                 band={"scale": 1e-4, "offset": 0.0, "nodata": 0})
        asset["eo:bands"] = [{"name": band, "common_name": band}]
        assets[band] = asset
    props = {"eo:cloud_cover": 3.0, "platform": "sentinel-2a", "proj:code": f"EPSG:{epsg}",
             "s2:processing_baseline": "05.10", "glacierscale:world_ice_px": int(ice.sum())}
    item = raster_item(item_id, COLLECTION, _acquired(epsg, float(clon), spec), assets,
                       f"EPSG:{epsg}", bounds, properties=props, eo=True)
    doc: dict[str, Any] = item.to_dict(include_self_link=False, transform_hrefs=False)
    doc["properties"]["glacierscale:world_centre"] = [round(float(clon), 4),
                                                      round(float(clat), 4)]
    return doc


def build_world(root: str | Path, spec: WorldSpec = WorldSpec(), data: Path | None = None
                ) -> World:
    """Build (or reuse, when ``root`` holds a world of the same spec) a rehearsal world."""
    from glacierscale.plan import plan_tiles

    root = Path(root)
    marker = root / "world.json"
    if marker.exists() and json.loads(marker.read_text()).get("token") == spec.token():
        shapes = gpd.read_parquet(root / "shapes.parquet")
        return World(root, spec, shapes, int(json.loads(marker.read_text())["scenes"]))
    root.mkdir(parents=True, exist_ok=True)
    shapes = world_shapes(spec, data)
    shapes.to_parquet(root / "shapes.parquet")
    shapes[["rgi_id", "o1region", "geometry"]].to_parquet(root / "outlines.parquet")
    plan = plan_tiles(shapes[["rgi_id", "o1region", "geometry"]], spec.grid())
    scenes = needed_scenes(plan.frame["halo_footprint"], spec)
    docs = [write_scene(root, e, i, j, shapes, spec) for e, i, j in scenes]
    (root / "items.template.ndjson").write_text("".join(json.dumps(d) + "\n" for d in docs))
    marker.write_text(json.dumps({"token": spec.token(), "spec": asdict(spec),
                                  "scenes": len(docs), "tiles": len(plan.tiles)}))
    return World(root, spec, shapes, len(docs))


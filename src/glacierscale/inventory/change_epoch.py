"""One side of a change comparison: a finished run (or one epoch of a run) as written on storage.

An epoch is read from what the run left behind, never from what it was asked to do: the run's
``manifest.json`` (the resolved config, so the grid and threshold actually used) and every tile's
``item.json`` (the model weights hash, the tile's grid, its date and the scenes it was made from).
:func:`check_comparable` refuses a pair that would not judge the same pixels the same way.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

from glacierscale.inventory.build import finished_tiles, item_date
from glacierscale.io import Store, redact_url

_P = "glacierscale"


class ChangeRefusedError(ValueError):
    """Two outputs that cannot be compared (other grid, model or threshold), or no output at all.

    The message says what differs and how to make the pair comparable.
    """


@dataclass(frozen=True)
class TileRecord:
    """What one tile's STAC item says about how its pixels were made."""

    tile_id: str
    day: date | None
    crs: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    model: str
    weights_hash: str
    collections: tuple[str, ...]
    item_ids: tuple[str, ...]
    assets: tuple[tuple[str, str], ...]  # asset name -> key relative to the run root

    def asset(self, name: str) -> str | None:
        """Key (relative to the run root) of one of the tile's assets, None if absent."""
        return dict(self.assets).get(name)


@dataclass(frozen=True)
class Epoch:
    """A run output (or ``RUN/epochs/<epoch>``) opened for comparison."""

    url: str
    config: dict[str, Any]
    config_token: str
    tiles: dict[str, TileRecord]
    storage_options: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """Short label: the last part of the URL (the epoch name for ``RUN/epochs/<epoch>``)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1] or self.url

    @property
    def store(self) -> Store:
        return Store(self.url, self.storage_options)

    @property
    def tile_size_px(self) -> int:
        return int(self.config["grid"]["tile_size_px"])

    @property
    def resolution(self) -> float:
        return float(self.config["grid"]["resolution"])

    @property
    def halo_px(self) -> int:
        return int(self.config["grid"].get("halo_px", 0))

    @property
    def threshold(self) -> float:
        return float(self.config.get("infer", {}).get("threshold", 0.5))

    @property
    def weights_hashes(self) -> set[str]:
        return {t.weights_hash for t in self.tiles.values()}

    @property
    def models(self) -> set[str]:
        return {t.model for t in self.tiles.values()}

    @property
    def day(self) -> date | None:
        """The epoch's date: the median (low) of its tiles' dates."""
        days = sorted(t.day for t in self.tiles.values() if t.day is not None)
        return statistics.median_low(days) if days else None

    def sensors(self) -> dict[str, int]:
        """Collections of the scenes the tiles were made from, with the number of tiles each."""
        count: Counter[str] = Counter()
        for t in self.tiles.values():
            count.update(set(t.collections))
        return dict(sorted(count.items()))

    def summary(self) -> dict[str, Any]:
        """What the change outputs record about this epoch."""
        return {"url": redact_url(self.url), "name": self.name,
                "date": self.day.isoformat() if self.day else None,
                "model": sorted(self.models), "weights_sha256": sorted(self.weights_hashes),
                "threshold": self.threshold, "tile_size_px": self.tile_size_px,
                "resolution_m": self.resolution, "tiles": len(self.tiles),
                "sensors": self.sensors(), "config_token": self.config_token}


def _tile_record(tile_id: str, item: dict[str, Any]) -> TileRecord:
    props = item.get("properties", {})
    chosen = props.get(f"{_P}:scene_selection", {}).get("acquisitions", [])
    collections = tuple(sorted({str(a["collection"]) for a in chosen
                                if a.get("chosen") and a.get("collection")}))
    shape = props.get("proj:shape") or [0, 0]
    return TileRecord(
        tile_id=tile_id, day=item_date(props),
        crs=str(props.get("proj:code") or props.get("proj:epsg") or ""),
        transform=tuple(float(v) for v in props.get("proj:transform", ())[:6]),
        shape=(int(shape[0]), int(shape[1])), model=str(props.get(f"{_P}:model", "")),
        weights_hash=str(props.get(f"{_P}:weights_sha256", "")),
        collections=collections or ("unrecorded",),
        item_ids=tuple(props.get(f"{_P}:input_items", ())),
        assets=tuple(sorted(
            (name, f"tiles/{tile_id}/{str(a.get('href', '')).removeprefix('./')}")
            for name, a in item.get("assets", {}).items()
            if a.get("href") and "://" not in str(a["href"]))))


def open_epoch(url: str, storage_options: dict[str, Any] | None = None) -> Epoch:
    """Open a finished run output (local path or any fsspec URL) for comparison.

    Raises :class:`ChangeRefusedError` when there is no ``manifest.json`` (the run never finished)
    or no finished tile.
    """
    store = Store(url, storage_options)
    try:
        manifest = json.loads(store.read_bytes("manifest.json"))
    except FileNotFoundError as exc:
        raise ChangeRefusedError(
            f"{redact_url(store.url(''))} holds no manifest.json: it is not the output of a "
            "finished run (or epoch). Finish it first (`glacierscale run` resumes where it "
            "stopped), or give the folder that holds manifest.json and tiles/.") from exc
    if "config" not in manifest or "grid" not in manifest["config"]:
        raise ChangeRefusedError(f"{redact_url(store.url('manifest.json'))} records no run "
                                 "config; rerun with this version of glacierscale")
    done = finished_tiles(store)
    # Object stores answer many small reads in parallel far faster than one after another.
    with ThreadPoolExecutor(max_workers=16) as pool:
        items = list(pool.map(lambda t: json.loads(store.read_bytes(f"tiles/{t}/item.json")),
                              done))
    token = str(manifest.get("config_token", ""))
    # Only this run's tiles: another run (other area, model or settings) may have left tiles in
    # the same output, and those were not made the way the manifest says.
    tiles = {t: _tile_record(t, it) for t, it in zip(done, items, strict=True)
             if not token or it.get("properties", {}).get(f"{_P}:config_token") in (None, token)}
    if not tiles:
        raise ChangeRefusedError(f"no finished tile of this run under "
                                 f"{redact_url(store.url('tiles/'))}: nothing was mapped there")
    return Epoch(url=url, config=manifest["config"], config_token=token, tiles=tiles,
                 storage_options=storage_options)


def check_comparable(a: Epoch, b: Epoch) -> None:
    """Refuse (:class:`ChangeRefusedError`) a pair that would not judge the same pixels alike.

    Change is only measured where both epochs are the same pixels (same tile grid: tile size,
    pixel size, CRS and transform of every shared tile) judged the same way (same model weights,
    same threshold). The sensors may differ: that is what a multi-sensor model is for.
    """
    problems = []
    if Store(a.url, a.storage_options).url("") == Store(b.url, b.storage_options).url(""):
        problems.append("A and B are the same output; give two runs or two epochs")
    if (a.tile_size_px, a.resolution) != (b.tile_size_px, b.resolution):
        problems.append(f"the grids differ: A has {a.tile_size_px} px tiles of {a.resolution:g} m,"
                        f" B {b.tile_size_px} px tiles of {b.resolution:g} m; map both with the "
                        "same --tile-size-px and --resolution")
    for e, label in ((a, "A"), (b, "B")):
        if len(e.weights_hashes) > 1:
            problems.append(f"{label}'s tiles were made by different model weights "
                            f"({sorted(h[:12] for h in e.weights_hashes)}); rerun it with one "
                            "model")
    if not problems and a.weights_hashes != b.weights_hashes:
        problems.append(
            f"the model weights differ: A {sorted(a.models)} sha256 "
            f"{next(iter(a.weights_hashes))[:12]}, B {sorted(b.models)} sha256 "
            f"{next(iter(b.weights_hashes))[:12]}; map both epochs with the same model")
    if a.threshold != b.threshold:
        problems.append(f"the thresholds differ: A {a.threshold:g}, B {b.threshold:g}; map both "
                        "with the same threshold")
    shared = sorted(set(a.tiles) & set(b.tiles))
    if not problems and not shared:
        problems.append("A and B share no tile: they cover different areas (or different "
                        "CRS grids)")
    moved = [t for t in shared if (a.tiles[t].crs, a.tiles[t].transform, a.tiles[t].shape)
             != (b.tiles[t].crs, b.tiles[t].transform, b.tiles[t].shape)]
    if moved:
        t = moved[0]
        problems.append(f"{len(moved)} shared tile(s) lie on other pixel grids, e.g. {t}: A "
                        f"{a.tiles[t].crs} {a.tiles[t].transform}, B {b.tiles[t].crs} "
                        f"{b.tiles[t].transform}")
    if problems:
        raise ChangeRefusedError("cannot compare these outputs: " + "; ".join(problems))

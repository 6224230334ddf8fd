"""Run configuration: loose at the edge (CLI, YAML, env), frozen and hashable inside.

Every stage receives these frozen pydantic models, so Dask keys and output keys derived from them
are deterministic, and a typo in a YAML file fails at once with the field's name (extra="forbid").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: Pixel size (m) of a run when neither the user nor the model's card names one: the weight-free
#: baselines (band-ratio, ndsi) work at any resolution, and 10 m is Sentinel-2's finest.
DEFAULT_RESOLUTION_M = 10.0
#: A run whose pixels are more than this factor finer or coarser than the model's training
#: resolution gets a warning: the model sees glaciers at a scale it never learned.
RESOLUTION_TOLERANCE = 1.5

#: Common band names shared by every sensor after harmonisation.
OPTICAL_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")


class GridConfig(BaseModel):
    """How the tile grid is cut: pixel size, tile size and context halo."""

    model_config = _FROZEN
    tile_size_px: int = Field(1024, gt=0, description="core tile width/height in pixels")
    resolution: float = Field(DEFAULT_RESOLUTION_M, gt=0,
                              description="pixel size in metres; when not given, a run uses its "
                              "model card's resolution_m (else 10)")
    halo_px: int = Field(64, ge=0, description="context pixels added on every side")
    buffer_m: float = Field(500.0, ge=0, description="buffer around glaciers when planning tiles")


class InferConfig(BaseModel):
    """Sliding-window inference settings."""

    model_config = _FROZEN
    window_px: int = Field(512, gt=0)
    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    batch_size: int = Field(8, gt=0)
    blend: Literal["gaussian", "cosine", "uniform"] = "gaussian"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"


class RunConfig(BaseModel):
    """Everything a run needs; the demo is a preset of this."""

    model_config = _FROZEN
    aoi: str = Field(..., description="W,S,E,N in degrees, or a path/URL of outlines")
    catalog: str = Field(..., description="STAC API URL, folder of item JSON files, or ndjson")
    start: date | None = None
    end: date | None = None
    model: str = "band-ratio"
    out: str = "glacierscale-out"
    run_id: str = Field("", description="recorded in outputs; does not change them")
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler")
    collections: tuple[str, ...] = ()
    dem_collections: tuple[str, ...] = ("cop-dem-glo-30",)
    reference: str | None = Field(None, description="reference outlines for evaluation")
    tiles_per_task: int = Field(100, ge=1, description="tiles per Prefect task")
    year: int | None = Field(None, description="season year when start/end are not given "
                             "(default: last year)")
    max_cloud_cover: float = Field(80.0, ge=0, le=100)
    max_scenes: int = Field(3, ge=1, description="scenes composited per tile")
    grid: GridConfig = GridConfig()
    infer: InferConfig = InferConfig()

    @field_validator("collections", "dem_collections", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(s.strip() for s in v.split(",") if s.strip())
        return v

    def token(self) -> str:
        """Deterministic short hash of the settings that change outputs (not workers or paths)."""
        volatile = {"out", "run_id", "workers", "threads_per_worker", "scheduler",
                    "tiles_per_task", "reference"}
        payload = self.model_dump(mode="json", exclude=volatile)
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def resolution_is_explicit(self) -> bool:
        """True when the grid resolution was given (CLI, YAML, code), not left at its default."""
        return "resolution" in self.grid.model_fields_set

    def with_model_resolution(self, resolution_m: float | None) -> RunConfig:
        """This config with the model's training resolution as its default pixel size.

        ``resolution_m`` is the model card's (None for weight-free baselines: nothing changes).
        An unset grid resolution becomes the card's, so ``--model default`` runs at the 30 m it
        was trained at. A resolution the user gave is kept (they may know better), with one
        warning when it is more than :data:`RESOLUTION_TOLERANCE` times off the card's.
        Applying it twice changes nothing: the first call makes the resolution explicit.
        """
        if resolution_m is None:
            return self
        if not self.resolution_is_explicit():
            grid = GridConfig.model_validate({**self.grid.model_dump(exclude_unset=True),
                                              "resolution": resolution_m})
            log.info("grid resolution %g m from the card of model %r (no resolution given)",
                     grid.resolution, self.model)
            return self.model_copy(update={"grid": grid})
        given = self.grid.resolution
        if max(given, resolution_m) / min(given, resolution_m) > RESOLUTION_TOLERANCE:
            log.warning("model %r was trained at %g m pixels (its card's resolution_m) but this "
                        "run uses %g m as given; results may be poor at this scale. Omit the "
                        "resolution to use the model's %g m.", self.model, resolution_m, given,
                        resolution_m)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a YAML file; keyword overrides (e.g. from the CLI) win over the file.

        Nested sections merge field by field: ``grid={"tile_size_px": 512}`` keeps the file's
        ``grid.resolution``, so a resolution set in the file still counts as given.
        """
        data = yaml.safe_load(Path(path).read_text()) or {}
        for key, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                value = {**data[key], **value}
            data[key] = value
        return cls.model_validate(data)


def sample_data_dir() -> Path | None:
    """The real sample data: ``GLACIERSCALE_SAMPLE_DATA``, else ``../shared/data`` if present."""
    env = os.environ.get("GLACIERSCALE_SAMPLE_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared" / "data",
                   Path(__file__).resolve().parents[3] / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def cache_dir() -> Path:
    """Where derived inputs (sample COGs, catalogs) are cached: GLACIERSCALE_CACHE or ~/.cache."""
    env = os.environ.get("GLACIERSCALE_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base if env else base / "glacierscale").resolve()

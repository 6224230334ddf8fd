"""Run configuration: loose at the edge (CLI, YAML, env), frozen and hashable inside.

Every stage receives these frozen pydantic models, so Dask keys and output keys derived from them
are deterministic, and a typo in a YAML file fails at once with the field's name (extra="forbid").
:func:`parse_run_config` and :meth:`RunConfig.from_yaml` turn any problem into one
:class:`ConfigError` line that names where it is (``run.yaml:3:5``, or the CLI option) and the fix:
the closest valid key for an unknown one, the expected form for a bad value.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

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
    runtime: str = Field("", description="device/precision/layout the run's tiles use, e.g. "
                         "cpu/fp32/channels_last; empty: measured once per run on a worker "
                         "(within `precision`) and recorded in the output's runtime.json",
                         pattern=r"^((cpu|cuda)/(fp32|bf16|fp16)/(channels_last|nchw))?$")


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

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, v: date | None, info: ValidationInfo) -> date | None:
        # Checked here, not per tile: a reversed window would otherwise search nothing, quietly.
        start = info.data.get("start")
        if v is not None and start is not None and start > v:
            raise ValueError(f"start {start} is after end {v}; swap them")
        return v

    def token(self) -> str:
        """Deterministic short hash of the settings that change outputs (not workers or paths)."""
        volatile = {"out", "run_id", "workers", "threads_per_worker", "scheduler",
                    "tiles_per_task", "reference"}
        payload = self.model_dump(mode="json", exclude=volatile)
        if not payload["infer"]["runtime"]:
            del payload["infer"]["runtime"]  # unset: tokens stay those of earlier versions
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
        ``grid.resolution``, so a resolution set in the file still counts as given. Raises
        :class:`ConfigError` naming the file, line and column of a problem.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; check the --config "
                              "path") from None
        except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
            raise ConfigError(f"config file {path} cannot be read as text ({exc.__class__.__name__}"
                              "); give a YAML file") from None
        try:
            data = yaml.safe_load(text)
            root = yaml.compose(text)
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(path, exc)) from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file is a YAML mapping of RunConfig fields "
                              f"(aoi: ..., catalog: ...), not a {type(data).__name__}")
        typed: set[tuple[str, ...]] = set()
        for key, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, dict):
                typed |= {(key, str(k)) for k in value}
                if isinstance(data.get(key), dict):
                    value = {**data[key], **value}
            else:
                typed.add((key,))
            data[key] = value
        return parse_run_config(data, source=str(path), yaml_root=root, typed=typed)


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message says where and how to fix it."""


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:col: problem`` of a YAML syntax error (lines and columns count from 1)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    start = getattr(exc, "context_mark", None)
    if context and start is not None and mark is not None and start.line != mark.line:
        # e.g. an unclosed bracket: the problem shows at the end, the cause where it opened
        context = f"{context} started at line {start.line + 1}, column {start.column + 1}"
    detail = f"{context}, {problem}" if context else problem
    return f"{where}: invalid YAML ({detail}); fix the file's syntax"


def _key_mark(root: Any, loc: Sequence[Any]) -> tuple[int, int] | None:
    """1-based (line, column) of the key at ``loc`` in a composed YAML document, or None."""
    node, mark = root, None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return None
        for key, value in node.value:
            if getattr(key, "value", None) == part:
                node, mark = value, key.start_mark
                break
        else:
            return None
    return (mark.line + 1, mark.column + 1) if mark is not None else None


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Field names of the (nested) config section that ``loc`` points into."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        ann = info.annotation if info is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return list(model.model_fields)


def _describe(err: Mapping[str, Any], source: str, root: Any,
              typed: set[tuple[str, ...]], cli: bool) -> str:
    def _option(loc: Sequence[str]) -> str:
        # The CLI option of a field (``grid.resolution`` is ``--resolution``), else its path.
        return "--" + loc[-1].replace("_", "-") if cli and loc else ".".join(loc)

    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    dotted = ".".join(loc) or "config"
    by_option = any(tuple(loc[:len(t)]) == t for t in typed)
    mark = None if by_option or root is None else _key_mark(root, loc)
    if mark is not None:
        where = f"{source}:{mark[0]}:{mark[1]}: {dotted}: "
    elif loc and (by_option or root is None):
        where = f"{_option(loc)}: "
    else:
        where = f"{source}: " if root is not None else ""
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        valid = _fields_at(loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
        section = f" in section {'.'.join(map(str, loc[:-1]))!r}" if len(loc) > 1 else ""
        where = where.removesuffix(f"{dotted}: ")
        return f"{where}unknown key {loc[-1]!r}{section}; {hint}"
    if kind == "missing":
        return f"{dotted} is required; give it in the config file or as {_option(loc)}" if cli \
            else f"{dotted} is required"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if kind != "value_error" and isinstance(
        value, str | int | float) else ""
    hint = "; use YYYY-MM-DD" if kind.startswith(("date", "datetime")) else ""
    return f"{where}{msg}{shown}{hint}"


def parse_run_config(data: Mapping[str, Any], *, source: str = "options",
                     yaml_root: Any = None, typed: set[tuple[str, ...]] | None = None,
                     cli: bool = True) -> RunConfig:
    """Validate a loose mapping into a :class:`RunConfig`, or raise one :class:`ConfigError`.

    ``source`` names where the data came from (a file path) and ``yaml_root`` its composed YAML
    document, so errors point at ``file:line:column``; the key paths in ``typed`` came from CLI
    options and are named as options (``--start``, ``--resolution``). Without a document every
    key is named as an option, or by its path when ``cli`` is False (flow parameters).
    """
    try:
        return RunConfig.model_validate(dict(data))
    except ValidationError as exc:
        # An unknown key first: a misspelt key also makes the intended one "missing".
        errors = sorted(exc.errors(include_url=False),
                        key=lambda e: e.get("type") != "extra_forbidden")
        missing = [".".join(map(str, e["loc"])) for e in errors if e.get("type") == "missing"]
        if len(missing) > 1 and len(missing) == len(errors):
            how = "/".join(f"--{m.replace('_', '-')}" for m in missing) if cli else "parameters"
            raise ConfigError(f"{' and '.join(missing)} are required; give them in the config "
                              f"file or as {how}") from exc
        first = _describe(errors[0], source, yaml_root, set(typed or ()), cli)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(first + more) from exc


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

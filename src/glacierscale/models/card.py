"""The model card: everything the engine and the provenance tags need to know about a model.

A card is a small JSON (or YAML) document beside the weights: architecture and its parameters, the
input bands in common names and their normalisation statistics, the classes, the recommended
context (halo), the calibration temperature, training provenance, licence, a sha256 of the
weights, the statistics of its physics floor and the domain it was trained on. Inside the
program it is a frozen, hashable value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import yaml

#: Band names the product harmonises every sensor to: optical, thermal, terrain, radar, indices.
COMMON_BANDS = frozenset({
    "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
    "swir16", "swir22", "tir", "tir1", "tir2", "elevation", "slope", "aspect", "hillshade",
    "curvature", "vv", "vh", "hh", "hv", "coherence", "velocity", "ndsi", "ndwi", "ndvi",
})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class ModelCard:
    """Description of a segmentation model: what it eats, what it returns, where it came from.

    ``mean``/``std`` normalise each band in ``bands`` order: ``x = (value - mean) / std`` with the
    values in physical units (reflectance 0..1, metres, degrees). ``weights`` are file names or URLs
    relative to the card; several files form an ensemble (e.g. cross-validation folds).
    ``weights_hash`` is the sha256 of the weights (of the member hashes for an ensemble) and feeds
    the provenance tags and output keys.
    """

    name: str
    architecture: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ("glacier",)
    halo_px: int = 64
    temperature: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    weights: tuple[str, ...] = ()
    weights_hash: str = ""
    resolution_m: float | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict, hash=False)
    licence: str = "unspecified"
    description: str = ""
    #: the physics floor's statistics (:mod:`glacierscale.models.floor`); empty: no floor
    floor: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: where the model was trained (:mod:`glacierscale.models.domain`); empty: not stated
    domain: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Lists (from JSON) become tuples, dicts read-only mappings: the card stays a value.
        for name in ("bands", "mean", "std", "classes", "weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "params", _frozen_mapping(self.params))
        object.__setattr__(self, "provenance", _frozen_mapping(self.provenance))
        object.__setattr__(self, "floor", _frozen_mapping(self.floor))
        object.__setattr__(self, "domain", _frozen_mapping(self.domain))
        self._validate()

    def _validate(self) -> None:
        where = f"model card {self.name!r}"
        if not self.name or not self.architecture:
            raise ValueError(f"{where}: 'name' and 'architecture' are required")
        if not self.bands:
            raise ValueError(f"{where}: 'bands' is empty; list the input bands in common names")
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"{where}: duplicate band names in {self.bands}")
        unknown = [b for b in self.bands if b not in COMMON_BANDS]
        if unknown:
            raise ValueError(f"{where}: unknown band names {unknown}; use common names, one of "
                             f"{sorted(COMMON_BANDS)}")
        if not (len(self.mean) == len(self.std) == len(self.bands)):
            raise ValueError(f"{where}: mean ({len(self.mean)}) and std ({len(self.std)}) need one "
                             f"value per band ({len(self.bands)})")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"{where}: every std must be finite and > 0, got {self.std}")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError(f"{where}: every mean must be finite, got {self.mean}")
        if len(self.classes) != 1:
            raise ValueError(f"{where}: glacierscale models are binary (one class, e.g. "
                             f"['glacier']), got {self.classes}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"{where}: temperature must be > 0, got {self.temperature}")
        if self.halo_px < 0:
            raise ValueError(f"{where}: halo_px must be >= 0, got {self.halo_px}")

    # -- conversion -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists, mappings as dicts)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = json.loads(json.dumps(dict(v)))
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Build a card from a dict (as read from JSON/YAML); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        extra = sorted(set(data) - names)
        if extra:
            raise ValueError(f"model card has unknown fields {extra}; "
                             f"known fields: {sorted(names)}")
        missing = [n for n in ("name", "architecture", "bands", "mean", "std") if n not in data]
        if missing:
            raise ValueError(f"model card is missing required fields {missing}")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>") -> ModelCard:
        """Parse a card from JSON or YAML text (JSON is valid YAML, so YAML parsing covers both)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not a valid JSON/YAML model card: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a model card must be a JSON/YAML mapping")
        return cls.from_dict(data)

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def tag(self) -> str:
        """Short provenance tag ``name@<first 12 hex of weights_hash>``."""
        return f"{self.name}@{self.weights_hash[:12] or 'unhashed'}"

    def band_indices(self, available: Sequence[str] | Iterable[str]) -> list[int]:
        """Indices into ``available`` that pick this card's bands in card order.

        Raises ValueError naming the missing bands, so a pipeline can select its stack with
        ``stack[card.band_indices(stack_band_names)]``.
        """
        avail = list(available)
        missing = [b for b in self.bands if b not in avail]
        if missing:
            raise ValueError(f"model {self.name!r} needs bands {list(self.bands)}; "
                             f"missing {missing} from the available {avail}")
        return [avail.index(b) for b in self.bands]

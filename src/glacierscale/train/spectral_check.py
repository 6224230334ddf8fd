"""A model's per-pixel behaviour on hand-labelled spectra from regions it never saw.

The spectral points of the sample data (Sentinel-2 surface reflectance with B11/B12 at points on
glaciers in Alaska, Washington and Montana; classes snow, shadowed snow, ice, rock, water) are not
image patches, so each point becomes one:

- ``uniform``: a patch of ``patch_px`` pixels all holding the point's spectrum; the centre pixel
  is read (the network sees no context but the spectrum);
- ``assembled``: tiles of 8 x 8 blocks, each block one point of the same site, shuffled with a
  seed; the mean of a block's inner pixels is read (context of real neighbouring surfaces).

Every method answers on the same points: the model (e.g. the default under its physics floor),
its network alone, the band ratio and the NDSI. A method is right when it calls snow, shadowed
snow and ice glacier-like and rock not (water is reported, not scored).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from glacierscale.models import Ensemble, GlacierModel, load_model
from glacierscale.models.floor import PhysicsFloor

#: Sentinel-2 bands of the points file for each common band (B8A is the 865 nm NIR of HLS).
S2_COLUMNS = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8A", "swir16": "B11",
              "swir22": "B12"}
CLASSES = {1: "snow", 2: "shadowed snow", 3: "ice", 4: "rock", 5: "water"}
GLACIER_LIKE = (1, 2, 3)
NOT_GLACIER = (4,)
BLOCK = 8


def read_points(path: str | Path) -> tuple[NDArray[np.float32], NDArray[np.int64],
                                           NDArray[np.str_]]:
    """Spectra ``(N, 6)`` in the common band order of :data:`S2_COLUMNS`, classes and sites.

    A point missing a band is left out: the engine writes no data for such a pixel, and a NaN
    inside an assembled patch would otherwise reach its neighbours through the floor's windows.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    spectra = np.array([[float(r[c]) if r[c].strip() else np.nan for c in S2_COLUMNS.values()]
                        for r in rows], np.float32)
    keep = np.isfinite(spectra).all(axis=1)
    return (spectra[keep], np.array([int(r["class"]) for r in rows])[keep],
            np.array([r["site_name"] for r in rows])[keep])


def _prob(model: GlacierModel, x: torch.Tensor) -> torch.Tensor:
    """The engine's probability of a normalised batch: samples / temperature, sigmoid, mean."""
    sample = getattr(model, "sample_logits", None)
    z = sample(x) if sample is not None else model.logits(x)[None]
    return torch.sigmoid(z.float() / model.card.temperature).mean(dim=0)[:, 0]


def _normalised(model: GlacierModel, spectra: NDArray[np.float32]) -> torch.Tensor:
    card = model.card
    cols = [list(S2_COLUMNS).index(b) for b in card.bands]
    mean = np.asarray(card.mean, np.float32)
    std = np.asarray(card.std, np.float32)
    return torch.from_numpy((spectra[:, cols] - mean) / std)


def uniform_calls(model: GlacierModel, spectra: NDArray[np.float32], *, patch_px: int = 32,
                  batch: int = 256) -> NDArray[np.bool_]:
    """Glacier (probability >= 0.5) at the centre of a uniform patch of each spectrum."""
    x = _normalised(model, spectra)
    out = []
    c = patch_px // 2
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch, :, None, None].expand(-1, -1, patch_px, patch_px).contiguous()
            out.append((_prob(model, xb)[:, c, c] >= 0.5).numpy())
    return np.concatenate(out)


def assembled_calls(model: GlacierModel, spectra: NDArray[np.float32], groups: NDArray[np.str_],
                    *, blocks: int = 8, seed: int = 0) -> NDArray[np.bool_]:
    """Glacier calls with context: points of one group shuffled into tiles of ``blocks`` x
    ``blocks`` blocks of :data:`BLOCK` pixels; a block's inner mean probability is read."""
    x = _normalised(model, spectra)
    rng = np.random.default_rng(seed)
    calls = np.zeros(len(x), dtype=bool)
    per = blocks * blocks
    size = blocks * BLOCK
    inner = slice(2, BLOCK - 2)
    with torch.no_grad():
        for g in sorted(set(groups.tolist())):
            idx = rng.permutation(np.flatnonzero(groups == g))
            for start in range(0, len(idx), per):
                part = idx[start:start + per]
                fill = np.resize(part, per)  # repeat points to fill the last tile
                tile = x[fill].T.reshape(-1, blocks, blocks)
                tile = tile.repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)
                p = _prob(model, tile.reshape(1, -1, size, size).contiguous())[0]
                blockp = p.reshape(blocks, BLOCK, blocks, BLOCK)[:, inner, :, inner]
                means = blockp.mean(dim=(1, 3)).reshape(-1).numpy()
                calls[part] = means[:len(part)] >= 0.5
    return calls


def methods_of(model: GlacierModel) -> dict[str, GlacierModel]:
    """The model, its network alone (when it is floored) and the two baselines."""
    out: dict[str, GlacierModel] = {"model": model}
    if isinstance(model, PhysicsFloor):
        card = replace(model.card, temperature=model.params.net_temperature, floor={})
        out["network alone"] = Ensemble(model.members, card)
    out["band ratio"] = load_model("band-ratio")
    out["ndsi"] = load_model("ndsi")
    return out


def shares(calls: NDArray[np.bool_], classes: NDArray[np.int64]) -> dict[str, float]:
    """Share of each class called glacier, and the accuracy over snow, shadowed snow, ice (as
    glacier) and rock (as not)."""
    out = {CLASSES[c]: float(calls[classes == c].mean()) for c in CLASSES if (classes == c).any()}
    scored = np.isin(classes, GLACIER_LIKE + NOT_GLACIER)
    right = np.where(np.isin(classes, GLACIER_LIKE), calls, ~calls)
    out["accuracy"] = float(right[scored].mean())
    return out


def spectral_check(model: str | GlacierModel, path: str | Path, *,
                   modes: Sequence[str] = ("uniform", "assembled")) -> dict[str, Any]:
    """Per mode and method: share of every class called glacier and the accuracy; and whether
    the model's accuracy is at least the better baseline's in every mode."""
    m = load_model(model) if isinstance(model, str) else model
    spectra, classes, sites = read_points(path)
    result: dict[str, Any] = {"points": len(classes),
                              "classes": {CLASSES[c]: int((classes == c).sum()) for c in CLASSES}}
    holds = True
    for mode in modes:
        rows: dict[str, Mapping[str, float]] = {}
        for name, method in methods_of(m).items():
            calls = (uniform_calls(method, spectra) if mode == "uniform"
                     else assembled_calls(method, spectra, sites))
            rows[name] = shares(calls, classes)
        best = max(rows["band ratio"]["accuracy"], rows["ndsi"]["accuracy"])
        holds = holds and rows["model"]["accuracy"] >= best
        result[mode] = rows
    result["floor_holds"] = holds
    return result

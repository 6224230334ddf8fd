"""The model registry: names map to lazy import targets or packaged cards (fsspec's registry is the
model), and anything else is a path or URL of a card beside its safetensors weights.

Adding a trained model to the registry is one line in :data:`REGISTRY`, e.g.
``"default": "card:default.json"`` for ``src/glacierscale/models/cards/default.json`` whose
``weights`` point at ``../weights/default.safetensors``. A card dropped into ``models/cards/`` is
also found by its file name without any line at all.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import fsspec
import torch
from torch import nn

from glacierscale.config import OPTICAL_BANDS
from glacierscale.models import weights as W
from glacierscale.models.base import GlacierModel, TorchModel
from glacierscale.models.card import ModelCard
from glacierscale.models.ensemble import Ensemble

log = logging.getLogger(__name__)

CARDS_DIR = Path(__file__).with_name("cards")

#: name -> "module:callable" (called with no arguments) or "card:<file in models/cards/>".
REGISTRY: dict[str, str] = {
    "band-ratio": "glacierscale.models.baselines:band_ratio",
    "ndsi": "glacierscale.models.baselines:ndsi",
    "unet": "glacierscale.models.registry:seeded_unet",
    # the shipped trained models (cards in models/cards/, weights in models/weights/)
    "default": "card:unet-athabasca-hls.json",
    "unet-everest-rgbn": "card:unet-everest-rgbn.json",
}

#: architecture -> "module:callable" building the bare network as f(in_channels, classes, **params).
ARCHITECTURES: dict[str, str] = {
    "unet": "glacierscale.models.unet:UNet",
}
#: Weight-free architectures rebuilt from their card alone.
WEIGHT_FREE = {"band-ratio", "ndsi"}


def _import(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"cannot import {target!r} for the model registry: {exc}") from exc
    return cast(Callable[..., Any], obj)


def register_model(name: str, target: str, *, clobber: bool = False) -> None:
    """Register ``name`` -> ``"module:callable"`` or ``"card:<file>"`` or a card path/URL."""
    if name in REGISTRY and not clobber and REGISTRY[name] != target:
        raise ValueError(f"model name {name!r} is already registered to {REGISTRY[name]!r}; "
                         "pass clobber=True to replace it")
    REGISTRY[name] = target


def _packaged_cards() -> dict[str, str]:
    if not CARDS_DIR.is_dir():
        return {}
    return {p.stem: f"card:{p.name}" for p in sorted(CARDS_DIR.iterdir())
            if p.suffix.lower() in W.CARD_SUFFIXES}


def available_models() -> list[str]:
    """Registered model names (including cards packaged in ``models/cards/``)."""
    return sorted({**_packaged_cards(), **REGISTRY})


def _looks_like_location(s: str) -> bool:
    return "://" in s or "/" in s or s.lower().endswith(W.CARD_SUFFIXES + W.PICKLE_SUFFIXES)


def load_model(name_or_path: str) -> GlacierModel:
    """A ready model (eval mode, on CPU) by registry name, or from a card path/URL.

    ``name_or_path`` is a name of :func:`available_models`, a card ``.json``/``.yaml`` on any fsspec
    URL (weights resolved relative to it), or a folder holding exactly one card. Pickled checkpoints
    are refused with the command that converts them.
    """
    target = REGISTRY.get(name_or_path) or _packaged_cards().get(name_or_path)
    if target is not None:
        if target.startswith("card:"):
            return load_card_model(str(CARDS_DIR / target.removeprefix("card:")))
        if "://" in target or target.lower().endswith(W.CARD_SUFFIXES):
            return load_card_model(target)
        model = _import(target)()
        return cast(GlacierModel, model)
    if not _looks_like_location(name_or_path):
        raise ValueError(f"unknown model {name_or_path!r}: use one of {available_models()}, or "
                         "the path/URL of a model card (.json/.yaml) next to its .safetensors")
    W.check_not_pickle(name_or_path)
    return load_card_model(_card_in(name_or_path))


def _card_in(location: str) -> str:
    """The card file itself, or the single card inside a folder."""
    if location.lower().endswith(W.CARD_SUFFIXES):
        return location
    fs, path = fsspec.core.url_to_fs(location)
    if not fs.isdir(path):
        if location.lower().endswith(".safetensors"):
            raise ValueError(f"{location} is weights without a card: load the model card "
                             "(.json/.yaml) that lists it under 'weights'")
        raise FileNotFoundError(f"no model card at {location}")
    cards = sorted(p for p in fs.ls(path, detail=False) if p.lower().endswith(W.CARD_SUFFIXES))
    if len(cards) != 1:
        raise ValueError(f"{location} holds {len(cards)} model cards {cards}; name the card file")
    proto = location.rpartition("://")[0]
    return f"{proto}://{cards[0]}" if proto and "://" not in cards[0] else cards[0]


def build_network(card: ModelCard) -> nn.Module:
    """The untrained network a card describes (``architecture`` and ``params``)."""
    arch = card.architecture
    params = dict(card.params)
    if arch.startswith("smp:"):
        from glacierscale.models.smp import build_smp

        return build_smp(arch.removeprefix("smp:"), len(card.bands), len(card.classes), params)
    if arch not in ARCHITECTURES:
        raise ValueError(f"model card {card.name!r}: unknown architecture {arch!r}; known: "
                         f"{sorted(ARCHITECTURES) + sorted(WEIGHT_FREE)} or 'smp:<Arch>' "
                         "(segmentation-models-pytorch)")
    if arch == "unet" and (params.get("indices") or params.get("fill_nodata")):
        # Index channels are computed from the card's bands and statistics (models.features).
        from glacierscale.models.features import IndexUNet

        return IndexUNet(card.bands, card.mean, card.std, len(card.classes), **params)
    net: nn.Module = _import(ARCHITECTURES[arch])(len(card.bands), len(card.classes), **params)
    return net


def load_card_model(card_url: str) -> GlacierModel:
    """Build the model of a card and load its safetensors weights (several files: an ensemble)."""
    card = W.read_card(card_url)
    if card.architecture in WEIGHT_FREE:
        from glacierscale.models.baselines import from_card

        return from_card(card)
    if not card.weights:
        raise ValueError(f"{card_url}: the card lists no 'weights' (safetensors files)")
    base = W.parent_url(card_url)
    nets, hashes = [], []
    for ref in card.weights:
        url = W.join_url(base, ref)
        state, digest = W.load_state(url)
        net = build_network(card)
        W.load_weights_into(net, state, url)
        nets.append(net.eval())
        hashes.append(digest)
    card = ModelCard.from_dict({**card.to_dict(),
                                "weights_hash": W.card_weights_hash(card, hashes)})
    log.info("loaded model %s from %s (%d weight file(s))", card.tag, card_url, len(nets))
    model: GlacierModel = TorchModel(nets[0], card) if len(nets) == 1 else Ensemble(nets, card)
    if card.floor:
        # The network answers only where the floor trusts it (models.floor).
        from glacierscale.models.floor import PhysicsFloor, floor_of

        params = floor_of(card)
        assert params is not None
        model = PhysicsFloor(cast(nn.Module, model), card, params)
    return model


#: Placeholder normalisation for the seeded benchmark U-Net: typical reflectance and terrain ranges.
_DEFAULT_STATS = {
    "coastal": (0.2, 0.2), "blue": (0.2, 0.2), "green": (0.2, 0.2), "red": (0.2, 0.2),
    "rededge1": (0.25, 0.2), "rededge2": (0.3, 0.2), "rededge3": (0.3, 0.2), "nir": (0.3, 0.2),
    "nir08": (0.3, 0.2), "nir09": (0.3, 0.2), "swir16": (0.15, 0.15), "swir22": (0.1, 0.1),
    "elevation": (2500.0, 1000.0), "slope": (20.0, 15.0), "aspect": (180.0, 100.0),
    "hillshade": (180.0, 60.0), "curvature": (0.0, 1.0), "ndsi": (0.0, 0.5), "ndwi": (0.0, 0.5),
    "ndvi": (0.0, 0.5),
}


def _scale_seeded(net: nn.Module, channels: int, seed: int, logit_std: float = 2.0,
                  sample: torch.Tensor | None = None) -> None:
    """Give random weights a trained network's scale: batch-norm statistics from one pass over
    ``sample`` (normalised input; default a smooth seeded random field), and a head giving logits
    of mean 0 and std ``logit_std`` on it.

    Without this, He-initialised residual stacks give logits in the tens and every probability
    saturates at 0 or 1, which would make seam and uncertainty measurements meaningless.
    """
    if sample is None:
        gen = torch.Generator().manual_seed(seed + 1)
        coarse = torch.randn(4, channels, 8, 8, generator=gen)
        x = torch.nn.functional.interpolate(coarse, size=(128, 128), mode="bilinear",
                                            align_corners=False)
        x = x + 0.2 * torch.randn(x.shape, generator=gen)
    else:
        x = sample.float()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the statistics exactly
    net.train()
    with torch.no_grad():
        net(x)
        for m in bns:
            m.momentum = 0.1
        net.eval()
        out = net(x)
        head = getattr(net, "head", None)
        if isinstance(head, nn.Conv2d) and head.bias is not None:
            scale = logit_std / float(out.std())
            head.weight.mul_(scale)
            head.bias.sub_(float(out.mean())).mul_(scale)


def seeded_unet(bands: Sequence[str] = (*OPTICAL_BANDS, "elevation"), width: int = 32,
                depth: int = 4, dropout: float = 0.0, seed: int = 0,
                blocks: int | Sequence[int] = 2,
                sample: torch.Tensor | None = None) -> TorchModel:
    """The built-in U-Net with reproducible random weights, for benchmarks and tests.

    The same arguments give bit-identical weights on every machine; the global torch random state
    is left untouched. ``sample`` (a physical-unit batch ``(N, C, h, w)`` in ``bands`` order, e.g.
    crops of the scene a benchmark runs on) sets the batch-norm statistics and the logit scale on
    real data instead of a random field, so fewer probabilities saturate on that data.
    """
    stats = [_DEFAULT_STATS.get(b, (0.0, 1.0)) for b in bands]
    params: dict[str, Any] = {"width": width, "depth": depth, "dropout": dropout}
    if blocks != 2:
        params["blocks"] = blocks if isinstance(blocks, int) else list(blocks)
    card = ModelCard(
        name="unet", architecture="unet", bands=tuple(bands), mean=tuple(s[0] for s in stats),
        std=tuple(s[1] for s in stats), halo_px=64, params=params,
        licence="Apache-2.0", description=f"U-Net/ResNet-style encoder, seeded weights ({seed=})",
        provenance={"training": "none: seeded random weights for benchmarks", "seed": seed},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(card)
        norm = None
        if sample is not None:
            c = len(card.bands)
            norm = (sample.float() - torch.tensor(card.mean).view(1, c, 1, 1)) \
                / torch.tensor(card.std).view(1, c, 1, 1)
        _scale_seeded(net, len(card.bands), seed, sample=norm)
    blob = W.st_save(W.state_dict_of(net))
    card = ModelCard.from_dict({**card.to_dict(), "weights_hash": W.sha256_bytes(blob)})
    return TorchModel(net.eval(), card)

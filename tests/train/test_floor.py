"""The physics floor on generated tiles: a network trained on bright ice, floored with statistics
fitted from its own training chips, meets a tile far outside them and must not do worse than the
band ratio and the NDSI there; where the tile is like its training, the network answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glacierscale.core.tiles import TileSpec
from glacierscale.models import Ensemble, ModelCard
from glacierscale.models.baselines import band_ratio, ndsi
from glacierscale.models.floor import PhysicsFloor, deferral_spread, floored
from glacierscale.train import Augment, Chip, TrainConfig, band_statistics, train_network
from glacierscale.train.chips import normalise
from glacierscale.train.floor_fit import fit_floor

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
#: Typical surface reflectance of clean ice and of valley rock in the six bands.
ICE = np.array([0.62, 0.58, 0.52, 0.42, 0.05, 0.04], np.float32)
ROCK = np.array([0.10, 0.12, 0.15, 0.22, 0.26, 0.21], np.float32)


def _scene(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (6, size, size) with an elliptical glacier of ice on rock, and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    ry, rx = rng.uniform(0.2, 0.35, 2) * size
    glacier = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    base = np.where(glacier[None], ICE[:, None, None], ROCK[:, None, None])
    noise = 1.0 + 0.08 * rng.standard_normal((6, size, size))
    return (base * noise).astype(np.float32), glacier


def _chip(seed: int, size: int = 64) -> Chip:
    image, glacier = _scene(seed, size)
    return Chip(TileSpec(32611, seed, 0, size, 30.0, 0), image, glacier.astype(np.uint8))


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, ModelCard, list[Chip]]:
    chips = [_chip(s) for s in range(4)]
    mean, std = band_statistics(chips)
    card = ModelCard(name="gen", architecture="unet", bands=BANDS, mean=mean, std=std,
                     halo_px=0, params={"width": 8, "depth": 2, "dropout": 0.0,
                                        "indices": ["ndsi", "red_swir16", "valid"]})
    cfg = TrainConfig(width=8, depth=2, chip_px=64, batch_size=4, steps=40, lr=1e-2,
                      indices=("ndsi", "red_swir16", "valid"), precision="fp32",
                      augment=Augment(enabled=False))
    net, _ = train_network(chips, card, cfg)
    return net, card, chips


def _decisions(model: torch.nn.Module, image: np.ndarray, card: ModelCard) -> np.ndarray:
    x = torch.from_numpy(normalise(image, card))[None]
    with torch.no_grad():
        return (model.logits(x)[0, 0] >= 0).numpy()


def _iou(pred: np.ndarray, ref: np.ndarray) -> float:
    return float((pred & ref).sum() / max((pred | ref).sum(), 1))


def test_floor_holds_on_a_tile_far_outside_the_training_statistics(trained) -> None:
    net, card, chips = trained
    model = floored(Ensemble([net], card), card, fit_floor(net, card, chips, 1.0))
    image, glacier = _scene(99)
    # Another sensor's calibration, far off: every band 2.5 times brighter (ice above 1, rock as
    # bright as the training ice). Ratios, hence the band ratio and the NDSI, do not change.
    shadow = image * 2.5
    x = torch.from_numpy(normalise(shadow, card))[None]
    with torch.no_grad():
        gates = model.gates(x)
        alone = (gates["z_net"][0, 0, 0] >= 0).numpy()
    assert float(gates["t_ood"].max()) == 0.0  # every pixel is far from the training spectra
    floor = _decisions(model, shadow, card)
    physics = [_decisions(band_ratio(), shadow[[2, 4]], band_ratio().card),
               _decisions(ndsi(), shadow[[1, 4]], ndsi().card)]
    best = max(_iou(p, glacier) for p in physics)
    assert _iou(floor, glacier) >= best > 0.9
    assert _iou(alone, glacier) < best - 0.2  # without the floor the network fails here


def test_in_domain_the_trained_network_answers(trained) -> None:
    net, card, chips = trained
    model = floored(net, card, fit_floor(net, card, chips, 1.0))
    image, glacier = _scene(7)
    x = torch.from_numpy(normalise(image, card))[None]
    with torch.no_grad():
        g = model.gates(x)
    assert float((g["t_ood"] > 0.9).float().mean()) > 0.9
    assert float((g["trust"] > 0.5).float().mean()) > 0.8
    assert _iou(_decisions(model, image, card), glacier) > 0.9


def test_an_imputed_band_is_no_data_to_the_network(trained) -> None:
    net, card, chips = trained
    model = floored(net, card, fit_floor(net, card, chips, 1.0))
    image, _ = _scene(8)
    image[5] = card.mean[5]  # swir22 missing, filled with its training mean
    with torch.no_grad():
        g = model.gates(torch.from_numpy(normalise(image, card))[None])
    assert float(g["trust"].max()) == 0.0


def test_where_trust_is_zero_the_floor_is_the_physics_bit_for_bit(trained) -> None:
    net, card, chips = trained
    params = fit_floor(net, card, chips, 1.0)
    model = PhysicsFloor(net, card, params)
    image = _scene(5)[0] * 3.0  # three times brighter than anything in training
    x = torch.from_numpy(normalise(image, card))[None]
    with torch.no_grad():
        g = model.gates(x)
        out = model.sample_logits(x)[0]
    zero = g["trust"] == 0
    assert bool(zero.all())
    assert torch.equal(out[zero], g["z_phys"][zero])


def test_where_the_floor_defers_its_uncertainty_keeps_the_network_disagreement(trained) -> None:
    net, card, chips = trained
    model = floored(Ensemble([net, net], card), card, fit_floor(net, card, chips, 1.0), 1.5)
    image = _scene(99)[0] * 2.5  # far from the training spectra: the floor takes every pixel
    x = torch.from_numpy(normalise(image, card))[None]
    with torch.no_grad():
        g = model.gates(x)
        paired = model.paired_sample_logits(x)
        floored_members = model.sample_logits(x)
    assert float(g["trust"].max()) == 0.0
    assert torch.equal(paired[:2], floored_members)  # the answer is the floored members alone
    # What the engine reports: both halves over the card's temperature.
    p, alt = torch.sigmoid(paired / model.card.temperature).chunk(2)
    assert float(p.std(dim=0).max()) == 0.0  # the members all took the physics
    unc = deferral_spread(p, alt)[0, 0]
    p_net = torch.sigmoid(g["z_net"][0, 0, 0])
    p_phys = torch.sigmoid(g["z_phys"][0, 0] / model.card.temperature)
    assert torch.allclose(unc, (p_net - p_phys).abs(), atol=1e-6)
    # where the network and the physics call it differently, the band covers both calls
    split = (p_net >= 0.5) != (p_phys >= 0.5)
    assert int(split.sum()) > 20
    assert bool(((p_phys - unc <= 0.5) & (p_phys + unc >= 0.5))[split].all())


def test_where_the_network_is_trusted_its_uncertainty_is_the_member_spread(trained) -> None:
    net, card, chips = trained
    model = floored(net, card, fit_floor(net, card, chips, 1.0))
    x = torch.from_numpy(normalise(_scene(7)[0], card))[None]
    with torch.no_grad():
        g = model.gates(x)
        p, alt = torch.sigmoid(model.paired_sample_logits(x)).chunk(2)
    trusted = g["trust"][0, 0] == 1.0
    assert float(trusted.float().mean()) > 0.1
    assert float(deferral_spread(p, alt)[0, 0][trusted].abs().max()) < 1e-6

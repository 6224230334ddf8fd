"""The training loop on tiny generated chips: it learns, it is deterministic, its model loads and
runs through the inference engine with the card's normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glacierscale.config import InferConfig
from glacierscale.core.tiles import TileSpec
from glacierscale.infer import predict_tile
from glacierscale.models import ModelCard, TorchModel, load_model, save_model
from glacierscale.train.augment import Augment
from glacierscale.train.chips import Chip, band_statistics, normalise
from glacierscale.train.labels import UNKNOWN
from glacierscale.train.loop import ChipSampler, TrainConfig, masked_loss, train_network

BANDS = ("red", "swir16")


def _chips(n: int, seed: int, size: int = 24, halo: int = 4) -> list[Chip]:
    """Chips where glacier = bright in red and dark in SWIR (a blob per chip), some no data."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tile = TileSpec(32611, 10 + i, 20, size, 30.0, halo)
        h = size + 2 * halo
        yy, xx = np.mgrid[:h, :h]
        cy, cx, r = rng.uniform(6, h - 6), rng.uniform(6, h - 6), rng.uniform(4, 9)
        ice = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        red = np.where(ice, 0.7, 0.15) + rng.normal(0, 0.05, (h, h))
        swir = np.where(ice, 0.05, 0.2) + rng.normal(0, 0.03, (h, h))
        img = np.stack([red, swir]).astype(np.float32)
        img[:, :2, :3] = np.nan
        lab = ice.astype(np.uint8)
        lab[~np.isfinite(img).all(axis=0)] = UNKNOWN
        out.append(Chip(tile, img, lab))
    return out


def _card(chips: list[Chip]) -> ModelCard:
    mean, std = band_statistics(chips)
    return ModelCard(name="tiny", architecture="unet", bands=BANDS, mean=mean, std=std,
                     halo_px=4, params={"width": 8, "depth": 2, "dropout": 0.0})


CFG = TrainConfig(width=8, depth=2, chip_px=16, batch_size=4, steps=2, eval_every=1,
                  precision="fp32", augment=Augment())


def test_two_steps_are_deterministic_and_the_model_round_trips(tmp_path) -> None:
    chips = _chips(4, 0)
    card = _card(chips)
    net1, h1 = train_network(chips[:3], card, CFG, val_chips=chips[3:])
    net2, h2 = train_network(chips[:3], card, CFG, val_chips=chips[3:])
    s1, s2 = net1.state_dict(), net2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert h1["train_loss"] == h2["train_loss"] and len(h1["train_loss"]) == 2
    assert [v["step"] for v in h1["val"]] == [1, 2]
    net3, _ = train_network(chips[:3], card, TrainConfig(**{**CFG.to_dict(), "seed": 1,
                                                            "augment": Augment()}))
    assert not torch.equal(net3.state_dict()["head.weight"], s1["head.weight"])

    saved = save_model(net1, card, str(tmp_path))
    assert (tmp_path / "tiny.safetensors").stat().st_size < 10_000_000
    model = load_model(str(tmp_path / "tiny.json"))
    assert model.card.weights_hash == saved.weights_hash and model.card.mean == card.mean
    pred = predict_tile(model, chips[3].image, InferConfig.model_validate(
        {"window_px": 16, "overlap": 0.5, "batch_size": 4, "device": "cpu", "precision": "fp32"}))
    assert pred.prob.shape == chips[3].labels.shape
    assert np.isnan(pred.prob[0, 0]) and np.isfinite(pred.prob[10, 10])


def test_the_loop_learns_a_separable_task() -> None:
    chips = _chips(6, 1)
    card = _card(chips)
    cfg = TrainConfig(width=8, depth=2, chip_px=16, batch_size=8, steps=60, lr=1e-2,
                      eval_every=60, precision="fp32")
    net, hist = train_network(chips[:4], card, cfg, val_chips=chips[4:])
    assert hist["val"][-1]["iou"] > 0.8
    assert np.mean(hist["train_loss"][-10:]) < np.mean(hist["train_loss"][:10]) / 2
    # the engine (normalisation, blending) agrees with the network it wraps
    pred = predict_tile(TorchModel(net, card), chips[4].image, InferConfig.model_validate(
        {"window_px": 32, "overlap": 0.5, "batch_size": 4, "device": "cpu", "precision": "fp32"}))
    lab = chips[4].labels
    ok = lab != UNKNOWN
    assert ((pred.prob[ok] >= 0.5) == (lab[ok] == 1)).mean() > 0.9


def test_normalise_masked_loss_and_sampler() -> None:
    chips = _chips(2, 3)
    card = _card(chips)
    x = normalise(chips[0].image, card)
    assert np.isfinite(x).all() and x[:, 0, 0].tolist() == [0.0, 0.0]
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    weight = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # ignored pixels do not count: BCE of logit 0 is log 2 for each weighted pixel
    assert float(masked_loss(logits, target, weight, 0.0)) == pytest.approx(np.log(2))
    sampler = ChipSampler(chips, 16, np.random.default_rng(0))
    for _ in range(5):
        _, img, lab = sampler.crop()
        assert img.shape == (2, 16, 16) and lab.shape == (16, 16)
    with pytest.raises(ValueError, match="no labelled pixels"):
        ChipSampler([Chip(chips[0].tile, chips[0].image, np.full_like(chips[0].labels, UNKNOWN))],
                    16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth"):
        TrainConfig(chip_px=30, depth=3)


def test_indices_are_checked_before_any_chip_is_built() -> None:
    from glacierscale.train import ChipSource, TrainRequest

    with pytest.raises(ValueError, match="unknown spectral index"):
        TrainConfig(indices=("ndmi",))
    cfg = TrainConfig(indices=("ndsi", "valid"))
    assert cfg.network_params()["indices"] == ["ndsi", "valid"]
    assert "indices" not in TrainConfig().network_params()  # plain U-Net cards stay as they were
    with pytest.raises(ValueError, match=r"needs band\(s\) \['swir16'\]"):
        TrainRequest(name="x", outlines="o.gpkg",
                     source=ChipSource("cat", ("blue", "green", "red", "nir")), train=cfg)

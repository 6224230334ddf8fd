"""Batch norm folded into convolutions: same probabilities, no batch norm left, never a guess."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from glacierscale.config import InferConfig
from glacierscale.infer import Runtime, predict_tile
from glacierscale.infer.fold import fold_batchnorm, folded_model
from glacierscale.models import ModelCard, TorchModel, seeded_unet

BANDS = ("green", "red", "swir16")
CPU = torch.device("cpu")


def _bn_count(m: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def test_the_unet_folds_every_batch_norm_and_keeps_its_answers() -> None:
    unet = seeded_unet(bands=BANDS, width=8, depth=3)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    folded, n = fold_batchnorm(unet)
    assert n == _bn_count(unet) > 0 and _bn_count(folded) == 0
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        p0, p1 = torch.sigmoid(unet.logits(x)), torch.sigmoid(folded.logits(x))  # type: ignore[operator]
    assert float((p0 - p1).abs().max()) < 1e-4
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items()), "copy, not edit"
    assert folded_model(unet, CPU) is not unet


class _BatchNormFirst(nn.Module):
    """``conv1``/``bn1`` by name, but the batch norm runs *before* the convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.head = nn.Conv2d(3, 1, 1)
        assert self.bn1.running_mean is not None and self.bn1.running_var is not None
        with torch.no_grad():
            self.bn1.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
            self.bn1.running_var.copy_(torch.tensor([0.2, 3.0, 0.7]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv1(self.bn1(x)))


def _model(net: nn.Module) -> TorchModel:
    card = ModelCard(name="probe-net", architecture="custom", bands=BANDS, mean=(0.0,) * 3,
                     std=(1.0,) * 3)
    return TorchModel(net.eval(), card)


def test_a_misleading_module_tree_is_detected_and_left_unfolded() -> None:
    model = _model(_BatchNormFirst())
    _, n = fold_batchnorm(model)
    assert n == 1, "the naming suggests a pair..."
    assert folded_model(model, CPU) is model, "... but the probe shows the answers change"


def test_nothing_to_fold_and_training_mode_stay_as_they_are() -> None:
    plain = _model(nn.Conv2d(3, 1, 1))
    assert fold_batchnorm(plain) == (plain, 0) and folded_model(plain, CPU) is plain
    unet = seeded_unet(bands=BANDS, width=8, depth=2)
    unet.train()
    try:
        assert folded_model(unet, CPU) is unet
    finally:
        unet.eval()


def test_the_engine_runs_folded_by_default_with_the_same_answers() -> None:
    unet = seeded_unet(bands=BANDS, width=8, depth=3)
    img = np.random.default_rng(3).uniform(0.05, 0.5, (3, 130, 100)).astype(np.float32)
    cfg = InferConfig(window_px=64)
    folded = predict_tile(unet, img, cfg, runtime=Runtime(threads=2)).prob
    plain = predict_tile(unet, img, cfg, runtime=Runtime(threads=2, fold_bn=False)).prob
    assert 0 < np.abs(folded - plain).max() < 1e-4

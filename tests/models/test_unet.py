"""The built-in U-Net: any channels, any size, trainable, seeded weights reproducible."""

from __future__ import annotations

import pytest
import torch

from glacierscale.models import UNet, has_dropout, load_model, seeded_unet


@pytest.mark.parametrize(("channels", "size", "depth"), [(1, 64, 2), (13, 96, 3), (7, 37, 4),
                                                           (2, 1, 2)])
def test_any_channels_and_any_size_give_a_full_resolution_logit(channels: int, size: int,
                                                                  depth: int) -> None:
    net = UNet(channels, 1, width=8, depth=depth).eval()
    with torch.inference_mode():
        out = net(torch.randn(2, channels, size, size + 3))
    assert out.shape == (2, 1, size, size + 3) and torch.isfinite(out).all()


def test_unet_trains_one_step_and_dropout_is_there_when_asked() -> None:
    net = UNet(4, 1, width=8, depth=2, dropout=0.1)
    assert has_dropout(net) and not has_dropout(UNet(4, 1, width=8, depth=2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(2, 4, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    opt.step()
    loss2 = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
    assert loss2.item() != loss.item()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        UNet(0)
    with pytest.raises(ValueError, match="dropout"):
        UNet(3, dropout=1.0)


def test_seeded_unet_is_reproducible_and_well_scaled() -> None:
    a = seeded_unet(width=8, depth=3)
    b = seeded_unet(width=8, depth=3)
    c = seeded_unet(width=8, depth=3, seed=1)
    assert a.card.weights_hash == b.card.weights_hash != c.card.weights_hash
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    state = torch.random.get_rng_state()
    seeded_unet(width=8, depth=2)
    assert torch.equal(state, torch.random.get_rng_state()), "global RNG untouched"
    x = torch.nn.functional.interpolate(torch.randn(1, 7, 8, 8), size=(128, 128), mode="bilinear")
    with torch.inference_mode():
        z = a.logits(x)
    # Logits neither saturated nor collapsed: probabilities spread over (0, 1).
    assert 0.3 < float(z.std()) < 10.0


def test_registry_unet_has_seven_bands_and_a_card() -> None:
    m = load_model("unet")
    assert m.card.bands == ("blue", "green", "red", "nir", "swir16", "swir22", "elevation")
    assert m.card.architecture == "unet" and m.card.params["width"] == 32

"""Spectral index channels computed in the network: values, no data, errors, cards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glacierscale.models import ModelCard, build_network
from glacierscale.models.features import INDICES, IndexUNet, SpectralIndices, index_pairs

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
MEAN = (0.3, 0.3, 0.3, 0.3, 0.1, 0.1)
STD = (0.2, 0.2, 0.2, 0.2, 0.05, 0.05)


def _normalised(phys: np.ndarray) -> torch.Tensor:
    m = np.asarray(MEAN, np.float32)[:, None, None]
    s = np.asarray(STD, np.float32)[:, None, None]
    return torch.from_numpy(((phys - m) / s)[None].astype(np.float32))


def test_indices_match_the_normalised_differences_of_reflectance() -> None:
    rng = np.random.default_rng(0)
    phys = rng.uniform(0.02, 0.9, size=(6, 5, 7)).astype(np.float32)
    names = ["ndsi", "red_swir16", "ndwi", "ndvi", "swir_ratio"]
    out = SpectralIndices(BANDS, MEAN, STD, names)(_normalised(phys))[0].numpy()
    assert out.shape == (11, 5, 7)
    for k, name in enumerate(names):
        a, b = (phys[BANDS.index(x)] for x in INDICES[name])
        np.testing.assert_allclose(out[6 + k], (a - b) / (a + b), atol=1e-5)
    # red_swir16 is a monotone map of the band ratio: (r - 1) / (r + 1)
    r = phys[2] / phys[4]
    np.testing.assert_allclose(out[7], (r - 1) / (r + 1), atol=1e-5)


def test_negative_reflectance_is_floored_and_indices_stay_bounded() -> None:
    phys = np.full((6, 2, 2), -0.03, np.float32)  # over-corrected shadow
    out = SpectralIndices(BANDS, MEAN, STD, ["ndsi", "ndvi"])(_normalised(phys))[0]
    assert torch.isfinite(out).all() and out[6:].abs().max() <= 1.0


def test_valid_channel_marks_no_data_written_as_zero() -> None:
    phys = np.full((6, 3, 3), 0.5, np.float32)
    x = _normalised(phys)
    x[..., 1, 1] = 0.0  # the engine writes no data as 0 in every normalised band
    out = SpectralIndices(BANDS, MEAN, STD, ["ndsi", "valid"])(x)[0]
    assert out.shape[0] == 8
    expected = torch.ones(3, 3)
    expected[1, 1] = 0.0
    assert torch.equal(out[7], expected)


def test_unknown_index_and_missing_band_name_the_fix() -> None:
    with pytest.raises(ValueError, match="unknown spectral index 'ndmi'"):
        index_pairs(["ndmi"], BANDS)
    with pytest.raises(ValueError, match=r"needs band\(s\) \['swir16'\]"):
        index_pairs(["ndsi"], ("blue", "green", "red", "nir"))
    assert index_pairs(["valid"], ("red",)) == []


def test_card_with_indices_builds_an_index_unet_that_round_trips_its_weights() -> None:
    card = ModelCard(name="t", architecture="unet", bands=BANDS, mean=MEAN, std=STD,
                     params={"width": 8, "depth": 2, "indices": ["ndsi", "valid"]})
    net = build_network(card)
    assert isinstance(net, IndexUNet) and net.unet.in_channels == 8
    state = net.state_dict()
    assert not any("features" in k for k in state)  # statistics live in the card, not weights
    again = build_network(card)
    again.load_state_dict(state)
    x = torch.randn(2, 6, 20, 20)
    net.eval()
    again.eval()
    assert torch.equal(net(x), again(x)) and net(x).shape == (2, 1, 20, 20)
    plain = build_network(ModelCard(name="p", architecture="unet", bands=BANDS, mean=MEAN,
                                    std=STD, params={"width": 8, "depth": 2}))
    assert not isinstance(plain, IndexUNet)


def test_fill_nodata_continues_the_surroundings_and_leaves_valid_pixels_alone() -> None:
    from glacierscale.models.features import fill_nodata

    x = torch.zeros(2, 2, 12, 16)
    x[:, 0, :, :8] = 2.0  # left half valid
    x[:, 1, :, :8] = -1.0
    x[1] = 3.0  # the second image has no hole
    valid = torch.zeros(2, 1, 12, 16)
    valid[0, :, :, :8] = 1.0
    valid[1] = 1.0
    out = fill_nodata(x, valid)
    assert torch.equal(out[0, :, :, :8], x[0, :, :, :8]) and torch.equal(out[1], x[1])
    assert torch.allclose(out[0, 0, :, 8:], torch.full((12, 8), 2.0))  # the whole hole
    assert torch.allclose(out[0, 1, :, 8:], torch.full((12, 8), -1.0))
    grad = torch.linspace(0, 1, 16).expand(1, 1, 12, 16).clone()
    hole = torch.ones(1, 1, 12, 16)
    hole[..., 4:8, 6:10] = 0
    filled = fill_nodata(grad, hole)
    assert filled.min() >= 0 and filled.max() <= 1  # a mean of neighbours: never out of range
    assert torch.equal(fill_nodata(x, torch.ones(2, 1, 12, 16)), x)  # nothing to fill
    assert torch.equal(fill_nodata(x, torch.zeros(2, 1, 12, 16)), x)  # nothing to fill from


def test_filled_edge_keeps_the_prediction_of_the_continued_surface() -> None:
    # A network fed a block of no data beside uniform ice must see the same inputs there as if
    # the ice went on, apart from the valid channel.
    card = ModelCard(name="t", architecture="unet", bands=BANDS, mean=MEAN, std=STD,
                     params={"width": 8, "depth": 2, "indices": ["ndsi", "valid"],
                             "fill_nodata": True})
    net = build_network(card)
    assert isinstance(net, IndexUNet) and net.fill
    seen: list[torch.Tensor] = []
    net.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.full((1, 6, 16, 16), 1.5)
    x[..., :, :5] = 0.0  # no data on the left
    net.eval()
    with torch.no_grad():
        net(x)
    feats = seen[0][0]
    assert feats.shape[0] == 6 + 2
    assert torch.allclose(feats[:7, :, :5], feats[:7, :, 5:10])  # bands and NDSI continued
    assert (feats[7, :, :5] == 0).all() and (feats[7, :, 5:] == 1).all()  # mask still says so
    assert isinstance(build_network(ModelCard(
        name="f", architecture="unet", bands=BANDS, mean=MEAN, std=STD,
        params={"width": 8, "depth": 2, "fill_nodata": True})), IndexUNet)

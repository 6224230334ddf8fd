"""Uncertainty: ensembles, test-time augmentation, MC dropout, temperature, through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glacierscale.config import InferConfig
from glacierscale.infer import TTA, MCDropout, predict_tile, with_uncertainty
from glacierscale.infer.uncertainty import TTA_SETS, _apply, _invert
from glacierscale.models import Ensemble, load_model, seeded_unet, with_temperature

BANDS = ("green", "red", "swir16")
CFG = InferConfig(window_px=64, batch_size=4)


def _img(seed: int = 0, shape: tuple[int, int] = (90, 110)) -> np.ndarray:
    img = np.random.default_rng(seed).uniform(0.02, 0.6, (3, *shape)).astype(np.float32)
    img[1, 5:9, 7:12] = np.nan
    return img


def _net(seed: int, dropout: float = 0.0):  # type: ignore[no-untyped-def]
    return seeded_unet(bands=BANDS, width=8, depth=2, dropout=dropout, seed=seed)


def test_transforms_invert_and_flips_contain_both_mirror_images() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    sq = torch.arange(16.0).view(1, 1, 4, 4)
    for name, ts in TTA_SETS.items():
        for t in ts:
            assert torch.equal(_invert(_apply(sq, t), t), sq), (name, t)
    flips = {tuple(_apply(sq, t).flatten().tolist()) for t in TTA_SETS["flips"]}
    assert tuple(sq.flip(-1).flatten().tolist()) in flips
    assert tuple(sq.flip(-2).flatten().tolist()) in flips
    assert len(flips) == 4 and len(TTA_SETS["d4"]) == 8
    assert _apply(x, (0, False)) is x


def test_ensemble_mean_and_spread_blended_like_the_probability() -> None:
    members = [_net(0), _net(1), _net(2)]
    ens = Ensemble([m.net for m in members], members[0].card)
    img = _img()
    pred = predict_tile(ens, img, CFG)
    assert pred.uncertainty is not None and pred.uncertainty.dtype == np.float32
    invalid = ~np.isfinite(img).all(axis=0)
    np.testing.assert_array_equal(np.isnan(pred.uncertainty), invalid)
    u = pred.uncertainty[~invalid]
    assert (u >= 0).all() and u.max() <= 0.5 and u.mean() > 1e-3
    singles = np.stack([predict_tile(m, img, CFG).prob for m in members])
    np.testing.assert_allclose(pred.prob, singles.mean(0), atol=1e-5)
    # The band is the member spread of each window, blended like the probability: close to (not
    # equal to) the spread of the blended member maps, which would need one accumulator per member.
    s = singles.std(0)
    ok = np.isfinite(s)
    assert np.abs(pred.uncertainty[ok] - s[ok]).mean() < 0.03
    assert np.corrcoef(pred.uncertainty[ok], s[ok])[0, 1] > 0.9


def test_identical_members_have_zero_uncertainty() -> None:
    m = _net(0)
    pred = predict_tile(Ensemble([m.net, m.net], m.card), _img(), CFG)
    assert pred.uncertainty is not None
    assert np.nanmax(pred.uncertainty) < 1e-6
    np.testing.assert_allclose(pred.prob, predict_tile(m, _img(), CFG).prob, atol=1e-6)


def test_tta_of_a_pixelwise_model_changes_nothing() -> None:
    br = load_model("band-ratio")
    img = _img()[1:]
    plain = predict_tile(br, img, CFG)
    tta = predict_tile(TTA(br, "d4"), img, CFG)
    np.testing.assert_allclose(tta.prob, plain.prob, atol=1e-6)
    assert tta.uncertainty is not None and np.nanmax(tta.uncertainty) < 1e-6


def test_tta_of_a_network_reports_disagreement() -> None:
    pred = predict_tile(TTA(_net(0), "flips"), _img(), CFG)
    assert pred.uncertainty is not None and np.nanmean(pred.uncertainty) > 1e-3


def test_mc_dropout_is_seeded_and_needs_dropout() -> None:
    net = _net(0, dropout=0.3)
    mc = with_uncertainty(net, mc_samples=3, seed=7)
    img = _img(shape=(64, 64))
    a = predict_tile(mc, img, CFG)
    b = predict_tile(mc, img, CFG)
    assert a.uncertainty is not None and b.uncertainty is not None
    assert np.nanmean(a.uncertainty) > 1e-3
    assert a.prob.tobytes() == b.prob.tobytes()
    assert a.uncertainty.tobytes() == b.uncertainty.tobytes()
    assert not any(m.training for m in net.modules()), "dropout switched back off"
    with pytest.raises(ValueError, match="no dropout layers"):
        MCDropout(_net(0), 4)
    both = with_uncertainty(net, mc_samples=2, tta="flips")
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        assert both.sample_logits(x).shape == (8, 1, 1, 16, 16)  # type: ignore[attr-defined]


def test_temperature_from_the_card_softens_probabilities() -> None:
    br = load_model("band-ratio")
    img = _img()[1:]
    p1 = predict_tile(br, img, CFG).prob
    p2 = predict_tile(with_temperature(br, 2.0), img, CFG).prob
    z = np.log(p1 / (1 - p1))
    np.testing.assert_allclose(p2, 1 / (1 + np.exp(-z / 2.0)), atol=1e-5)
    wrapped = with_temperature(TTA(br, "flips"), 3.0)
    assert wrapped.card.temperature == 3.0 and isinstance(wrapped, TTA)

"""The input distance: a Gaussian mixture of training spectra, its NLL in numpy and torch, and
the marginal of a pixel without one band."""

from __future__ import annotations

import numpy as np
import torch

from glacierscale.models.ood import Mixture, MixtureNLL, fit_mixture, log_features, sample_pixels


def _clusters(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0]])
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 0.3]])
    return np.concatenate([rng.multivariate_normal(c, cov, n // 3) for c in centres])


def test_fit_is_deterministic_and_far_points_exceed_the_reference() -> None:
    x = _clusters()
    a = fit_mixture(x, components=3, seed=1, marginals=[2])
    assert a == fit_mixture(x, components=3, seed=1, marginals=[2])
    nll = a.nll(x)
    assert abs(float(np.mean(nll <= a.nll_ref)) - 0.99) < 1e-3
    far = np.array([[20.0, -20.0, 5.0], [0.0, 0.0, 30.0]])
    assert (a.nll(far) > a.nll_ref + 50).all()
    # along the correlated axis of a cluster the distance is small, across it large
    assert a.nll(np.array([[1.5, 1.5, 0.0]]))[0] < a.nll(np.array([[1.5, -1.5, 0.0]]))[0]


def test_torch_and_numpy_agree_and_the_card_round_trip_keeps_the_mixture() -> None:
    mix = fit_mixture(_clusters(), components=3, seed=0, marginals=[0, 2])
    again = Mixture.from_dict(mix.to_dict())
    assert again == mix and again.marginal_ref == mix.marginal_ref
    x = _clusters(300, seed=5)
    feats = torch.from_numpy(x.T.reshape(1, 3, 10, 30).astype(np.float32))
    got = MixtureNLL(again)(feats).numpy().reshape(-1)
    np.testing.assert_allclose(got, mix.nll(x.reshape(10, 30, 3).reshape(-1, 3)), rtol=1e-4,
                               atol=1e-3)


def test_the_marginal_ignores_the_missing_band() -> None:
    x = _clusters()
    mix = fit_mixture(x, components=3, seed=0, marginals=[2])
    sub = mix.without(2)
    assert sub.dims == 2 and sub.nll_ref == mix.marginal_ref[2]
    # a training pixel whose third band is replaced by nonsense: far in 3-D, typical in 2-D
    p = x[:1].copy()
    p[0, 2] = 40.0
    assert mix.nll(p)[0] > mix.nll_ref + 100
    assert sub.nll(p[:, :2])[0] <= sub.nll_ref


def test_log_features_and_pixel_sampling() -> None:
    refl = np.array([[0.5, -0.1, 0.0]])
    np.testing.assert_allclose(log_features(refl), np.log([[0.5, 5e-3, 5e-3]]))
    assert torch.allclose(log_features(torch.tensor(refl)), torch.tensor(np.log(
        [[0.5, 5e-3, 5e-3]]), dtype=torch.float32))
    img = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    img[0, 0, 0] = np.nan
    rows = sample_pixels([img], 100, 0)
    assert rows.shape == (15, 2) and np.isfinite(rows).all()
    assert len(sample_pixels([img], 5, 0)) == 5
    np.testing.assert_array_equal(sample_pixels([img], 5, 3), sample_pixels([img], 5, 3))

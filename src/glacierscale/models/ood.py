"""How far a pixel's spectrum lies from the spectra a model was trained on.

A Gaussian mixture over log reflectance is fitted on the valid training pixels and stored in the
model card (a few dozen numbers per component). Its negative log-likelihood (NLL) is the distance:
a pixel whose NLL exceeds what almost every training pixel reached is a spectrum the network never
saw (another sensor's calibration, an imputed band, a surface absent from the training area), and
its answer there is not trusted.

Log reflectance, not reflectance: the dark bands that separate ice from rock (SWIR over ice is a
few per cent) would otherwise weigh nothing beside the bright visible bands, and gains become
shifts of equal size at every brightness. Values are floored at :data:`LOG_FLOOR` first, so a zero
or negative (over-corrected) reflectance stays finite.

Fitting is expectation-maximisation with a seeded k-means++ start, deterministic for a given seed
and sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

#: Reflectance floor before the logarithm.
LOG_FLOOR = 5e-3


def log_features(reflectance: NDArray[np.floating] | torch.Tensor) -> Any:
    """``log(max(rho, LOG_FLOOR))`` of reflectance, numpy or torch alike."""
    if isinstance(reflectance, torch.Tensor):
        return torch.log(reflectance.float().clamp_min(LOG_FLOOR))
    return np.log(np.maximum(np.asarray(reflectance, dtype=np.float64), LOG_FLOOR))


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture: ``weights`` (K,), ``means`` (K, D), lower Cholesky factors of the
    covariances ``chol`` (K, D, D); ``nll_ref`` the NLL that ``quantile`` of the training pixels
    stay below."""

    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    chol: tuple[tuple[tuple[float, ...], ...], ...]
    nll_ref: float
    quantile: float
    #: ``nll_ref`` of the marginal mixture without dimension i (see :meth:`without`)
    marginal_ref: Mapping[int, float] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "means": [list(m) for m in self.means],
                "chol": [[list(r) for r in c] for c in self.chol], "nll_ref": self.nll_ref,
                "quantile": self.quantile,
                "marginal_ref": {str(k): v for k, v in self.marginal_ref.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Mixture:
        return cls(tuple(float(w) for w in d["weights"]),
                   tuple(tuple(float(v) for v in m) for m in d["means"]),
                   tuple(tuple(tuple(float(v) for v in r) for r in c) for c in d["chol"]),
                   float(d["nll_ref"]), float(d["quantile"]),
                   {int(k): float(v) for k, v in d.get("marginal_ref", {}).items()})

    def without(self, dim: int) -> Mixture:
        """The marginal mixture of the other dimensions (a pixel without band ``dim``): the
        same weights, means without ``dim``, the Cholesky factors of the covariances without its
        row and column; its ``nll_ref`` is ``marginal_ref[dim]`` (NaN when not fitted)."""
        keep = [i for i in range(self.dims) if i != dim]
        chol = np.asarray(self.chol)
        cov = chol @ np.transpose(chol, (0, 2, 1))
        sub = np.linalg.cholesky(cov[:, keep][:, :, keep])
        return Mixture(self.weights, tuple(tuple(m[i] for i in keep) for m in self.means),
                       tuple(tuple(tuple(float(v) for v in r) for r in c) for c in sub),
                       float(self.marginal_ref.get(dim, math.nan)), self.quantile)

    @property
    def dims(self) -> int:
        return len(self.means[0])

    def nll(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        """NLL of feature rows ``x`` (N, D) under the mixture (numpy)."""
        return _nll_np(np.asarray(x, dtype=np.float64), np.asarray(self.weights),
                       np.asarray(self.means), np.asarray(self.chol))


def _component_ll(x: NDArray[np.floating], w: NDArray[np.floating], mu: NDArray[np.floating],
                  chol: NDArray[np.floating]) -> NDArray[np.float64]:
    n, d = x.shape
    out = np.empty((n, len(w)))
    for j in range(len(w)):
        z = np.linalg.solve(chol[j], (x - mu[j]).T)
        out[:, j] = (math.log(max(w[j], 1e-300)) - 0.5 * (z * z).sum(axis=0)
                     - np.log(np.diag(chol[j])).sum() - 0.5 * d * math.log(2 * math.pi))
    return out


def _nll_np(x: NDArray[np.floating], w: NDArray[np.floating], mu: NDArray[np.floating],
            chol: NDArray[np.floating]) -> NDArray[np.float64]:
    ll = _component_ll(x, w, mu, chol)
    m = ll.max(axis=1, keepdims=True)
    out: NDArray[np.float64] = -(m[:, 0] + np.log(np.exp(ll - m).sum(axis=1)))
    return out


def fit_mixture(x: NDArray[np.floating], *, components: int = 6, seed: int = 0,
                iterations: int = 60, reg: float = 1e-3, quantile: float = 0.99,
                marginals: Sequence[int] = ()) -> Mixture:
    """Fit a ``components``-Gaussian mixture to feature rows ``x`` (N, D) by EM.

    ``reg`` is added to every covariance diagonal (a floor on the spread of a tight cluster, e.g.
    of quantised dark values); ``quantile`` of the training NLL becomes ``nll_ref``, and of the
    marginal NLL without each dimension of ``marginals`` its ``marginal_ref``.
    """
    x64: NDArray[np.float64] = np.asarray(x, dtype=np.float64)
    x = x64
    n, d = x.shape
    if n < components * (d + 2):
        raise ValueError(f"{n} samples are too few for a {components}-component mixture in {d} "
                         "dimensions")
    rng = np.random.default_rng(seed)
    centres = [x[int(rng.integers(n))]]
    for _ in range(components - 1):  # k-means++: far-apart starting means
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[int(rng.choice(n, p=d2 / d2.sum()))])
    mu: NDArray[np.float64] = np.asarray(centres, dtype=np.float64)
    cov: NDArray[np.float64] = np.repeat((np.cov(x.T) + reg * np.eye(d))[None], components, axis=0)
    w = np.full(components, 1.0 / components)
    for _ in range(iterations):
        chol = np.linalg.cholesky(cov)
        ll = _component_ll(x64, w, mu, chol)
        r = np.exp(ll - ll.max(axis=1, keepdims=True))
        r /= r.sum(axis=1, keepdims=True)
        nk = r.sum(axis=0) + 1e-9
        w = nk / n
        mu = (r.T @ x) / nk[:, None]
        for j in range(components):
            xc = x - mu[j]
            cov[j] = (r[:, j, None] * xc).T @ xc / nk[j] + reg * np.eye(d)
    chol = np.linalg.cholesky(cov)
    ref = float(np.quantile(_nll_np(x64, w, mu, chol), quantile))
    full = Mixture(tuple(float(v) for v in w), tuple(tuple(float(v) for v in m) for m in mu),
                   tuple(tuple(tuple(float(v) for v in row) for row in c) for c in chol),
                   ref, quantile)
    refs = {}
    for dim in marginals:
        sub = full.without(dim)
        refs[int(dim)] = float(np.quantile(sub.nll(np.delete(x64, dim, axis=1)), quantile))
    return Mixture(full.weights, full.means, full.chol, ref, quantile, refs)


class MixtureNLL(torch.nn.Module):
    """The mixture's NLL per pixel of a ``(N, D, H, W)`` feature tensor, in float32."""

    w_log: torch.Tensor
    mu: torch.Tensor
    inv: torch.Tensor
    log_det: torch.Tensor

    def __init__(self, mixture: Mixture) -> None:
        super().__init__()
        chol = torch.tensor(mixture.chol, dtype=torch.float64)
        self.register_buffer("w_log", torch.log(torch.tensor(mixture.weights)).float(),
                             persistent=False)
        self.register_buffer("mu", torch.tensor(mixture.means, dtype=torch.float32),
                             persistent=False)
        # z = L^-1 (x - mu): the inverse factor is precomputed once, in float64.
        self.register_buffer("inv", torch.linalg.inv(chol).float(), persistent=False)
        self.register_buffer("log_det", torch.log(torch.diagonal(chol, dim1=-2, dim2=-1))
                             .sum(-1).float(), persistent=False)
        self.d = mixture.dims

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        n, d, h, w = f.shape
        x = f.float().permute(0, 2, 3, 1).reshape(-1, d)  # (P, D)
        diff = x[:, None, :] - self.mu[None]  # (P, K, D)
        z = torch.einsum("kij,pkj->pki", self.inv, diff)
        ll = (self.w_log[None] - 0.5 * (z * z).sum(-1) - self.log_det[None]
              - 0.5 * self.d * math.log(2 * math.pi))
        return (-torch.logsumexp(ll, dim=1)).reshape(n, 1, h, w)


def sample_pixels(images: Sequence[NDArray[np.floating]], limit: int, seed: int
                  ) -> NDArray[np.float64]:
    """Up to ``limit`` valid pixels (rows of bands), drawn without replacement with ``seed``
    from ``(C, H, W)`` images (NaN = no data)."""
    rows = [im.reshape(im.shape[0], -1).T for im in images]
    x = np.concatenate(rows).astype(np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) > limit:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))]
    return x

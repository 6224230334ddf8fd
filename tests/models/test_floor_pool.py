"""The floor's neighbourhood mean: separable, and the same as the square mean it stands for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glacierscale.models.floor import _pool


@pytest.mark.parametrize(("shape", "k"), [((2, 1, 40, 33), 31), ((1, 1, 128, 128), 15),
                                          ((3, 1, 9, 50), 31), ((1, 1, 5, 5), 4),
                                          ((1, 1, 1, 7), 3)])
def test_the_separable_mean_is_the_square_mean_edges_included(shape: tuple[int, ...],
                                                               k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x = (torch.rand(shape, generator=g) > 0.4).float() * torch.rand(shape, generator=g)
    kk = k | 1
    square = F.avg_pool2d(x, kk, stride=1, padding=kk // 2, count_include_pad=False)
    got = _pool(x, k)
    assert got.shape == x.shape
    torch.testing.assert_close(got, square, rtol=0, atol=1e-6)

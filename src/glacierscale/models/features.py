"""Spectral index channels computed inside a network, from the bands it already reads.

Band ratios and normalised differences are what glacier mapping has relied on for decades (red/SWIR,
NDSI: Paul et al. 2002, Dozier 1989): they cancel illumination, so shadowed and sunlit ice look
alike, and they separate ice from rock in one number. A network can learn them from raw bands, but
only with far more data than a small regional training set holds; with few glaciers it learns
brightness instead, which does not transfer to another date or sensor. Giving it the indices as
extra input channels (as GlaViTU's and DL4GAM's feature stacks do) keeps the physics and lets the
training data teach the corrections: debris, shadow, seasonal snow, the ice divides of the
reference.

The indices are computed here, in the network, from the normalised bands and the card's
statistics, so a card still asks the catalog for plain bands, every engine path (tiles, windows,
ensembles, GPU) gets them for free, and training and inference cannot disagree on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from glacierscale.models.unet import UNet

#: Reflectance floor before a normalised difference: negative values of over-corrected dark or
#: shadowed pixels (common in L2A/HLS) would otherwise flip the sign of an index.
FLOOR = 1e-3

#: Named indices: normalised difference ``(a - b) / (a + b)`` of two common bands.
INDICES: dict[str, tuple[str, str]] = {
    "ndsi": ("green", "swir16"),  # snow and ice vs everything else (Dozier 1989)
    "red_swir16": ("red", "swir16"),  # the red/SWIR band ratio as (r - 1) / (r + 1)
    "ndwi": ("green", "nir"),  # melt water, wet snow (McFeeters 1996)
    "ndvi": ("nir", "red"),  # vegetation on moraines and valley floors
    "swir_ratio": ("swir16", "swir22"),  # grain size / wet vs dry surfaces
}


#: Not an index: the no-data mask as an input channel (see :class:`SpectralIndices`).
VALID = "valid"


def check_index_names(indices: Sequence[str]) -> None:
    """Raise naming the known channels when ``indices`` holds a name that is none of them."""
    for name in indices:
        if name != VALID and name not in INDICES:
            raise ValueError(f"unknown spectral index {name!r}; known: "
                             f"{[*sorted(INDICES), VALID]}")


def index_pairs(indices: Sequence[str], bands: Sequence[str]) -> list[tuple[int, int]]:
    """Band positions of every index, with an error naming the missing band or unknown index."""
    check_index_names(indices)
    pairs = []
    for name in indices:
        if name == VALID:
            continue
        a, b = INDICES[name]
        missing = [x for x in (a, b) if x not in bands]
        if missing:
            raise ValueError(f"index {name!r} needs band(s) {missing}, which the model's bands "
                             f"{list(bands)} lack: add them to --bands or drop the index")
        pairs.append((list(bands).index(a), list(bands).index(b)))
    return pairs


def data_mask(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) mask, 1 where a normalised input pixel has data.

    The engine and the trainer write no data as exactly 0 in every normalised band.
    """
    return (x != 0).any(dim=1, keepdim=True).to(x.dtype)


class SpectralIndices(nn.Module):
    """Append normalised-difference channels to a normalised band stack.

    Input ``(N, C, H, W)`` normalised as the card says (``(value - mean) / std``; no data = 0);
    output ``(N, C + len(indices), H, W)``. Physical values are recovered from the card's
    statistics, floored at :data:`FLOOR`, and each index is in [-1, 1]. Pixels with no data (0 in
    every band) get the index of the band means, a neutral value the network learns to ignore.

    The name ``valid`` in ``indices`` adds the no-data mask as a channel (1 where the pixel has
    data): no data is otherwise indistinguishable from a pixel at the band means, and a network
    that cannot tell "unknown" from "grey" misreads scene edges and cloud masks.
    """

    a: torch.Tensor
    b: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, bands: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 indices: Sequence[str]) -> None:
        super().__init__()
        if len(mean) != len(bands) or len(std) != len(bands):
            raise ValueError(f"{len(bands)} bands but {len(mean)} means and {len(std)} stds")
        self.valid = VALID in indices
        pairs = index_pairs([i for i in indices if i != VALID], bands)
        self.indices = tuple(indices)
        self.register_buffer("a", torch.tensor([p[0] for p in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("b", torch.tensor([p[1] for p in pairs], dtype=torch.long),
                             persistent=False)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[None, :, None,
                                                                                   None],
                             persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[None, :, None,
                                                                                 None],
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.indices:
            return x
        # Indices in float32 even under autocast: a difference of two small reflectances loses
        # its meaning in bf16.
        phys = (x.float() * self.std + self.mean).clamp_min(FLOOR)
        a, b = phys[:, self.a], phys[:, self.b]
        parts = [x, ((a - b) / (a + b)).to(x.dtype)]
        if self.valid:
            parts.append(data_mask(x))
        return torch.cat(parts, dim=1)


def fill_nodata(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill no data from the surrounding valid pixels (push-pull: a pyramid of masked means).

    A block of band means beside bright ice is an edge the network reads as an ice margin; the
    continued neighbouring surface is not, so ice along scene edges and cloud masks keeps its
    probability. Each level halves the grid with a masked 2x2 mean, the coarsest level that covers
    a hole fills it, upsampled bilinearly: about the cost of one pooling of the input, whatever the
    size of the hole. ``valid`` is (N, 1, H, W) in {0, 1}; valid pixels are returned unchanged, and
    an input with no valid pixel at all stays as it is.
    """
    import torch.nn.functional as F

    if bool(valid.min() > 0) or bool(valid.max() <= 0):
        return x
    h, w = x.shape[-2:]
    if h == 1 and w == 1:
        return x
    num = F.avg_pool2d(x * valid, 2, ceil_mode=True)
    den = F.avg_pool2d(valid, 2, ceil_mode=True)
    coarse_valid = (den > 0).to(x.dtype)
    coarse = fill_nodata(num / den.clamp_min(1e-6) * coarse_valid, coarse_valid)
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(valid > 0, x, up)


class IndexUNet(nn.Module):
    """:class:`~glacierscale.models.unet.UNet` reading the bands plus spectral index channels.

    Args:
        bands, mean, std: the card's bands and normalisation (to recover reflectance).
        classes: output channels.
        indices: names from :data:`INDICES`.
        **unet: ``width``, ``depth``, ``dropout``, ``blocks`` of the U-Net.
    """

    def __init__(self, bands: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 classes: int = 1, *, indices: Sequence[str] = (), fill_nodata: bool = False,
                 **unet: Any) -> None:
        super().__init__()
        self.features = SpectralIndices(bands, mean, std, indices)
        self.fill = fill_nodata
        self.unet = UNet(len(bands) + len(indices), classes, **unet)

    @property
    def multiple(self) -> int:
        return self.unet.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        if self.fill:
            # Fill bands and indices alike; the valid channel (last, when asked for) keeps saying
            # which pixels were made up.
            k = feats.shape[1] - (1 if self.features.valid else 0)
            feats = torch.cat([fill_nodata(feats[:, :k], data_mask(x)), feats[:, k:]], dim=1)
        out: torch.Tensor = self.unet(feats)
        return out

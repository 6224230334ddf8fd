"""A U-Net with a ResNet-style encoder, in plain torch (no torchvision, no timm).

The shape follows the encoders the glacier-mapping literature uses most (U-Net/ResNet34 in
Diaconu et al. 2023; segmentation-models-pytorch's Unet): a stride-2 stem, stages of ResNet basic
blocks that halve the resolution and double the width, and a decoder that upsamples, concatenates
the encoder feature of the same scale and convolves. The last decoder block works at full
resolution with few channels, which keeps activation memory small where it is largest.

Any number of input channels works (optical bands, DEM derivatives, radar); any input size works
(the network pads to a multiple of ``2 ** depth`` by reflection and crops back).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + batch norm, identity or projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class DecoderBlock(nn.Module):
    """Upsample x2 (nearest), concatenate the skip feature, two 3x3 conv + BN + ReLU, dropout."""

    def __init__(self, cin: int, cskip: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin + cskip, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return self.drop(x)


class UNet(nn.Module):
    """U-Net with a ResNet-style encoder.

    Args:
        in_channels: number of input bands.
        classes: output channels (1 for the binary glacier/not-glacier logit).
        width: channels of the first encoder stage; stage ``i`` has ``width * 2**i``.
        depth: number of encoder stages; features at 1/2 ... 1/2**depth of the input resolution.
        dropout: Dropout2d probability after each decoder block (enables Monte Carlo dropout).
        blocks: basic blocks per encoder stage, one number for all or one per stage: 2 gives a
            ResNet18-like encoder, ``width=64, blocks=(3, 4, 6, 3)`` a ResNet34-like one.
    """

    def __init__(self, in_channels: int, classes: int = 1, width: int = 32, depth: int = 4,
                 dropout: float = 0.0, *, blocks: int | Sequence[int] = 2) -> None:
        super().__init__()
        per_stage = [blocks] * depth if isinstance(blocks, int) else list(blocks)
        if len(per_stage) != depth:
            raise ValueError(f"blocks needs one count per stage ({depth}), got {blocks}")
        if in_channels < 1 or classes < 1 or width < 2 or depth < 1 or min(per_stage) < 1:
            raise ValueError("UNet needs in_channels >= 1, classes >= 1, width >= 2, depth >= 1, "
                             f"blocks >= 1; got {in_channels=}, {classes=}, {width=}, {depth=}, "
                             f"{blocks=}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.classes, self.depth = in_channels, classes, depth
        widths = [width * 2**i for i in range(depth)]
        self.stem = nn.Sequential(_conv3x3(in_channels, width, stride=2), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        stages = []
        for i, w in enumerate(widths):
            cin = width if i == 0 else widths[i - 1]
            first = BasicBlock(cin, w, stride=1 if i == 0 else 2)
            rest = [BasicBlock(w, w) for _ in range(per_stage[i] - 1)]
            stages.append(nn.Sequential(first, *rest))
        self.encoder = nn.ModuleList(stages)
        decoders = []
        for i in range(depth - 1, 0, -1):
            decoders.append(DecoderBlock(widths[i], widths[i - 1], widths[i - 1], dropout))
        # Last block: back to full resolution without a skip, few channels (cheap at the largest
        # scale, as in segmentation-models-pytorch's Unet).
        self.final_width = max(width // 2, 8)
        decoders.append(DecoderBlock(widths[0], 0, self.final_width, dropout))
        self.decoder = nn.ModuleList(decoders)
        self.head = nn.Conv2d(self.final_width, classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for convolutions, unit batch norm (torchvision's ResNet scheme)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def multiple(self) -> int:
        """Input sizes that need no internal padding are multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # Reflection needs the pad to be smaller than the axis; replicate tiny inputs instead.
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        feats = []
        y = self.stem(x)
        for stage in self.encoder:
            y = stage(y)
            feats.append(y)
        y = feats[-1]
        for i, block in enumerate(self.decoder):
            skip_index = len(feats) - 2 - i
            y = block(y, feats[skip_index] if skip_index >= 0 else None)
        out: torch.Tensor = self.head(y)
        if ph or pw:
            out = out[..., :h, :w]
        return out

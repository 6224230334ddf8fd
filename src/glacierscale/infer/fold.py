"""Batch norm folded into the convolution before it: the same network, fewer passes over memory.

In inference a batch norm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with scaled weights and a shifted bias (what TensorRT, ONNX Runtime, OpenVINO and
torch.compile's freezing do). On the CPU the batch norms of the project's U-Net cost about a
quarter of its forward time, all of it memory traffic; folded, they cost nothing. Outputs move by
float32 rounding only.

Which convolution feeds which batch norm is read from the module tree: consecutive
``Conv2d, BatchNorm2d`` children of a ``Sequential``, and ``convN``/``bnN`` attribute pairs (the
ResNet naming the built-in U-Net and most encoders use). That reading is a guess about code it
cannot see, so the folded copy is only used after it gives the original's probabilities on a probe
input; otherwise the original runs unchanged.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re

import torch
from torch import nn

from glacierscale.infer.runtime import log_once
from glacierscale.infer.uncertainty import samples_of
from glacierscale.models import GlacierModel

#: Largest probability difference a folded copy may show on the probe input: float32 rounding
#: through a deep network gives up to ~4e-5 (seeded U-Nets, whose logits are large); a wrong
#: pairing gives ~1e-1.
MAX_FOLD_DIFF = 1e-3
_CONV = re.compile(r"^conv(\w*)$")


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not bn.training
            and bn.running_mean is not None and bn.running_var is not None
            and conv.out_channels == bn.num_features)


def _pairs(module: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv name, bn name) of every conv -> batch norm pair found in ``module``."""
    found: list[tuple[nn.Module, str, str]] = []
    for parent in module.modules():
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for a, b in itertools.pairwise(names):
                if _foldable(children[a], children[b]):
                    found.append((parent, a, b))
            continue
        for name, child in children.items():
            m = _CONV.match(name)
            bn_name = f"bn{m.group(1)}" if m else ""
            if m and bn_name in children and _foldable(child, children[bn_name]):
                found.append((parent, name, bn_name))
    return found


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` with each batch norm found after a convolution folded into it and
    replaced by an identity; returns the copy and the number of batch norms folded (0, and
    ``module`` itself, when there is nothing to fold or the module cannot be copied)."""
    if not _pairs(module):
        return module, 0
    # Model cards are immutable (and hold read-only mappings deepcopy refuses): share them.
    memo: dict[int, object] = {id(c): c for c in (getattr(m, "card", None)
                                                  for m in module.modules()) if c is not None}
    try:
        out = copy.deepcopy(module, memo)
    except (TypeError, RuntimeError) as exc:  # an attribute that cannot be copied
        log_once(logging.INFO, f"batch norm not folded: the network cannot be copied ({exc})")
        return module, 0
    pairs = _pairs(out)
    for parent, conv_name, bn_name in pairs:
        conv: nn.Conv2d = getattr(parent, conv_name)
        bn: nn.BatchNorm2d = getattr(parent, bn_name)
        assert bn.running_var is not None and bn.running_mean is not None
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        fmt = (torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last)
               and not conv.weight.is_contiguous() else torch.contiguous_format)
        w = (conv.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=fmt)
        conv.weight = nn.Parameter(w, requires_grad=False)
        conv.bias = nn.Parameter(shift.detach().clone(), requires_grad=False)
        setattr(parent, bn_name, nn.Identity())
    return out, len(pairs)


def folded_model(model: GlacierModel, device: torch.device) -> GlacierModel:
    """``model`` with its batch norms folded when that is safe (see the module notes), else
    ``model`` itself. Only torch modules in eval mode are folded."""
    if not isinstance(model, nn.Module) or model.training:
        return model
    folded, n = fold_batchnorm(model)
    if n == 0:
        return model
    c = len(model.card.bands)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c, 64, 64, generator=gen).to(device)
    with torch.inference_mode():
        p0 = torch.sigmoid(samples_of(model, x).float())
        p1 = torch.sigmoid(samples_of(folded, x).float())  # type: ignore[arg-type]
    diff = float((p0 - p1).abs().max())
    if not diff <= MAX_FOLD_DIFF:
        log_once(logging.INFO, f"model {model.card.name!r}: batch norm not folded (the folded "
                 f"copy moved probabilities by up to {diff:.1e})")
        return model
    return folded  # type: ignore[return-value]

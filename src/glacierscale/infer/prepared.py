"""A model made ready for one runtime, and the per-batch device work of the engine.

Preparing moves the network to its device in eval mode and channels_last, optionally compiles it,
and puts the card's normalisation and the window weights on the device. ``run`` takes one host
batch through copy, normalisation, autocast forward, temperature, sigmoid, sample statistics and
weighting; on CUDA every step is asynchronous and the copies use pinned memory and a side stream.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from glacierscale.core.windows import BlendKind, taper_weights
from glacierscale.infer.runtime import Runtime, log_once
from glacierscale.infer.uncertainty import samples_of
from glacierscale.models import GlacierModel

#: bf16 chosen automatically must move probabilities less than this on average ...
BF16_MAX_MEAN_DIFF = 5e-3
#: ... and flip at most this fraction of 0.5-threshold decisions, on the probe input.
BF16_MAX_FLIPS = 1e-3

_COMPILED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _probe_input(channels: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth, seeded, normalised-scale random field: imagery-like spatial structure."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, channels, size // 16, size // 16, generator=gen)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                        align_corners=False)
    return x + 0.2 * torch.randn(x.shape, generator=gen)


def bf16_accuracy(fn: Any, channels: int, device: torch.device) -> tuple[float, float]:
    """(mean |p_bf16 - p_fp32|, fraction of flipped 0.5 decisions) of ``fn`` on the probe input."""
    x = _probe_input(channels).to(device)
    with torch.inference_mode():
        p32 = torch.sigmoid(fn(x).float())
        with torch.autocast(device.type, dtype=torch.bfloat16):
            p16 = torch.sigmoid(fn(x).float())
    diff = float((p16 - p32).abs().mean())
    flips = float(((p16 >= 0.5) != (p32 >= 0.5)).float().mean())
    return diff, flips


@dataclass
class Prepared:
    """A model on its device, with everything ``run`` needs for a batch."""

    model: GlacierModel
    rt: Runtime
    fn: Any  # x -> (K, N, 1, h, w) logits
    sampled: bool
    mean: torch.Tensor
    std: torch.Tensor
    mean_np: np.ndarray  # (C, 1, 1) float32, for normalising on the host
    std_np: np.ndarray
    temperature: float
    weights_np: np.ndarray
    weights: torch.Tensor
    copy_stream: Any = None

    @property
    def normalise_on_host(self) -> bool:
        """CPU runs normalise while packing; GPUs get raw values and normalise on the device."""
        return not self.rt.is_cuda

    def normalise(self, x: torch.Tensor, has_invalid: bool) -> torch.Tensor:
        """Normalise a raw device batch or tile in place (NaN/inf -> 0, the band mean). Divide,
        not multiply by 1/std, so inputs match ``(x - mean) / std`` elsewhere bit for bit."""
        mean, std = (self.mean, self.std) if x.dim() == 4 else (self.mean[0], self.std[0])
        x.sub_(mean).div_(std)
        if has_invalid:
            x.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        return x

    def score(self, x: torch.Tensor, valid: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted probability and uncertainty ``(n, k, k)`` of a normalised batch on the device;
        NaN where ``valid`` (``(n, k, k)``, None: all valid) is False."""
        rt = self.rt
        if rt.channels_last and not x.is_contiguous(memory_format=torch.channels_last):
            # The host engine packs CPU batches channels_last already; device batches convert.
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = rt.autocast_dtype
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            s = self.fn(x)
        p = torch.sigmoid(s[:, :, 0].float() / self.temperature)  # (K, n, k, k)
        prob = p.mean(dim=0) if p.shape[0] > 1 else p[0]
        unc = p.std(dim=0, correction=0) if self.sampled else None
        if valid is not None:
            nan = torch.tensor(float("nan"), device=p.device)
            prob = torch.where(valid, prob, nan)
            unc = torch.where(valid, unc, nan) if unc is not None else None
        prob = prob * self.weights
        unc = unc * self.weights if unc is not None else None
        return prob, unc

    def run(self, host: torch.Tensor, valid: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """Weighted probability (and uncertainty) of a host batch ``(n, C, k, k)``; returns host
        tensors and, on CUDA, the event to wait for before reading them. CPU batches arrive
        normalised (the engine normalises while packing); CUDA batches raw."""
        if not self.rt.is_cuda:
            prob, unc = self.score(host, valid)
            return prob, unc, None
        x = self.upload(host)
        v = self.upload(valid) if valid is not None else None
        prob, unc = self.score(self.normalise(x, valid is not None), v)
        prob_h = self.download(prob)
        unc_h = self.download(unc) if unc is not None else None
        return prob_h, unc_h, self.record()

    # -- CUDA transfers ---------------------------------------------------------------------------
    def upload(self, host: torch.Tensor) -> torch.Tensor:
        """Pinned host tensor -> device, on the copy stream; the compute stream waits for it."""
        dev = self.rt.torch_device
        with torch.cuda.stream(self.copy_stream):
            x = host.to(dev, non_blocking=True)
        compute = torch.cuda.current_stream(dev)
        compute.wait_stream(self.copy_stream)
        x.record_stream(compute)  # the allocator must not recycle x before compute is done
        return x

    def download(self, x: torch.Tensor) -> torch.Tensor:
        """Device -> pinned host, asynchronously on the compute stream (see :meth:`record`)."""
        out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        out.copy_(x, non_blocking=True)
        return out

    def record(self) -> Any:
        """A CUDA event after everything queued so far; synchronize it before reading results."""
        event = torch.cuda.Event()
        event.record()
        return event


def _forward_fn(model: GlacierModel, rt: Runtime) -> Any:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return samples_of(model, x)

    if not rt.compile:
        return fn
    backend = rt.compile if isinstance(rt.compile, str) else "inductor"
    per_model = _COMPILED.setdefault(model, {})
    if backend not in per_model:
        # Windows always have the same shape: a static graph avoids recompiles.
        per_model[backend] = torch.compile(fn, backend=backend, dynamic=False)
    return per_model[backend]


def prepare(model: GlacierModel, rt: Runtime, window_px: int, blend: BlendKind,
            weights: np.ndarray | None = None) -> Prepared:
    """Move ``model`` to the runtime's device (in place for torch modules) and settle precision.

    ``weights`` (``(window_px, window_px)``) replaces the ``blend`` taper when given.
    """
    card = model.card
    if isinstance(model, nn.Module):
        model.eval()
        model.to(rt.torch_device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if rt.precision != "fp32" and not getattr(model, "autocast_ok", True):
        log_once(logging.INFO, f"model {card.name!r} runs in fp32: its band arithmetic is not "
                 "accurate enough in reduced precision")
        rt = rt.fp32()
    if rt.precision == "bf16" and rt.precision_auto and not rt.is_cuda:
        diff, flips = bf16_accuracy(lambda x: model.logits(x), len(card.bands), rt.torch_device)
        if diff > BF16_MAX_MEAN_DIFF or flips > BF16_MAX_FLIPS:
            log_once(logging.INFO, f"model {card.name!r} runs in fp32 on CPU: bf16 moved "
                     f"probabilities by {diff:.2e} on average and flipped {flips:.2%} of decisions")
            rt = rt.fp32()
    dev = rt.torch_device
    c = len(card.bands)
    mean = torch.tensor(card.mean, dtype=torch.float32).view(1, c, 1, 1).to(dev)
    std = torch.tensor(card.std, dtype=torch.float32).view(1, c, 1, 1).to(dev)
    if weights is None:
        w = taper_weights(window_px, blend)
    else:
        w = np.ascontiguousarray(weights, dtype=np.float32)
        if w.shape != (window_px, window_px) or not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError(f"weights must be a positive finite ({window_px}, {window_px}) "
                             f"map, got shape {w.shape}")
    return Prepared(
        model=model, rt=rt, fn=_forward_fn(model, rt),
        sampled=hasattr(model, "sample_logits"), mean=mean, std=std,
        mean_np=mean.cpu().numpy()[0], std_np=std.cpu().numpy()[0],
        temperature=float(card.temperature), weights_np=w,
        weights=torch.from_numpy(w).to(dev),
        copy_stream=torch.cuda.Stream(dev) if rt.is_cuda else None,
    )

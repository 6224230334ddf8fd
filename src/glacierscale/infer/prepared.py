"""A model made ready for one runtime, and the per-batch device work of the engine.

Preparing moves the network to its device in eval mode and in the runtime's memory format,
optionally compiles it, and puts the card's normalisation and the window weights on the device;
it happens once per model state, runtime and window geometry in a process (:func:`prepare`
caches), so a worker that predicts many batches of tiles prepares its model once, while a model
whose weights changed since (validation during training) is prepared again. ``run`` takes one host
batch through copy, normalisation, autocast forward, temperature, sigmoid, sample statistics and
weighting; on CUDA every step is asynchronous and the copies use pinned memory and a side stream.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from glacierscale.core.windows import BlendKind, taper_weights
from glacierscale.infer.fold import folded_model
from glacierscale.infer.probe import (
    BF16_MAX_FLIPS,
    BF16_MAX_MEAN_DIFF,
    bf16_accuracy,
    passes_gates,
    probe_input,
    reduced_precision_accuracy,
    set_layout,
)
from glacierscale.infer.runtime import Runtime, log_once
from glacierscale.infer.uncertainty import samples_of
from glacierscale.models import GlacierModel, deferral_spread

__all__ = ["BF16_MAX_FLIPS", "BF16_MAX_MEAN_DIFF", "Prepared", "bf16_accuracy", "prepare"]

#: Prepared models of this process, most recently used last (a worker holds one or two).
_PREPARED: OrderedDict[tuple[Any, ...], Prepared] = OrderedDict()
_PREPARED_MAX = 4
_PREPARED_LOCK = threading.Lock()


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
    #: ``fn`` gives 2K samples: the model's K, then the answer each one deferred from (a model
    #: with ``paired_sample_logits``, e.g. a physics floor); only the first K make the probability
    paired: bool = False

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
        s = s[:, :, 0].float()
        if self.temperature != 1.0:  # x / 1 == x exactly: skipping it changes no bit
            s = s / self.temperature
        p = torch.sigmoid(s)  # (K, n, k, k), a new tensor: the steps below work in place
        alt = None
        if self.paired:  # the model's samples, then the answer each deferred from
            p, alt = p.chunk(2)
        prob = p.mean(dim=0) if p.shape[0] > 1 else p[0]
        if alt is not None:
            unc: torch.Tensor | None = deferral_spread(p, alt)
        else:
            unc = p.std(dim=0, correction=0) if self.sampled else None
        if valid is not None:
            invalid = ~valid
            prob.masked_fill_(invalid, float("nan"))
            if unc is not None:
                unc.masked_fill_(invalid, float("nan"))
        prob.mul_(self.weights)
        if unc is not None:
            unc.mul_(self.weights)
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
    net = folded_model(model, rt.torch_device) if rt.fold_bn else model
    if net is not model:
        set_layout(net, rt.channels_last)

    paired = getattr(net, "paired_sample_logits", None)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return paired(x) if paired is not None else samples_of(net, x)

    if not rt.compile:
        return fn
    backend = rt.compile if isinstance(rt.compile, str) else "inductor"
    # Windows always have the same shape: a static graph avoids recompiles. Compiled once per
    # preparation, which prepare() caches.
    return torch.compile(fn, backend=backend, dynamic=False)


def _state(model: GlacierModel) -> tuple[tuple[int, int], ...]:
    """Identity and version of every parameter and buffer: any in-place update (an optimiser
    step, batch-norm statistics) or replacement changes it, so a stale preparation is never
    reused."""
    if not isinstance(model, nn.Module):
        return ()
    return tuple((id(t), t._version) for t in itertools.chain(model.parameters(),
                                                                model.buffers()))


def _placed(model: nn.Module, rt: Runtime) -> bool:
    """Whether ``model`` is on ``rt``'s device in its memory format. Moves and reformats apply
    to the whole module, so its first convolution kernel tells; checking it costs microseconds
    where moving every module again costs milliseconds per tile."""
    kernel = next((p for p in model.parameters() if p.dim() == 4 and p.shape[2:].numel() > 1),
                  None)
    if kernel is None:
        return False
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    return kernel.device == rt.torch_device and kernel.is_contiguous(memory_format=fmt)


def prepare(model: GlacierModel, rt: Runtime, window_px: int, blend: BlendKind,
            weights: np.ndarray | None = None) -> Prepared:
    """``model`` ready for ``rt``: on its device (in place for torch modules), in its memory
    format and precision; the same object for the same model, runtime and window geometry.

    ``weights`` (``(window_px, window_px)``) replaces the ``blend`` taper when given.
    """
    w = _window_weights(window_px, blend, weights)
    key = (id(model), rt, window_px, hashlib.sha1(w.tobytes()).hexdigest(), _state(model))
    with _PREPARED_LOCK:
        hit = _PREPARED.get(key)
        if hit is not None and hit.model is model:
            _PREPARED.move_to_end(key)
            if isinstance(model, nn.Module) and not _placed(model, hit.rt):
                # Another runtime of the same model moved or reformatted it since.
                model.to(hit.rt.torch_device)
                set_layout(model, hit.rt.channels_last)
            return hit
        prep = _prepare(model, rt, w)
        _PREPARED[key] = prep
        while len(_PREPARED) > _PREPARED_MAX:
            _PREPARED.popitem(last=False)
        return prep


def _window_weights(window_px: int, blend: BlendKind, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return taper_weights(window_px, blend)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    if w.shape != (window_px, window_px) or not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"weights must be a positive finite ({window_px}, {window_px}) "
                         f"map, got shape {w.shape}")
    return w


def _prepare(model: GlacierModel, rt: Runtime, w: np.ndarray) -> Prepared:
    card = model.card
    if isinstance(model, nn.Module):
        model.eval()
        model.to(rt.torch_device)
        set_layout(model, rt.channels_last)
    if rt.precision != "fp32" and not getattr(model, "autocast_ok", True):
        log_once(logging.INFO, f"model {card.name!r} runs in fp32: its band arithmetic is not "
                 "accurate enough in reduced precision")
        rt = rt.fp32()
    if rt.precision != "fp32" and rt.precision_auto:
        # Chosen by the machine, not asked for: kept only where accurate enough on this model.
        x = probe_input(len(card.bands)).to(rt.torch_device)
        dtype = rt.autocast_dtype
        assert dtype is not None
        diff, flips = reduced_precision_accuracy(model, x, dtype)
        if not passes_gates(diff, flips):
            log_once(logging.INFO, f"model {card.name!r} runs in fp32 on {rt.device}: "
                     f"{rt.precision} moved probabilities by {diff:.2e} on average and flipped "
                     f"{flips:.2%} of decisions")
            rt = rt.fp32()
    dev = rt.torch_device
    c = len(card.bands)
    mean = torch.tensor(card.mean, dtype=torch.float32).view(1, c, 1, 1).to(dev)
    std = torch.tensor(card.std, dtype=torch.float32).view(1, c, 1, 1).to(dev)
    return Prepared(
        model=model, rt=rt, fn=_forward_fn(model, rt),
        sampled=hasattr(model, "sample_logits"),
        paired=hasattr(model, "paired_sample_logits"), mean=mean, std=std,
        mean_np=mean.cpu().numpy()[0], std_np=std.cpu().numpy()[0],
        temperature=float(card.temperature), weights_np=w,
        weights=torch.from_numpy(w).to(dev),
        copy_stream=torch.cuda.Stream(dev) if rt.is_cuda else None,
    )

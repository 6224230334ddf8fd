"""A run's runtime, chosen by measurement on the machine and the model at hand.

Which memory layout and precision are fastest depends on the CPU or GPU, the library build and the
network (channels_last is ~3x faster than NCHW for the U-Net on one 2-core AVX-512 machine; bf16
autocast is slower than fp32 on some CPUs without AMX and 1.8x faster on others), so
:func:`select_runtime` times the candidates on the loaded model, alternating them in rounds (load
from other processes hits all alike) and keeping each one's best time, within a budget of a few
seconds. Reduced precision is a candidate only when asked for (``precision="auto"``) and only
where it passes both accuracy gates on this model: mean probability difference at most
:data:`BF16_MAX_MEAN_DIFF` and at most :data:`BF16_MAX_FLIPS` of the 0.5 decisions flipped,
against fp32, on a sample of the run's input when one is given, else on a smooth random field.

The result is a :class:`~glacierscale.infer.runtime.RuntimeChoice`: recorded once per run, it makes
every tile, worker and resume use the same runtime whatever later probes would say.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from glacierscale.config import InferConfig
from glacierscale.infer.fold import folded_model
from glacierscale.infer.runtime import (
    Precision,
    Runtime,
    RuntimeChoice,
    activate,
    log_once,
    probe_capabilities,
    resolve_runtime,
)
from glacierscale.infer.uncertainty import samples_of
from glacierscale.models import GlacierModel

log = logging.getLogger("glacierscale.infer")

#: Reduced precision must move probabilities less than this on average ...
BF16_MAX_MEAN_DIFF = 5e-3
#: ... and flip at most this fraction of 0.5-threshold decisions.
BF16_MAX_FLIPS = 1e-3
#: A candidate replaces the default only when at least this much faster: measurements on a shared
#: machine wobble by a few percent, and a choice that flips between runs helps nobody.
MIN_GAIN = 1.1
#: Probe input sizes (px): large enough to time the convolutions, small enough to be quick.
PROBE_MAX_PX = 256
PROBE_MIN_PX = 64


def probe_input(channels: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth, seeded, normalised-scale random field (2, C, size, size): imagery-like spatial
    structure for models that have no sample of real input at hand."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, channels, max(size // 16, 2), max(size // 16, 2), generator=gen)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                        align_corners=False)
    return x + 0.2 * torch.randn(x.shape, generator=gen)


def normalised_sample(model: GlacierModel, sample: np.ndarray, size: int = 256) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop of a physical-unit (C, H, W) sample, normalised with
    the card's statistics like the engine does (no data -> 0), as a (1, C, h, w) batch."""
    c, h, w = sample.shape
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    crop = np.asarray(sample[:, top:top + size, left:left + size], dtype=np.float32)
    mean = np.asarray(model.card.mean, dtype=np.float32).reshape(c, 1, 1)
    std = np.asarray(model.card.std, dtype=np.float32).reshape(c, 1, 1)
    x = np.nan_to_num((crop - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.from_numpy(np.ascontiguousarray(x))[None]


def _agreement(probs: Any, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(mean |p_reduced - p_fp32|, fraction of flipped 0.5 decisions) of ``probs()``, a function
    returning probabilities, run in fp32 and autocast to ``dtype``."""
    with torch.inference_mode():
        p32 = probs()
        with torch.autocast(device.type, dtype=dtype):
            p16 = probs()
    diff = float((p16 - p32).abs().mean())
    flips = float(((p16 >= 0.5) != (p32 >= 0.5)).float().mean())
    return diff, flips


def reduced_precision_accuracy(model: GlacierModel, x: torch.Tensor, dtype: torch.dtype
                               ) -> tuple[float, float]:
    """(mean |p_reduced - p_fp32|, fraction of flipped 0.5 decisions) of ``model`` on ``x``
    (a normalised batch on the model's device), autocast to ``dtype`` against fp32."""
    return _agreement(lambda: torch.sigmoid(samples_of(model, x).float()).mean(dim=0),
                      x.device, dtype)


def bf16_accuracy(fn: Any, channels: int, device: torch.device) -> tuple[float, float]:
    """The bf16 agreement of the logits function ``fn`` on the random-field probe input."""
    x = probe_input(channels).to(device)
    return _agreement(lambda: torch.sigmoid(fn(x).float()), device, torch.bfloat16)


def passes_gates(diff: float, flips: float) -> bool:
    """True when reduced precision is accurate enough by both gates."""
    return diff <= BF16_MAX_MEAN_DIFF and flips <= BF16_MAX_FLIPS


def set_layout(model: GlacierModel, channels_last: bool) -> None:
    """Put a torch model's weights in a memory format (in place; other models have none)."""
    if isinstance(model, nn.Module):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=fmt)  # type: ignore[call-overload]


_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _precisions(model: GlacierModel, cfg: InferConfig, base: Runtime) -> list[Precision]:
    """Candidate precisions, the default first: what ``cfg`` asks for (after the machine's
    fallbacks), or for ``auto`` full precision plus the machine's reduced one."""
    if cfg.precision != "auto":
        return [base.precision]
    if not getattr(model, "autocast_ok", True):
        return ["fp32"]
    caps = probe_capabilities()
    if base.is_cuda:
        # On a GPU reduced precision is the default: tensor cores are several times faster.
        return ["bf16" if caps.cuda_bf16 else "fp16", "fp32"]
    return ["fp32", "bf16"] if caps.cpu_avx512_bf16 else ["fp32"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(model: GlacierModel, x: torch.Tensor, precision: Precision) -> float:
    dtype = _DTYPES.get(precision)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        t0 = time.perf_counter()
        samples_of(model, x)
        _sync(x.device)
        return time.perf_counter() - t0


def select_runtime(model: GlacierModel, cfg: InferConfig, *, budget_s: float = 3.0,
                   sample: np.ndarray | None = None, threads: int | None = None) -> RuntimeChoice:
    """Measure layouts and precisions of ``model`` on this machine and return the fastest choice.

    ``cfg.device`` and ``cfg.precision`` bound the candidates (an explicit precision is kept and
    only the layout is measured). ``sample``, a physical-unit (C, H, W) array in the card's band
    order (e.g. the run's first tile), is what the accuracy gates are checked on; without it a
    smooth random field is used. ``budget_s`` bounds the whole probe for models whose forward
    pass on a small input takes well under a tenth of it (the input shrinks to fit; a slower model
    still gets one timed round per candidate). ``threads`` are the CPU threads the workers will
    use. The model is left on the device in the chosen layout. The choice's ``evidence`` records
    what was measured: ``probe_windows_per_s`` (windows of ``probe_px`` per second, one at a
    time) per candidate and, for reduced precision, both gate figures.
    """
    t_end = time.perf_counter() + max(budget_s, 0.2)
    t_start = time.perf_counter()
    base = resolve_runtime(cfg, threads=threads)
    dev = base.torch_device
    activate(base)
    if isinstance(model, nn.Module):
        model.eval()
        model.to(dev)
    c = len(model.card.bands)
    # Measured as the engine will run it: batch norms folded (see glacierscale.infer.fold).
    net = folded_model(model, dev) if base.fold_bn else model
    precisions = _precisions(model, cfg, base)
    evidence: dict[str, Any] = {"threads": base.threads if not base.is_cuda else None}
    small = min(cfg.window_px, PROBE_MIN_PX)
    t_small = _forward_cost(net, c, small, dev)

    # Accuracy gates, in channels_last (the layout does not change the arithmetic that matters):
    # 2 x 128^2 pixels resolve flips to 3e-5; a slow model gets 2 x 64^2 (1e-4, still 10x finer
    # than the gate).
    gate_px = 128 if 16 * t_small * (128 / small) ** 2 <= budget_s / 3 else 64
    gate_x = (normalised_sample(model, sample, gate_px) if sample is not None
              else probe_input(c, gate_px)).to(dev).contiguous(memory_format=torch.channels_last)
    accuracy: dict[str, Any] = {}
    for p in [p for p in precisions if p != "fp32"]:
        if cfg.precision != "auto":
            continue  # asked for explicitly: honoured, as documented on InferConfig
        diff, flips = reduced_precision_accuracy(net, gate_x, _DTYPES[p])
        ok = passes_gates(diff, flips)
        accuracy[p] = {"mean_abs_prob_diff": diff, "decision_flips": flips, "passed": ok}
        if not ok:
            precisions.remove(p)
            log_once(logging.INFO, f"model {model.card.name!r}: {p} moved probabilities by "
                     f"{diff:.2e} on average and flipped {flips:.2%} of decisions; not used")
    evidence["accuracy"] = accuracy
    evidence["accuracy_input"] = "run sample" if sample is not None else "random field"

    # Every layout in the default precision; other precisions in channels_last, the layout
    # reduced-precision kernels are written for.
    layouts = [True, False] if isinstance(model, nn.Module) else [True]
    candidates = [(cl, precisions[0]) for cl in layouts] + [(True, p) for p in precisions[1:]]
    size, rates = _measure(net, candidates, cfg.window_px, c, dev, t_small, small, t_end)
    default = (True, precisions[0])
    best = max(rates, key=lambda k: rates[k])
    if rates[best] < MIN_GAIN * rates[default]:
        best = default
    set_layout(model, best[0])
    evidence["probe_px"] = size
    evidence["probe_windows_per_s"] = {_name(base, *k): round(v, 2) for k, v in rates.items()}
    evidence["seconds"] = round(time.perf_counter() - t_start, 3)
    choice = RuntimeChoice("cuda" if base.is_cuda else "cpu", best[1],
                           "channels_last" if best[0] else "nchw", evidence)
    log_once(logging.INFO, f"runtime chosen for model {model.card.name!r}: {choice.token()} "
             f"({size} px windows/s measured: {evidence['probe_windows_per_s']})")
    return choice


def _forward_cost(net: GlacierModel, channels: int, size: int, dev: torch.device) -> float:
    """Seconds of one fp32 channels_last forward pass of a ``size`` px window (after a first,
    untimed call that selects kernels)."""
    set_layout(net, True)
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(dev).contiguous(memory_format=torch.channels_last)
    _time_forward(net, x, "fp32")
    return _time_forward(net, x, "fp32")


def _name(base: Runtime, channels_last: bool, precision: str) -> str:
    return f"{'cuda' if base.is_cuda else 'cpu'}/{precision}/" \
           f"{'channels_last' if channels_last else 'nchw'}"


def _measure(model: GlacierModel, candidates: list[tuple[bool, Precision]], window: int,
             channels: int, dev: torch.device, t_small: float, small: int, t_end: float
             ) -> tuple[int, dict[tuple[bool, Precision], float]]:
    """(probe size, windows of that size per second for each candidate): a warm-up, then rounds
    alternating the candidates until ``t_end`` (at least one, at most eight); each candidate's
    best time counts.

    The probe input is one window of the largest size up to :data:`PROBE_MAX_PX` whose rounds
    fit, extrapolated from ``t_small``, the cost at ``small`` px (never smaller: smaller inputs
    time per-call overhead rather than the convolutions that decide).
    """
    # Candidates' first calls cost about two timed ones; three timed rounds should fit as well.
    per_size = (t_end - time.perf_counter()) / (5 * len(candidates) * max(t_small, 1e-6))
    grow = max(int((max(per_size, 0.0) ** 0.5) * small) // 32 * 32, small)
    size = min(window, PROBE_MAX_PX, grow)
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(1)).to(dev)
    inputs = {True: x.contiguous(memory_format=torch.channels_last), False: x.contiguous()}
    best: dict[tuple[bool, Precision], float] = {}
    for rnd in range(9):  # round 0 warms every candidate up
        for cl in dict.fromkeys(cl for cl, _ in candidates):
            set_layout(model, cl)
            for c, p in candidates:
                if c != cl:
                    continue
                t = _time_forward(model, inputs[cl], p)
                if rnd > 0:
                    best[(cl, p)] = min(best.get((cl, p), float("inf")), t)
        if rnd >= 1 and time.perf_counter() > t_end:
            break
    return size, {k: 1.0 / v for k, v in best.items()}

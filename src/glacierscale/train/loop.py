"""The training loop of one U-Net: seeded chip sampling, augmentation, masked loss, AMP.

One call trains one network on the chips of the training folds and (optionally) tracks a
validation loss and IoU on held-out chips for the training curves. The held-out chips never steer
training (no early stopping on them): they are the area the model will be judged on.

Determinism: the chip sampler, the augmentation and torch all draw from generators seeded by
``seed``; on CPU with ``torch.use_deterministic_algorithms`` two runs with the same seed and thread
count give bit-identical weights. Reduced precision (bf16 autocast) is used where the hardware
supports it; the loss and the optimiser state stay in float32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from glacierscale.models import ModelCard, build_network
from glacierscale.train.augment import Augment, coarsen
from glacierscale.train.chips import Chip, normalise
from glacierscale.train.labels import UNKNOWN, train_target

log = logging.getLogger(__name__)

#: A crop is redrawn (up to this many times) until this share of it can be learned from.
_MIN_LABELLED = 0.05
_REDRAWS = 10


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in the model card)."""

    width: int = 16
    depth: int = 3
    dropout: float = 0.0
    #: spectral index channels computed in the network (names of models.features.INDICES)
    indices: tuple[str, ...] = ()
    #: fill no data from its surroundings inside the network (models.features.fill_nodata)
    fill_nodata: bool = False
    chip_px: int = 128
    batch_size: int = 8
    steps: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.5
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    eval_every: int = 50
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        if self.chip_px % (2 ** self.depth):
            raise ValueError(f"chip_px ({self.chip_px}) must be a multiple of 2**depth "
                             f"({2 ** self.depth})")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        from glacierscale.models.features import check_index_names

        check_index_names(self.indices)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def network_params(self) -> dict[str, Any]:
        """The card's ``params``: what :func:`glacierscale.models.build_network` builds from."""
        params: dict[str, Any] = {"width": self.width, "depth": self.depth,
                                  "dropout": self.dropout}
        if self.indices:
            params["indices"] = list(self.indices)
        if self.fill_nodata:
            params["fill_nodata"] = True
        return params


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype to train with, or None for float32.

    ``auto`` follows the inference engine's rule: bf16 on CPUs with AMX tiles only (with
    AVX512-BF16 alone it is slower than float32 for these small networks), bf16/fp16 on GPUs.
    """
    from glacierscale.infer import probe_capabilities

    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if probe_capabilities().cpu_amx_bf16 else None


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and switch on deterministic algorithms for the block; restore afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)


class ChipSampler:
    """Random crops of ``chip_px`` from the chips, chosen in proportion to their labelled pixels."""

    def __init__(self, chips: Sequence[Chip], chip_px: int, rng: np.random.Generator) -> None:
        weights = np.array([float(train_target(c.labels)[1].sum()) for c in chips])
        if not len(chips) or weights.sum() <= 0:
            raise ValueError("no labelled pixels to train on: check the outlines overlap the "
                             "imagery and the date window holds clear scenes")
        self.chips, self.chip_px, self.rng = list(chips), chip_px, rng
        self.p = weights / weights.sum()

    def crop(self, size: int | None = None) -> tuple[Chip, NDArray[np.float32], NDArray[np.uint8]]:
        """A random crop of ``size`` pixels (default ``chip_px``), padded with no data where the
        chip is smaller."""
        size = size or self.chip_px
        chip = self.chips[int(self.rng.choice(len(self.chips), p=self.p))]
        img, lab = pad_to(chip.image, chip.labels, size)
        h, w = lab.shape
        best = None
        for _ in range(_REDRAWS):
            y = int(self.rng.integers(h - size + 1))
            x = int(self.rng.integers(w - size + 1))
            win = lab[y:y + size, x:x + size]
            share = float(train_target(win)[1].mean())
            if best is None or share > best[0]:
                best = (share, y, x)
            if share >= _MIN_LABELLED:
                break
        assert best is not None
        _, y, x = best
        return chip, img[:, y:y + size, x:x + size], lab[y:y + size, x:x + size]


def pad_to(image: NDArray[np.float32], labels: NDArray[np.uint8],
           size: int) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Pad a chip to at least ``size`` a side with no-data and unknown labels."""
    h, w = labels.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not (ph or pw):
        return image, labels
    image = np.pad(image, ((0, 0), (0, ph), (0, pw)), constant_values=np.nan)
    labels = np.pad(labels, ((0, ph), (0, pw)), constant_values=UNKNOWN)
    return image, labels


def _draw(sampler: ChipSampler, cfg: TrainConfig, bands: Sequence[str],
          rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """One augmented training crop; with probability ``augment.coarsen`` a crop ``k`` times the
    size brought to ``k`` times the pixel size (``k`` drawn from ``augment.coarsen_factors``), so
    the network also meets coarser imagery."""
    aug = cfg.augment
    if aug.enabled and aug.coarsen > 0 and float(rng.random()) < aug.coarsen:
        k = int(aug.coarsen_factors[int(rng.integers(len(aug.coarsen_factors)))])
        _, img, lab = sampler.crop(k * cfg.chip_px)
        img, lab = coarsen(img, lab, k)
    else:
        _, img, lab = sampler.crop()
    return aug.apply(img, lab, bands, rng)


def masked_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                dice_weight: float) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice over the weighted (labelled) pixels only."""
    logits = logits.float()
    n = weight.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / n
    if dice_weight <= 0:
        return bce
    p = torch.sigmoid(logits) * weight
    t = target * weight
    dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return bce + dice_weight * dice


def _batch(items: Sequence[tuple[NDArray[np.float32], NDArray[np.uint8]]], card: ModelCard,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ts, ws = [], [], []
    for img, lab in items:
        xs.append(normalise(img, card))
        t, w = train_target(lab)
        ts.append(t)
        ws.append(w.astype(np.float32))
    return (torch.from_numpy(np.stack(xs)).to(device),
            torch.from_numpy(np.stack(ts)[:, None]).to(device),
            torch.from_numpy(np.stack(ws)[:, None]).to(device))


def evaluate_chips(net: nn.Module, chips: Sequence[Chip], card: ModelCard,
                   device: torch.device, dice_weight: float) -> dict[str, float]:
    """Loss and IoU of ``net`` on whole chips (a quick check for the training curves)."""
    net.eval()
    losses, tp, fp, fn = [], 0, 0, 0
    with torch.no_grad():
        for c in chips:
            x, t, w = _batch([(c.image, c.labels)], card, device)
            if float(w.sum()) == 0:
                continue
            z = net(x).float()
            losses.append(float(masked_loss(z, t, w, dice_weight)))
            pred = (z > 0) & (w > 0)
            truth = (t > 0.5) & (w > 0)
            tp += int((pred & truth).sum())
            fp += int((pred & ~truth).sum())
            fn += int((~pred & truth).sum())
    net.train()
    iou = tp / (tp + fp + fn) if (tp + fp + fn) else math.nan
    return {"loss": float(np.mean(losses)) if losses else math.nan, "iou": iou}


def train_network(chips: Sequence[Chip], card: ModelCard, cfg: TrainConfig, *,
                  val_chips: Sequence[Chip] = (), device: str = "cpu",
                  progress: Callable[[int, float], None] | None = None,
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Train the network of ``card`` on ``chips`` (normalised with ``card``); returns it with its
    history.

    The history holds ``train_loss`` per step and, every ``eval_every`` steps, ``val`` records
    (step, loss, IoU) on ``val_chips``, plus the seconds taken and the precision used.
    """
    dev = torch.device(device)
    amp = autocast_dtype(cfg.precision, dev)
    rng = np.random.default_rng(cfg.seed)
    sampler = ChipSampler(chips, cfg.chip_px, rng)
    history: dict[str, Any] = {"train_loss": [], "val": [], "precision": str(amp or "fp32"),
                               "seed": cfg.seed}
    t0 = time.perf_counter()
    with deterministic(cfg.seed):
        # The card's architecture and params build the network, as at inference.
        net = build_network(card)
        # channels_last: ~1.4x faster convolutions on CPU (and what the engine runs).
        net.to(dev).to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                    pct_start=0.15)
        # fp16 (GPUs without bf16) needs loss scaling, or small gradients underflow to zero.
        scaler = torch.amp.GradScaler(dev.type, enabled=amp == torch.float16)
        for step in range(1, cfg.steps + 1):
            items = []
            for _ in range(cfg.batch_size):
                items.append(_draw(sampler, cfg, card.bands, rng))
            x, t, w = _batch(items, card, dev)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                z = net(x)
            loss = masked_loss(z, t, w, cfg.dice_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            history["train_loss"].append(float(loss.detach()))
            if progress is not None:
                progress(step, history["train_loss"][-1])
            if val_chips and (step % cfg.eval_every == 0 or step == cfg.steps):
                rec = evaluate_chips(net, val_chips, card, dev, cfg.dice_weight)
                history["val"].append({"step": step, **rec})
                log.info("step %d/%d: loss %.4f, held-out loss %.4f IoU %.3f (%.0f s)", step,
                         cfg.steps, np.mean(history["train_loss"][-cfg.eval_every:]),
                         rec["loss"], rec["iou"], time.perf_counter() - t0)
        net.eval()
    history["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("trained %d steps in %.1f s (%s), final loss %.4f", cfg.steps, history["seconds"],
             history["precision"], history["train_loss"][-1])
    return net.cpu(), history

"""Runs over several epochs: the same model, grid and settings mapped at two or more dates.

An epoch is a year (``2020``: each tile takes the end-of-melt-season window of its latitude in
that year) or a date window (``2020-08-01..2020-09-30``). Each epoch is an ordinary run written
under ``<out>/epochs/<epoch>/`` with its own scene selection, so it resumes per epoch and tile
like any run; only the dates differ between the epochs' configs, which is what makes their masks
comparable (:func:`glacierscale.inventory.change.compare` refuses anything else). Consecutive
epochs are then compared into ``<out>/change/<a>_<b>/``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from glacierscale.config import RunConfig

if TYPE_CHECKING:
    from glacierscale.inventory.change import ChangeResult

_YEAR = re.compile(r"\d{4}")
_WINDOW = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class Epoch:
    """One date of a multi-epoch run: a season year or a date window."""

    name: str
    year: int | None = None
    start: date | None = None
    end: date | None = None


def parse_epochs(text: str | Sequence[str]) -> list[Epoch]:
    """``"2016,2020,2024"`` or ``"2020-08-01..2020-09-30,2024-08-01..2024-09-30"`` (mixed too).

    Raises ``ValueError`` naming the bad entry and the accepted forms; epochs must be distinct
    and at least two, since a single date has nothing to be compared with.
    """
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    epochs: list[Epoch] = []
    for part in (p for p in parts if p):
        if _YEAR.fullmatch(part):
            epochs.append(Epoch(part, year=int(part)))
            continue
        window = _WINDOW.fullmatch(part)
        if window is None:
            raise ValueError(f"epoch {part!r}: give a year (2020) or a date window "
                             "(2020-08-01..2020-09-30), comma-separated")
        try:
            start, end = (date.fromisoformat(d) for d in window.groups())
        except ValueError as exc:
            raise ValueError(f"epoch {part!r}: {exc}") from None
        if start > end:
            raise ValueError(f"epoch {part!r}: the window starts after it ends")
        epochs.append(Epoch(f"{start:%Y%m%d}-{end:%Y%m%d}", start=start, end=end))
    names = [e.name for e in epochs]
    if len(epochs) < 2 or len(set(names)) != len(names):
        raise ValueError(f"epochs {','.join(parts)!r}: give two or more distinct epochs, "
                         "e.g. --epochs 2016,2020,2024")
    return epochs


def epoch_out(out: str, epoch: Epoch) -> str:
    """Where an epoch's run writes: ``<out>/epochs/<epoch>``."""
    return f"{out.rstrip('/')}/epochs/{epoch.name}"


def epoch_config(cfg: RunConfig, epoch: Epoch) -> RunConfig:
    """The run config of one epoch: ``cfg`` with the epoch's dates and output, nothing else."""
    return cfg.model_copy(update={"out": epoch_out(cfg.out, epoch), "year": epoch.year,
                                  "start": epoch.start, "end": epoch.end})


def change_out(out: str, a: Epoch, b: Epoch) -> str:
    """Where the comparison of two epochs goes: ``<out>/change/<a>_<b>``."""
    return f"{out.rstrip('/')}/change/{a.name}_{b.name}"


def compare_epochs(out: str, epochs: Sequence[Epoch]) -> list[ChangeResult]:
    """Compare each pair of consecutive epochs of a finished multi-epoch run under ``out``;
    the results are written to :func:`change_out`."""
    from glacierscale.inventory.change import compare

    return [compare(epoch_out(out, a), epoch_out(out, b), out=change_out(out, a, b))
            for a, b in itertools.pairwise(epochs)]

"""What training leaves next to the weights: metrics JSON, a Markdown table, curves and a
reliability diagram (PNG)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from glacierscale.core.metrics import Reliability

#: Columns of the evaluation table, in order, with their headers.
COLUMNS = (
    ("iou", "IoU"), ("f1", "F1"), ("precision", "precision"), ("recall", "recall"),
    ("ring_fp_fraction", "FP in ring"), ("boundary_distance_m", "boundary dist (m)"),
    ("ece", "ECE"), ("hard_recall", "recall where threshold fails"),
)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Mapping[str, Mapping[str, Any]], spreads: Mapping[str, Mapping[str, Any]],
                   ) -> str:
    """Methods as rows (pooled held-out metrics), plus the IoU across folds as mean ± std."""
    head = ["method", *[h for _, h in COLUMNS], "IoU per fold (mean ± std)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        s = spreads.get(name, {})
        spread = (f"{_fmt(s.get('mean'))} ± {_fmt(s.get('std'))}" if s else "–")
        cells = [name, *[_fmt(row.get(k)) for k, _ in COLUMNS], spread]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fold_table(per_fold: Mapping[str, Mapping[str, Mapping[str, float]]], k: int,
               metric: str = "iou") -> str:
    """Methods as rows, folds as columns, for one metric."""
    head = ["method", *[f"fold {f}" for f in range(k)]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, folds in per_fold.items():
        lines.append("| " + " | ".join([name, *[_fmt(folds.get(str(f), {}).get(metric))
                                                 for f in range(k)]]) + " |")
    return "\n".join(lines)


def json_bytes(doc: Any) -> bytes:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v
    return (json.dumps(clean(doc), indent=1) + "\n").encode()


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(histories: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Training loss (smoothed) and held-out loss and IoU per fold and seed."""
    plt = _figure()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for h in histories:
        label = f"fold {h.get('fold')} seed {h.get('seed')}"
        loss = np.asarray(h["train_loss"], dtype=float)
        win = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(win) / win, mode="valid")
        line, = ax1.plot(np.arange(win, len(loss) + 1), smooth, lw=1.0, label=label)
        val = h.get("val") or []
        if val:
            steps = [v["step"] for v in val]
            ax1.plot(steps, [v["loss"] for v in val], "o--", ms=3, color=line.get_color(), lw=0.8)
            ax2.plot(steps, [v["iou"] for v in val], "o-", ms=3, color=line.get_color(),
                     label=label)
    ax1.set_yscale("log")  # one early held-out spike must not flatten every other curve
    ax1.set(xlabel="step", ylabel="loss (BCE + Dice)",
            title="training (line) and held-out fold (dashed)")
    ax2.set(xlabel="step", ylabel="IoU on the held-out fold", ylim=(0, 1),
            title="held-out IoU (never used to steer training)")
    ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig)


def reliability_png(diagrams: Mapping[str, Reliability | None], title: str) -> bytes:
    """Reliability diagram: observed glacier frequency against mean predicted probability."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    for name, rel in diagrams.items():
        if rel is None:
            continue
        conf = np.asarray(rel.confidence, dtype=float)
        freq = np.asarray(rel.frequency, dtype=float)
        ok = np.isfinite(conf) & np.isfinite(freq)
        ax.plot(conf[ok], freq[ok], "o-", ms=4, label=f"{name} (ECE {rel.ece:.3f})")
    ax.set(xlabel="mean predicted glacier probability", ylabel="observed glacier frequency",
           xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(plt, fig)


def _save(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

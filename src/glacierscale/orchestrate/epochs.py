"""The multi-epoch form of the global flow: one subflow run per epoch, then the changes.

``global_inventory(..., epochs=["2016", "2020"])`` comes here: every epoch is the same flow with
the same parameters but its dates and its output (``<out>/epochs/<epoch>``), so each is resumable
on its own; consecutive epochs are then compared (:mod:`glacierscale.epochs`) and the comparison
is published as artifacts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from glacierscale.epochs import change_out, compare_epochs, epoch_out, parse_epochs
from glacierscale.orchestrate.artifacts import publish_change


def run_epochs(flow_fn: Callable[..., Any], params: dict[str, Any],
               epochs: Sequence[str]) -> dict[str, Any]:
    """Run ``flow_fn`` (the global flow) once per epoch as a subflow, then compare the epochs."""
    chosen = parse_epochs(list(epochs))
    out = str(params["out"])
    runs = {}
    for epoch in chosen:
        settings = {**(params.get("settings") or {}), "year": epoch.year}
        run_params = {**params, "out": epoch_out(out, epoch), "start": epoch.start,
                      "end": epoch.end, "settings": settings}
        named = flow_fn.with_options(flow_run_name=f"epoch {epoch.name}")  # type: ignore[attr-defined]
        runs[epoch.name] = named(**run_params)
    changes = {}
    for (a, b), result in zip(itertools.pairwise(chosen), compare_epochs(out, chosen),
                              strict=True):
        publish_change(result, f"glacierscale change {a.name} -> {b.name}")
        changes[f"{a.name}_{b.name}"] = {"out": change_out(out, a, b), **result.to_dict()}
    return {"out": out, "epochs": runs, "changes": changes}

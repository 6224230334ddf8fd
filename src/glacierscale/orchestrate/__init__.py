"""Prefect orchestration over Dask: the only Prefect-aware package.

- :mod:`~glacierscale.orchestrate.flows`: the ``global-inventory`` flow, its region subflows and
  tasks, and ``run(cfg)`` that the CLI calls;
- :mod:`~glacierscale.orchestrate.batches`: plain helpers of the flows (batches of tiles, regions,
  tile functions, Dask clients), no Prefect;
- :mod:`~glacierscale.orchestrate.artifacts`: what the Prefect UI shows of a run.

The names below are imported on first use: a Dask worker unpickles the tile function
(:func:`~glacierscale.orchestrate.batches.run_tile`) through this package, and importing
Prefect there would cost every worker ~1 s and ~40 MB for nothing (workers never talk to it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glacierscale.orchestrate.api import prefect_api
    from glacierscale.orchestrate.batches import (
        Batch,
        config_from_parameters,
        dask_client,
        group_by_region,
        make_batches,
        plan_regions,
        resolve_tile_fn,
        run_tile,
    )
    from glacierscale.orchestrate.flows import (
        global_inventory,
        process_batch,
        region_inventory,
        run,
    )

_HOME = {
    "prefect_api": "api",
    **dict.fromkeys(("Batch", "config_from_parameters", "dask_client", "group_by_region",
                     "make_batches", "plan_regions", "resolve_tile_fn", "run_tile"), "batches"),
    **dict.fromkeys(("global_inventory", "process_batch", "region_inventory", "run"), "flows"),
}

__all__ = [
    "Batch",
    "config_from_parameters",
    "dask_client",
    "global_inventory",
    "group_by_region",
    "make_batches",
    "plan_regions",
    "prefect_api",
    "process_batch",
    "region_inventory",
    "resolve_tile_fn",
    "run",
    "run_tile",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

"""Prefect orchestration over Dask: the only Prefect-aware package.

- :mod:`~glacierscale.orchestrate.flows`: the ``global-inventory`` flow, its region subflows and
  tasks, and ``run(cfg)`` that the CLI calls;
- :mod:`~glacierscale.orchestrate.batches`: plain helpers of the flows (batches of tiles, regions,
  tile functions, Dask clients), no Prefect;
- :mod:`~glacierscale.orchestrate.artifacts`: what the Prefect UI shows of a run.
"""

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

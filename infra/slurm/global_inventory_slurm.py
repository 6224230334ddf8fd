"""Run the global inventory on a SLURM cluster (dask-jobqueue), from a login node.

    python infra/slurm/global_inventory_slurm.py --outlines /scratch/rgi/RGI2000-v7.0-G-global.zip \
        --out /scratch/glacierscale/global --jobs 16 --gpus-per-job 1 --queue gpu --account glaciers

Each SLURM job runs one Dask worker (``--gres=gpu:N`` when GPUs are asked for, advertising the
``GPU`` resource so model-bound tiles land there). The Prefect flow runs in this process and reports
to ``PREFECT_API_URL`` if set (a temporary local API otherwise). ``jobqueue.yaml`` beside this file
shows the same settings as Dask configuration, for sites that prefer ``~/.config/dask/``.
"""

from __future__ import annotations

import argparse

from glacierscale.cluster import ClusterSpec
from glacierscale.config import RunConfig
from glacierscale.orchestrate import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outlines", required=True, help="RGI outlines (path or URL)")
    p.add_argument("--out", required=True, help="output URL (shared filesystem or s3://)")
    p.add_argument("--catalog", default="earth-search")
    p.add_argument("--model", default="band-ratio")
    p.add_argument("--jobs", type=int, default=8, help="SLURM jobs = Dask workers")
    p.add_argument("--gpus-per-job", type=int, default=0)
    p.add_argument("--cores", type=int, default=8)
    p.add_argument("--memory", default="32GB")
    p.add_argument("--walltime", default="04:00:00")
    p.add_argument("--queue", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--tiles-per-task", type=int, default=100)
    args = p.parse_args()
    cfg = RunConfig(aoi=args.outlines, catalog=args.catalog, out=args.out, model=args.model,
                    tiles_per_task=args.tiles_per_task)
    spec = ClusterSpec(kind="slurm", n_workers=args.jobs, worker_gpus=args.gpus_per_job,
                       cores=args.cores, memory=args.memory, walltime=args.walltime,
                       queue=args.queue, account=args.account, threads_per_worker=args.cores)
    summary = run(cfg, cluster=spec)
    print(summary.counts(), f"{summary.glaciers} glaciers, {summary.glacier_km2:.1f} km²")


if __name__ == "__main__":
    main()

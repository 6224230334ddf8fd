"""The ``glacierscale`` command line: grid, catalog, run, demo, merge, evaluate, train."""

from __future__ import annotations

import logging
import os

import typer

from glacierscale.cli import catalog as _catalog
from glacierscale.cli import grid as _grid
from glacierscale.cli import merge as _merge
from glacierscale.cli import run as _run
from glacierscale.cli import train as _train

app = typer.Typer(
    name="glacierscale",
    help="Map glacier outlines from satellite imagery, one valley or the whole world.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

for _module in (_run, _grid, _catalog, _merge, _train):
    _module.register(app)


def main() -> None:
    """Console entry point."""
    level = os.environ.get("GLACIERSCALE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # Every HTTP request and Dask comm at INFO would drown what glacierscale says.
        for noisy in ("httpx", "distributed", "botocore", "urllib3", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    app()

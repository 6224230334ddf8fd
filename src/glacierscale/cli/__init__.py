"""The ``glacierscale`` command line: grid, catalog, run, demo, merge, evaluate, change, train.

``glacierscale --debug COMMAND`` (or ``COMMAND --debug`` for run and demo) shows tracebacks and
debug logs; without it an error is one or two lines naming the culprit and the fix. Exit codes of
run and demo: 0 done, 1 some tiles failed, 2 an input error, 3 stopped part-way (see
:mod:`glacierscale.cli.run`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from glacierscale.cli import catalog as _catalog
from glacierscale.cli import change as _change
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


@app.callback()
def _root(debug: Annotated[bool, typer.Option(
        "--debug", help="show tracebacks and debug logs (any command)")] = False) -> None:
    """Map glacier outlines from satellite imagery, one valley or the whole world."""
    _run.setup_logging(debug)


for _module in (_run, _grid, _catalog, _merge, _train, _change):
    _module.register(app)


def main() -> None:
    """Console entry point."""
    app()

"""``glacierscale run``, ``demo`` and ``evaluate``: the general form and its laptop preset.

Exit codes (the README lists them):

- 0: every tile done, skipped or no-data (a run where no tile had data says so in one line);
- 1: the run finished but some tiles failed: every output that could be written is written, and
  the failures are printed grouped by cause, one line per tile (tile, asset, cause);
- 2: a user error caught before anything started (the preflight, or an option typer refuses):
  one or two lines naming the culprit and the fix, no traceback (``--debug`` shows it);
- 3: the run stopped part-way for a reason that is not the input's (a crash, a lost cluster):
  one line, the traceback with ``--debug``; finished tiles are kept and a rerun resumes;
- 130: interrupted (Ctrl-C); finished tiles are kept.

Nothing printed here, logged or written leaves the process unredacted
(:mod:`glacierscale.core.redact`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from glacierscale.config import RunConfig, cache_dir, sample_data_dir
from glacierscale.core.redact import ConsoleFormatter, install_log_redaction, redact

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_TILES_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_STOPPED = 3
EXIT_INTERRUPTED = 130

#: ``run`` options that fill a nested section of RunConfig rather than a top-level field.
_GRID_OPTIONS = ("tile_size_px", "resolution", "halo_px")
_INFER_OPTIONS = ("window_px", "overlap", "batch_size", "device")
#: ``run`` options that steer the command, not the run.
_COMMAND_OPTIONS = ("config", "debug", "epochs")
#: Failed tiles listed per cause on the console (the manifest and report.md list them all).
_TILES_PER_CAUSE = 5

_console: logging.Handler | None = None
_debug = False


# --------------------------------------------------------------------------- logging


def setup_logging(debug: bool = False) -> None:
    """Console logging of the CLI: redacted, one line per record, tracebacks only with --debug.

    The level comes from ``GLACIERSCALE_LOG_LEVEL`` (default INFO), DEBUG with ``--debug``.
    Called again (another command, another CliRunner invocation) it replaces its own handler,
    which writes to the ``sys.stderr`` of the moment.
    """
    global _console, _debug
    install_log_redaction()
    _debug = debug or os.environ.get("GLACIERSCALE_DEBUG", "") not in ("", "0")
    level = logging.DEBUG if _debug else getattr(
        logging, os.environ.get("GLACIERSCALE_LOG_LEVEL", "INFO").upper(), logging.INFO)
    root = logging.getLogger()
    if _console is not None:
        root.removeHandler(_console)
    _console = logging.StreamHandler(sys.stderr)
    _console.setFormatter(ConsoleFormatter(_debug))
    _console.setLevel(level)
    root.addHandler(_console)
    # Python warnings would go straight to stderr, past the redaction: make them log records.
    logging.captureWarnings(True)
    # Libraries speak at WARNING and above (every HTTP request and Dask comm at INFO would drown
    # what glacierscale says); glacierscale at the chosen level.
    root.setLevel(level if _debug else max(level, logging.WARNING))
    logging.getLogger("glacierscale").setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Libraries that set their own logger level on import (Dask, Prefect) back to WARNING."""
    for noisy in ("distributed", "prefect", "httpx", "botocore", "aiobotocore", "urllib3",
                  "asyncio", "fsspec", "s3fs"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if _debug else logging.WARNING)
    # Stopping the local cluster kills slow workers on purpose: nothing for a user to act on.
    logging.getLogger("distributed.nanny").setLevel(logging.DEBUG if _debug else logging.ERROR)


def _asked_debug(ctx: typer.Context, debug: bool) -> bool:
    """``--debug`` given to the command or before it (``glacierscale --debug run ...``)."""
    return debug or bool(ctx.find_root().params.get("debug"))


# --------------------------------------------------------------------------- progress


class TileProgress:
    """A progress bar over a run's tiles: done / no-data / failed, km² mapped, ETA (rich)."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.task = progress.add_task("tiles", total=None, done=0, nodata=0, failed=0, km2=0.0)
        self.counts = {"done": 0, "skipped": 0, "no-data": 0, "failed": 0}
        self.km2 = 0.0

    def planned(self, n_tiles: int) -> None:
        self.progress.update(self.task, total=n_tiles)

    def tile_done(self, result: Any) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        self.km2 += float(result.glacier_km2 or 0.0)
        c = self.counts
        self.progress.update(self.task, advance=1, done=c["done"] + c["skipped"],
                             nodata=c["no-data"], failed=c["failed"], km2=self.km2)


def make_progress(console: Any) -> Any:
    """The rich Progress a run shows on ``console``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]tiles"), BarColumn(), MofNCompleteColumn(),
        TextColumn("done {task.fields[done]} · no-data {task.fields[nodata]} · "
                   "failed {task.fields[failed]} · {task.fields[km2]:.1f} km²"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False)


@contextmanager
def progress_bar(enabled: bool | None = None) -> Iterator[TileProgress | None]:
    """A progress bar on stderr when it is a terminal (else nothing: logs and pipes stay clean).

    While it shows, log lines are printed above it instead of through it.
    """
    if enabled is None:
        enabled = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    if not enabled:
        yield None
        return
    from rich.console import Console

    progress = make_progress(Console(stderr=True))
    with progress:
        handler = _console
        previous = None
        if isinstance(handler, logging.StreamHandler):
            previous = handler.setStream(sys.stderr)  # rich's proxy while the bar is live
        try:
            yield TileProgress(progress)
        finally:
            if isinstance(handler, logging.StreamHandler) and previous is not None:
                handler.setStream(previous)


# --------------------------------------------------------------------------- results


def _summary_text(summary: Any) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts().items()))
    inventory = f"inventory: {summary.glaciers} polygons, {summary.glacier_km2:.2f} km²"
    if getattr(summary, "other_tiles", 0):
        inventory += (f" (this run's tiles only; {summary.other_tiles} tile(s) of other runs in "
                      "this output left out, `glacierscale merge` merges all)")
    lines = [f"tiles -> {counts}", inventory,
             f"outputs: {summary.out} (report.md, manifest.json, inventory/glaciers.parquet)"]
    if summary.evaluation:
        ev = summary.evaluation
        lines.append("evaluation: " + ", ".join(f"{k}={v:.3f}" for k, v in ev.items()))
    return redact("\n".join(lines))


def failures_text(records: list[dict[str, Any]], out: str) -> str:
    """Failed tiles grouped by cause: one header per cause, one line per tile (tile  asset)."""
    from glacierscale.report import failure_groups

    groups = failure_groups(records)
    n = sum(len(g.tiles) for g in groups)
    lines = [f"{n} tile(s) failed, by cause (all reasons: {out}/manifest.json):"]
    for g in groups:
        lines.append(f"  {len(g.tiles)} x {g.cause}")
        for tile, asset in g.tiles[:_TILES_PER_CAUSE]:
            lines.append(f"      {tile}  {asset}".rstrip())
        if len(g.tiles) > _TILES_PER_CAUSE:
            lines.append(f"      ... and {len(g.tiles) - _TILES_PER_CAUSE} more")
    return redact("\n".join(lines))


def _no_data_line(records: list[dict[str, Any]]) -> str:
    example = next((r["reason"] for r in records if r.get("reason")), "")
    return redact(f"no tile had usable data ({len(records)} tile(s) no-data, e.g. {example!r}); "
                  "check --start/--end, --collections and the cloud cover limit")


def report_exit_code(summary: Any) -> int:
    """Print the outcome of a finished run and return its exit code (0 or 1)."""
    typer.echo(_summary_text(summary))
    counts = summary.counts()
    if counts.get("failed", 0):
        typer.echo(failures_text(summary.manifest, summary.out), err=True)
        return EXIT_TILES_FAILED
    if summary.manifest and counts.get("no-data", 0) == len(summary.manifest):
        typer.echo(_no_data_line(summary.manifest), err=True)
    return EXIT_OK


def _user_error(message: str, exc: BaseException | None = None) -> typer.Exit:
    if exc is not None and _debug:
        log.debug("traceback of the error below", exc_info=exc)
    typer.echo(f"error: {redact(message)}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


def _execute(load: Callable[[], RunConfig], epochs: str | None = None) -> None:
    """Load and check the config, run (each epoch in turn), print the outcome, exit with the
    code it deserves (the worst of the epochs')."""
    from glacierscale.cli.change import echo_change
    from glacierscale.epochs import change_out, compare_epochs, epoch_config, parse_epochs
    from glacierscale.preflight import PreflightError

    if not epochs:
        raise typer.Exit(_execute_one(load))
    try:
        chosen = parse_epochs(epochs)
    except ValueError as exc:
        raise _user_error(f"--epochs: {exc}", exc) from None
    try:
        base = load()
    except PreflightError as exc:
        raise _user_error(exc.message, exc) from None
    codes = []
    for epoch in chosen:
        typer.echo(f"epoch {epoch.name}:", err=True)
        codes.append(_execute_one(lambda e=epoch: epoch_config(base, e)))  # type: ignore[misc]
    try:
        results = compare_epochs(base.out, chosen)
    except Exception as exc:
        if _debug:
            raise
        raise _user_error(f"comparing the epochs: {exc}", exc) from None
    for (a, b), res in zip(itertools.pairwise(chosen), results, strict=True):
        typer.echo(f"change {a.name} -> {b.name}:")
        echo_change(res, change_out(base.out, a, b))
    raise typer.Exit(max(codes))


def _execute_one(load: Callable[[], RunConfig]) -> int:
    """One run: preflight, the flow, the outcome on the console; returns the exit code."""
    from glacierscale.preflight import PreflightError, preflight

    t0 = time.perf_counter()
    try:
        # The preflight imports the heavy layers (GDAL, torch) only as its checks reach them,
        # so a mistyped option is reported at once. The model it loads is not kept: tiles load
        # theirs on the workers.
        checked = preflight(load())
    except PreflightError as exc:
        raise _user_error(exc.message, exc) from None
    log.debug("preflight passed in %.2f s: %s", time.perf_counter() - t0, dict(checked.seconds))
    for note in checked.notes:
        typer.echo(f"note: {redact(note)}", err=True)
    from glacierscale.orchestrate.api import launch_temporary_api

    launch_temporary_api()  # comes up while the flows are imported (none with PREFECT_API_URL)
    from glacierscale.orchestrate.flows import run as run_flow

    quiet_libraries()  # importing Dask and Prefect has just set their loggers to INFO

    try:
        with progress_bar() as listener:
            summary = run_flow(checked.cfg, checked=checked, progress=listener)
    except PreflightError as exc:
        raise _user_error(exc.message, exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished tiles are kept; rerun the same command to resume",
                   err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if _debug:
            raise
        text = " ".join(str(exc).split())[:300]
        typer.echo(redact(f"error: the run stopped: {type(exc).__name__}: {text}; finished "
                          "tiles are kept and a rerun resumes (--debug shows the traceback)"),
                   err=True)
        raise typer.Exit(EXIT_STOPPED) from None
    return report_exit_code(summary)


# --------------------------------------------------------------------------- options -> config


def _given_options(ctx: typer.Context) -> dict[str, Any]:
    """The options the user actually typed, by name.

    Options left at their default stay out of the config, so they neither override a ``--config``
    YAML file nor count as a choice: an untyped ``--resolution`` lets the model card decide.
    """
    # Compared by name: typer ships its own copy of click, whose ParameterSource is not click's.
    defaults = ("DEFAULT", "DEFAULT_MAP")
    return {name: value for name, value in ctx.params.items()
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in defaults}


def _run_config(given: dict[str, Any], config: Path | None) -> RunConfig:
    """RunConfig from the typed options and an optional YAML file (typed options win).

    Defaults come from RunConfig itself, so the CLI and YAML/Python users share one set; any
    problem is a :class:`~glacierscale.preflight.PreflightError` naming the option or the
    file, line and column.
    """
    from glacierscale.preflight import load_config

    fields = {k: v for k, v in given.items()
              if k not in (*_GRID_OPTIONS, *_INFER_OPTIONS, *_COMMAND_OPTIONS)}
    if not fields.get("collections"):
        fields.pop("collections", None)  # "" means every collection of the catalog
    for section, names in (("grid", _GRID_OPTIONS), ("infer", _INFER_OPTIONS)):
        values = {k: given[k] for k in names if k in given}
        if values:
            fields[section] = values
    return load_config(fields, config)


def register(app: typer.Typer) -> None:
    """Add run, demo and evaluate to the CLI."""

    @app.command()
    def run(
        ctx: typer.Context,
        # aoi, catalog and out may come from --config instead; the preflight names a missing one
        aoi: Annotated[str | None, typer.Option(
            help="W,S,E,N in degrees, or a path/URL of outlines")] = None,
        catalog: Annotated[str | None, typer.Option(
            help="STAC API URL, folder of items, or ndjson")] = None,
        out: Annotated[str | None, typer.Option(
            help="output URL (local path, s3://, gs://, ...)")] = None,
        start: Annotated[str | None, typer.Option(help="first date, YYYY-MM-DD")] = None,
        end: Annotated[str | None, typer.Option(help="last date, YYYY-MM-DD")] = None,
        model: Annotated[str, typer.Option(help="model name or card path/URL")] = "band-ratio",
        workers: Annotated[int, typer.Option(help="local Dask worker processes")] = 2,
        scheduler: Annotated[str | None, typer.Option(help="existing Dask scheduler")] = None,
        collections: Annotated[str, typer.Option(help="comma-separated collection ids")] = "",
        reference: Annotated[str | None, typer.Option(help="outlines to evaluate against")] = None,
        config: Annotated[Path | None, typer.Option(help="YAML with any RunConfig field")] = None,
        resolution: Annotated[float | None, typer.Option(
            help="pixel size (m); default: the model card's resolution_m, else 10")] = None,
        tile_size_px: Annotated[int, typer.Option(help="tile core size (px)")] = 1024,
        halo_px: Annotated[int, typer.Option(help="context halo (px)")] = 64,
        window_px: Annotated[int, typer.Option(help="inference window (px)")] = 512,
        overlap: Annotated[float, typer.Option(help="window overlap fraction")] = 0.5,
        batch_size: Annotated[int, typer.Option(help="windows per batch")] = 8,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
        debug: Annotated[bool, typer.Option(help="show tracebacks and debug logs")] = False,
        epochs: Annotated[str | None, typer.Option(
            help="map several dates with the same settings and compare them: years "
                 "(2016,2020,2024) or windows (2020-08-01..2020-09-30,...); each goes to "
                 "OUT/epochs/<epoch>, the changes to OUT/change/<a>_<b>")] = None,
    ) -> None:
        """Map glaciers over an area: plan tiles, process them on Dask, merge the inventory.

        Exit codes: 0 all tiles done / skipped / no-data, 1 some tiles failed, 2 an input error
        (named with its fix), 3 the run stopped part-way.
        """
        # The parameters above define the options; their values are read back from ctx, which
        # also knows which ones were typed (see _given_options).
        setup_logging(_asked_debug(ctx, debug))
        given = _given_options(ctx)
        _execute(lambda: _run_config(given, config), epochs)

    @app.command()
    def demo(
        ctx: typer.Context,
        out: Annotated[str, typer.Option(help="output URL")] = "glacierscale-demo",
        model: Annotated[str, typer.Option(help="model name or card path/URL")] = "band-ratio",
        workers: Annotated[int, typer.Option(help="local Dask worker processes")] = 2,
        debug: Annotated[bool, typer.Option(help="show tracebacks and debug logs")] = False,
    ) -> None:
        """Map the Athabasca Glacier sample end to end on this machine (no server needed)."""
        from glacierscale.demo import athabasca_sample

        setup_logging(_asked_debug(ctx, debug))
        sample = athabasca_sample(sample_data_dir(), cache_dir())
        where = "local sample catalog" if sample.offline else "public Earth Search STAC API"
        typer.echo(f"Athabasca Glacier demo: {where} {sample.catalog}")
        bbox = ",".join(f"{v:g}" for v in sample.bbox)
        _execute(lambda: RunConfig(
            aoi=bbox, catalog=sample.catalog, start=sample.start, end=sample.end,
            collections=sample.collections, reference=sample.reference, model=model, out=out,
            workers=workers))

    @app.command()
    def evaluate(
        inventory: Annotated[str, typer.Option(help="inventory GeoParquet (or a run's --out)")],
        reference: Annotated[str, typer.Option(help="reference outlines")],
        aoi: Annotated[str | None, typer.Option(help="valid area: W,S,E,N or a polygon file; "
                                                "default: the run's valid-data footprint")] = None,
        resolution: Annotated[float, typer.Option(help="evaluation pixel size (m)")] = 10.0,
    ) -> None:
        """IoU, precision and recall of an inventory against reference outlines."""
        from glacierscale.report import evaluate_inventory

        metrics = evaluate_inventory(inventory, reference, aoi=aoi, resolution=resolution)
        typer.echo(json.dumps({k: round(v, 4) for k, v in metrics.items()}))

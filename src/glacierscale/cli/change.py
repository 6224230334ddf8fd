"""``glacierscale change A B``: per-glacier area change between two runs or two epochs of a run.

The work is :func:`glacierscale.inventory.change.compare`; this module parses options and turns
a refusal (outputs that cannot be compared) into a message and exit code 2, without a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from glacierscale.core.redact import redact_url

#: Exit code of a refused comparison (as click uses for usage errors).
EXIT_REFUSED = 2


def default_out(a: str, b: str) -> str | None:
    """``RUN/change/<a>_<b>`` for two epochs ``RUN/epochs/<a>`` and ``RUN/epochs/<b>``, else None.

    Two separate runs have no natural home for their comparison: the caller must name one.
    """
    pa, pb = a.rstrip("/").rsplit("/", 2), b.rstrip("/").rsplit("/", 2)
    if len(pa) == 3 and len(pb) == 3 and pa[:2] == pb[:2] and pa[1] == "epochs":
        return f"{pa[0]}/change/{pa[2]}_{pb[2]}"
    return None


def register(app: typer.Typer) -> None:
    """Add ``change`` to the CLI."""

    @app.command()
    def change(
        a: Annotated[str, typer.Argument(help="first run output (or RUN/epochs/<epoch>)")],
        b: Annotated[str, typer.Argument(help="second run output (or RUN/epochs/<epoch>)")],
        out: Annotated[str | None, typer.Option(
            help="where to write the results (default for two epochs of one run: "
                 "RUN/change/<a>_<b>)")] = None,
        outlines: Annotated[str | None, typer.Option(
            help="glacier outlines (RGI) that define the glaciers (default: the reference "
                 "the run recorded)")] = None,
        min_seen: Annotated[float, typer.Option(
            help="share of an outline both epochs must have seen for the glacier to be "
                 "compared; below it the glacier is flagged", min=0.0, max=1.0)] = 0.9,
    ) -> None:
        """Area change per glacier and per RGI region between two dates, with uncertainty."""
        from glacierscale.inventory.change import compare
        from glacierscale.inventory.change_epoch import ChangeRefusedError

        target = out or default_out(a, b)
        if target is None:
            typer.echo("error: give --out for the results (two separate runs have no common "
                       "folder)", err=True)
            raise typer.Exit(EXIT_REFUSED)
        try:
            result = compare(a, b, outlines=outlines, out=target, min_seen=min_seen)
        except (ChangeRefusedError, FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_REFUSED) from exc
        echo_change(result, target)


def echo_change(result: Any, target: str) -> None:
    """Print a comparison: each epoch's date and sensors, then one line per RGI region."""
    for e in result.epochs:
        typer.echo(f"{e['name']}: {e['date']}, sensors {', '.join(e['sensors'])}")
    for _, r in result.regions.iterrows():
        typer.echo(f"region {r['region']}: {r['glaciers']} glaciers ({r['flagged']} "
                   f"flagged), {r['area_a_km2']:.3f} -> {r['area_b_km2']:.3f} km², change "
                   f"{r['change_km2']:+.3f} ± {r['change_unc_km2']:.3f} km² "
                   f"({r['change_pct']:+.2f} ± {r['change_pct_unc']:.2f} %)")
    typer.echo(f"wrote {len(result.written)} files under {redact_url(target)}")

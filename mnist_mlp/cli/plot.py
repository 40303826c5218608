"""``mlp plot``: a run's curves and weights, or several runs compared."""

from __future__ import annotations

from pathlib import Path

import click

from .common import CONTEXT, fail, picture_path


@click.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--curves", type=click.Path(dir_okay=False, path_type=Path),
              callback=picture_path("figure"), metavar="FILE.png",
              help="Where the curves go. Default: NAME.curves.png beside a single run; "
                   "runs.curves.png here for several.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              callback=picture_path("figure"), metavar="FILE.png",
              help="Where a single checkpoint's first-layer weights go. Default: "
                   "NAME.weights.png beside it.")
def plot(runs: tuple[Path, ...], curves: Path | None, weights: Path | None) -> None:
    """Draw runs: their training curves, and a checkpoint's first-layer weights.

    Each RUN is a checkpoint (its NAME.metrics.jsonl beside it) or a metrics
    log. Several runs: their validation curves overlaid, one legend entry each.
    """
    from .. import plots

    try:
        pictures = plots.draw_runs(list(runs), curves, weights,
                                   note=lambda line: click.echo(line, err=True))
    except plots.PlotError as exc:
        raise fail(exc) from None
    for kind, path in pictures:
        click.echo(f"{kind}: {path}")

"""`mlp sweep`: a hyperparameter search whose trials are `mlp train` runs (an Optuna study).

Exit codes as the rest of `mlp`: 0 done; 1 a failed sweep (storage, a trial that cannot
run, Optuna missing); 2 a bad option or space file; 130 / 143 stopped by SIGINT / SIGTERM
with the running trial saved, to resume when the sweep continues.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from ..dataset import DataSource
from ..sweep import HEARTBEAT_S, PRUNERS
from .common import CONTEXT, data_options, fail


@click.command("sweep", context_settings=CONTEXT)
@click.argument("space", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trials", type=click.IntRange(0, 1_000_000), required=True,
              help="Trials the study should have, counting every worker's and earlier "
                   "runs' (finished or pruned); 0 only reports.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="The sweep's folder: each trial's run, best.toml, "
                                  "sweep.png, and study.db without --storage.")
@click.option("--storage", metavar="URL",
              help="postgresql://user:password@host/db: one study for workers on many "
                   "machines. Default: DIR/study.db, for the workers of this machine.")
@click.option("--study", metavar="NAME", help="The study's name. Default: DIR's name.")
@click.option("--pruner", type=click.Choice(PRUNERS), default="median",
              help="Stops trials whose validation accuracy lags the others' at the same "
                   "epoch.")
@click.option("--threads", type=click.IntRange(1, 4096),
              help="BLAS threads per trial. Default: the cores shared among this sweep's "
                   "workers training on this machine, counted before every epoch.")
@click.option("--heartbeat", type=click.IntRange(1, 3600), default=HEARTBEAT_S, hidden=True,
              help="Seconds between a running trial's heartbeats (tests use 1).")
@click.option("--no-plots", is_flag=True,
              help="Draw no pictures: neither each trial's curves nor sweep.png.")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No line per trial on stderr.")
@click.pass_context
def sweep(ctx: click.Context, space: Path, trials: int, out_dir: Path, storage: str | None,
          study: str | None, pruner: str, threads: int | None, heartbeat: int, no_plots: bool,
          source: DataSource, as_json: bool, quiet: bool) -> None:
    """Search SPACE (a TOML file: a base config, [fixed] and [search] settings) with
    --trials runs of `mlp train` in --out, selecting on validation accuracy.

    Start the same command in several terminals (or on several machines, with
    --storage) to run trials in parallel; run it again to continue the study.
    """
    from .. import run
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..mnist import DataError
    from ..runfiles import RunError
    from ..sweep import SpaceError, SweepError, SweepSpec, format_table, load_space, run_sweep

    # Signals stop a trial resumably while it trains and the sweep at once elsewhere (reading
    # the space, writing the results: nothing to save); once it has ended, all is saved and
    # only exiting is left: signals are ignored.
    with run.held_signals(then=signal.SIG_IGN) as signals:
        try:
            spec = SweepSpec(load_space(space), out_dir, trials, storage=storage, study=study,
                             pruner=pruner, threads=threads, data=source, plots=not no_plots,
                             heartbeat_s=heartbeat)
            result = run_sweep(spec, lambda line: quiet or click.echo(line, err=True), signals)
        except KeyboardInterrupt:
            click.echo("SIGINT: stopped outside a trial; nothing to save", err=True)
            ctx.exit(128 + signal.SIGINT)
        except SpaceError as exc:
            raise click.UsageError(str(exc)) from None
        except (SweepError, RunError, CheckpointError, DataError, ConfigError) as exc:
            raise fail(exc) from None
    report = result.report
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(format_table(report))
        if report.best is not None:
            picture = "" if no_plots else f"; picture: {out_dir / 'sweep.png'}"
            click.echo(f"best: trial {report.best.number}, {report.best.checkpoint}; its "
                       f"config: {out_dir / 'best.toml'}{picture}")
    if result.signum is not None:
        name = signal.Signals(result.signum).name
        saved = (f"; trial {result.interrupted} is saved and resumes when the sweep "
                 "continues (the same command)" if result.interrupted is not None else "")
        click.echo(f"{name}: stopped{saved}", err=True)
        ctx.exit(128 + result.signum)

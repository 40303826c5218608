"""``mlp train``: one option per setting, a progress display, the run's summary."""

from __future__ import annotations

import dataclasses
import json
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..config import DEFAULT_OUT, FIELDS, ConfigError, check_value, is_list, item_type
from ..dataset import DataSource
from ..train import Callback
from .common import CONTEXT, data_options, fail, threads_flag


def _setting_option(name: str) -> Callable:
    """The ``mlp train`` option of one TrainConfig field: its help, bounds and choices."""
    fld = FIELDS[name]
    meta, kind = fld.metadata, item_type(name)
    kwargs: dict[str, Any] = {"help": meta["help"], "default": fld.default}
    if is_list(name):
        def parse(ctx, param, value):
            if isinstance(value, tuple):
                return value
            try:
                items = tuple(kind(v) for v in str(value).split(","))
                check_value(name, items)
            except ValueError as exc:
                raise click.BadParameter(str(exc) if isinstance(exc, ConfigError) else
                                         f"{value!r} is not a comma list of {kind.__name__}s, "
                                         f"e.g. {','.join(map(str, fld.default * 2))}") from None
            return items
        kwargs.update(default=",".join(map(str, fld.default)), callback=parse,
                      metavar=f"{kind.__name__.upper()}[,...]")
    elif meta["choices"]:
        kwargs["type"] = click.Choice(meta["choices"])
    elif meta["bounds"]:
        b = meta["bounds"]
        make = click.IntRange if kind is int else click.FloatRange
        extra = {} if kind is int else {"min_open": b.low_open, "max_open": b.high_open}
        kwargs["type"] = make(b.low, b.high, **extra)
    else:
        kwargs["type"] = kind
    return click.option("--" + name.replace("_", "-"), name, **kwargs)


def _config_options(f: Callable) -> Callable:
    """One option per TrainConfig field."""
    for name in reversed(FIELDS):
        f = _setting_option(name)(f)
    return f


class ProgressDisplay(Callback):
    """A tqdm bar per epoch and one summary line per epoch, on stderr (off with --quiet);
    the bar is closed however the run ends."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.running = quiet, None, None

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        from tqdm import tqdm

        self.bar = tqdm(total=n_samples, initial=done,
                        desc=f"epoch {epoch}/{trainer.cfg.epochs}", unit="img",
                        unit_scale=True, leave=False, file=sys.stderr,
                        disable=self.quiet or None, mininterval=0.5)
        self.running = None

    def on_batch_end(self, trainer, n, loss):
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        self.bar.set_postfix(loss=f"{self.running:.4f}", refresh=False)
        self.bar.update(n)

    def on_epoch_end(self, trainer, row, kept):
        self._close()
        if self.quiet:
            return
        val = ("" if row["val_loss"] is None else
               f"  val loss {row['val_loss']:.4f}  val acc {100 * row['val_accuracy']:.2f}%")
        if row.get("ema_val_accuracy") is not None:
            val += f" (averaged {100 * row['ema_val_accuracy']:.2f}%)"
        click.echo(f"epoch {row['epoch']:>3}/{trainer.cfg.epochs}  train loss "
                   f"{row['train_loss']:.4f}{val}{' *' if kept else '  '}  "
                   f"{row['train_seconds']:.1f}s  lr {row['lr']:.4g}", err=True)

    def on_train_end(self, trainer, ending):
        self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def resume_command(out: Path, source: DataSource) -> str:
    """The shell command that continues the run at ``out`` on the same data, quoted."""
    words = ["mlp", "train", "--resume", "--out", str(out), "--data-dir", str(source.folder)]
    if source.mirrors != source.dataset.mirrors:
        for mirror in source.mirrors:
            words += ["--mirror", mirror]
    return shlex.join(words)


@click.command(context_settings=CONTEXT)
@click.option("--config", "config_name", metavar="FILE|NAME",
              help="A TOML preset: a path, or a name (./configs/NAME.toml, else a built-in "
                   "preset; a wrong name lists them).")
@_config_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              help="The kept epoch's model; NAME.last.npz, NAME.metrics.jsonl and "
                   "NAME.curves.png go beside it.")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL.npz",
              help="Start from this trained network's weights (its hidden sizes unless "
                   "--hidden is given); everything else as usual.")
@click.option("--extra", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="Users' labelled images (DIR/<class>/*.png) mixed into "
                                  "every epoch as --extra-share of it; repeatable.")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --out's .last.npz, bit for bit.")
@click.option("--overwrite", is_flag=True, help="Replace a run already saved at --out.")
@click.option("--no-plots", is_flag=True, help="Do not redraw NAME.curves.png each epoch.")
@threads_flag
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.pass_context
def train(ctx: click.Context, config_name: str | None, out: Path, init: Path | None,
          extra: tuple[Path, ...], resume: bool, overwrite: bool, no_plots: bool,
          threads: int | None, source: DataSource, quiet: bool, as_json: bool,
          **settings: Any) -> None:
    """Train an MLP on MNIST and save checkpoints.

    Settings come from the built-in defaults (the preset "default"), then the
    --config file, then the flags given. --resume takes the saved run's
    settings; only --epochs and --patience may change.
    """
    from .. import run

    flags = {k: v for k, v in settings.items()
             if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    start = run.Start("resume" if resume else "overwrite" if overwrite else "new", init)
    hooks = run.Hooks(progress=not quiet, plots=not no_plots,
                      callbacks=[ProgressDisplay(quiet)],
                      note=lambda line: quiet or click.echo(line, err=True))
    # Until training starts a signal interrupts (nothing to save yet); then the run stops
    # and saves, and a later signal (a second Ctrl-C as it ends) is ignored.
    try:
        spec = _spec(out, config_name, flags, dataclasses.replace(source, extra=extra), start)
        result = _run(dataclasses.replace(spec, threads=threads), hooks)
    except KeyboardInterrupt:
        click.echo("SIGINT: stopped before training started; nothing to save", err=True)
        ctx.exit(128 + signal.SIGINT)
    state, files = result.trainer.state, result.files
    if result.ending == "stopped":
        click.echo(f"{signal.Signals(result.signum).name}: stopped at epoch {state.epoch + 1}, "
                   f"batch {state.batch}; saved {files.last}. Resume with: "
                   f"{resume_command(out, source)}", err=True)
        ctx.exit(128 + result.signum)
    if as_json:
        click.echo(json.dumps({"config": result.trainer.cfg.to_dict(), "epochs": state.history,
                               "kept_epoch": state.kept_epoch,
                               "kept_val_accuracy": _score(state.kept_val_accuracy),
                               "checkpoint": str(out),
                               "curves": None if no_plots else str(files.curves)}))
        return
    kept = (f"kept epoch {state.kept_epoch}: val accuracy {100 * state.kept_val_accuracy:.2f}%"
            if result.trainer.cfg.val_size else f"no validation split; kept epoch {state.epoch}")
    click.echo(f"{kept}; saved {out}")
    if not no_plots:
        click.echo(f"curves: {files.curves}")


def _score(kept_val_accuracy: float) -> float | None:
    """The kept epoch's validation score for JSON: null without a validation split."""
    return None if kept_val_accuracy < 0 else kept_val_accuracy


def _failing(exc: Exception) -> click.ClickException:
    """A library error as one line: exit 2 for a bad value, else 1."""
    from ..config import ConfigFileError

    if isinstance(exc, ConfigError) and not isinstance(exc, ConfigFileError):
        return click.UsageError(str(exc))
    return fail(exc)


def _spec(out, config_name, flags, source, start):
    """``run.build_spec`` with its errors as one line each."""
    from .. import run
    from ..checkpoint import CheckpointError

    try:
        return run.build_spec(out, config_name, flags, data=source, start=start)
    except (ConfigError, CheckpointError, run.RunError) as exc:
        raise _failing(exc) from None


def _run(spec, hooks):
    """The run of ``spec`` with its errors as one line each."""
    from .. import run
    from ..checkpoint import CheckpointError
    from ..mnist import DataError
    from ..train import TrainingDiverged

    try:
        with run.Run(spec, hooks, then=signal.SIG_IGN) as job:
            return job.fit()
    except (ConfigError, run.RunError, CheckpointError, DataError, TrainingDiverged) as exc:
        raise _failing(exc) from None

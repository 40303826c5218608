"""The ``mlp`` command line: parses options, makes one library call, prints the result.

This is the only module that prints results and picks exit codes (progress
bars go to stderr): 0 success; 1 a bad file, a failed download or a failed
run; 2 a bad option or value; 130 / 143 training stopped by SIGINT / SIGTERM
with its resumable state saved.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .config import DEFAULT_OUT, FIELDS, ConfigError, check_value, is_list, item_type
from .data import DATA_DIR_ENV, DEFAULT_DATA_DIR, DOWNLOAD_DEADLINE_S, MIRRORS_ENV

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _fail(exc: Exception | str) -> click.ClickException:
    """One clear line for a user-fixable problem (exit 1)."""
    return click.ClickException(str(exc))


def _output_error(path: Path, exc: OSError) -> click.ClickException:
    return _fail(f"{path}: {exc.strerror or exc}")


# ---------------------------------------------------------------- shared options

def data_options(f: Callable) -> Callable:
    """--data-dir, --mirror and --download-timeout, for every command that reads MNIST."""
    f = click.option("--download-timeout", type=click.FloatRange(1, 86_400),
                     default=DOWNLOAD_DEADLINE_S, metavar="SECONDS",
                     help="Longest a download of one file may take.")(f)
    f = click.option("--mirror", "mirrors", multiple=True, metavar="URL",
                     help=f"MNIST mirror to try, in order; repeatable. Default: ${MIRRORS_ENV} "
                          "(comma-separated), else the public mirrors.")(f)
    f = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     envvar=DATA_DIR_ENV, default=str(DEFAULT_DATA_DIR), show_envvar=True,
                     help="Folder holding (or receiving) the MNIST files.")(f)
    return f


def _ensure_data(data_dir: Path, mirrors: tuple[str, ...], timeout: float, quiet: bool,
                 verify: bool = False):
    """Download what is missing (saying so on stderr unless quiet); the (resource, status) list."""
    from . import data

    try:
        report = data.ensure_mnist(data_dir, mirrors or None, progress=not quiet,
                                   verify=verify, deadline_s=timeout)
    except data.DataError as exc:
        raise _fail(exc) from None
    summary = data.download_summary(report, data_dir)
    if summary and not quiet and not verify:
        click.echo(summary, err=True)
    return report


def _load_models(paths: tuple[Path, ...]):
    """One checkpoint, or a committee of several (their probabilities averaged)."""
    from .checkpoint import CheckpointError, load_committee

    try:
        return load_committee(list(paths))
    except CheckpointError as exc:
        raise _fail(exc) from None


MODEL_HELP = "Checkpoint to use; give it several times for a committee (the mean of the " \
             "members' probabilities)."


def model_option(f: Callable) -> Callable:
    """--model, repeatable, for every command that uses a trained network."""
    return click.option("--model", "models", multiple=True, default=[str(DEFAULT_OUT)],
                        type=click.Path(dir_okay=False, path_type=Path), help=MODEL_HELP)(f)


@click.group(context_settings=CONTEXT)
@click.version_option(None, "-V", "--version", package_name="mnist-mlp", prog_name="mlp")
def main() -> None:
    """Train, evaluate and use a multilayer perceptron on MNIST, with backprop in NumPy."""


# ---------------------------------------------------------------- download

@main.command(context_settings=CONTEXT)
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def download(data_dir: Path, mirrors: tuple[str, ...], download_timeout: float,
             quiet: bool) -> None:
    """Download and verify the four MNIST files; files already there are verified."""
    from .data import find_file

    for resource, status in _ensure_data(data_dir, mirrors, download_timeout, quiet,
                                         verify=True):
        click.echo(f"{status:<10} {find_file(data_dir, resource)}")


# ---------------------------------------------------------------- train

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


class ProgressDisplay:
    """A tqdm bar per epoch and one summary line per epoch, on stderr (off with --quiet)."""

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

    def on_epoch_end(self, trainer, row, improved):
        self.close()
        if self.quiet:
            return
        val = ("" if row["val_loss"] is None else
               f"  val loss {row['val_loss']:.4f}  val acc {100 * row['val_accuracy']:.2f}%")
        if row.get("ema_val_accuracy") is not None:
            val += f" (averaged {100 * row['ema_val_accuracy']:.2f}%)"
        click.echo(f"epoch {row['epoch']:>3}/{trainer.cfg.epochs}  train loss "
                   f"{row['train_loss']:.4f}{val}{' *' if improved else '  '}  "
                   f"{row['train_seconds']:.1f}s  lr {row['lr']:.4g}", err=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@main.command(context_settings=CONTEXT)
@click.option("--config", "config_name", metavar="FILE|NAME",
              help="A TOML preset: a path, or a name (./configs/NAME.toml, else a built-in "
                   "preset; a wrong name lists them).")
@_config_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              help="Best checkpoint; NAME.last.npz, NAME.metrics.jsonl and NAME.curves.png "
                   "go beside it.")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --out's .last.npz, bit for bit.")
@click.option("--overwrite", is_flag=True, help="Replace a run already saved at --out.")
@click.option("--no-plots", is_flag=True, help="Do not redraw NAME.curves.png each epoch.")
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.pass_context
def train(ctx: click.Context, config_name: str | None, out: Path, resume: bool,
          overwrite: bool, no_plots: bool, data_dir: Path, mirrors: tuple[str, ...],
          download_timeout: float, quiet: bool, as_json: bool, **settings: Any) -> None:
    """Train an MLP on MNIST and save checkpoints.

    Settings come from the built-in defaults (the preset "default"), then the
    --config file, then the flags given. --resume takes the saved run's
    settings; only --epochs and --patience may change.
    """
    from . import run

    flags = {k: v for k, v in settings.items()
             if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    display = ProgressDisplay(quiet)
    with run.StopSignals() as signals:  # held until exit, so a second signal never kills it
        try:
            result = _run_training(out, config_name, flags, resume, overwrite, data_dir,
                                   mirrors, download_timeout, quiet, no_plots, display, signals)
        except KeyboardInterrupt:
            click.echo("SIGINT: stopped before training started; nothing to save", err=True)
            ctx.exit(128 + signal.SIGINT)
        if not result.finished:
            signals.ignore_from_now()
            st = result.trainer.state
            click.echo(f"{signal.Signals(result.signum).name}: stopped at epoch {st.epoch + 1}, "
                       f"batch {st.batch}; saved {result.files.last}. Resume with: "
                       f"mlp train --resume --out {out}", err=True)
            ctx.exit(128 + result.signum)
    st, files = result.trainer.state, result.files
    if as_json:
        click.echo(json.dumps({"config": result.trainer.cfg.to_dict(), "epochs": st.history,
                               "best_epoch": st.best_epoch, "checkpoint": str(out),
                               "curves": None if no_plots else str(files.curves)}))
        return
    kept = (f"kept epoch {st.best_epoch}: val accuracy {100 * st.best_val_accuracy:.2f}%"
            if result.trainer.cfg.val_size else f"no validation split; kept epoch {st.epoch}")
    click.echo(f"{kept}; saved {out}")
    if not no_plots:
        click.echo(f"curves: {files.curves}")


def _run_training(out, config_name, flags, resume, overwrite, data_dir, mirrors,
                  download_timeout, quiet, no_plots, display, signals):
    """``run.train`` with its errors as one line each (exit 2 for a bad value, else 1)."""
    from . import run
    from .checkpoint import CheckpointError
    from .config import ConfigFileError
    from .data import DataError
    from .train import TrainingDiverged

    try:
        return run.train(out, config=config_name, flags=flags, resume=resume,
                         overwrite=overwrite, data_dir=data_dir, mirrors=mirrors or None,
                         download_deadline_s=download_timeout, progress=not quiet,
                         plots=not no_plots, callbacks=[display],
                         log=lambda line: quiet or click.echo(line, err=True), signals=signals)
    except ConfigFileError as exc:
        raise _fail(exc) from None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except (run.RunError, CheckpointError, DataError) as exc:
        raise _fail(exc) from None
    except TrainingDiverged as exc:
        last = run.RunFiles(out).last
        kept = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise _fail(f"{exc}{kept}") from None
    finally:
        display.close()


# ---------------------------------------------------------------- eval

def _format_report(result: dict[str, Any]) -> str:
    lines = [f"{'committee ' if 'members' in result else ''}accuracy "
             f"{100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  n {result['n']}"]
    lines += [f"  member {m['model']}: {100 * m['accuracy']:.2f}%"
              for m in result.get("members", [])]
    lines += ["", "digit  precision  recall     f1  support"]
    for digit, s in enumerate(result["per_class"]):
        lines.append(f"{digit:>5}  {s['precision']:>9.4f}  {s['recall']:>6.4f}  "
                     f"{s['f1']:>5.4f}  {s['support']:>7}")
    lines += ["", "confusion (rows: true digit, columns: predicted)",
              "      " + "".join(f"{j:>6}" for j in range(10))]
    for i, row in enumerate(result["confusion"]):
        lines.append(f"{i:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


@main.command("eval", context_settings=CONTEXT)
@model_option
@data_options
@click.option("--split", type=click.Choice(["test", "train", "val"]), default="test",
              help="train and val are split as in the checkpoint's training run.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--errors", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Also save a grid of up to 100 misclassified digits.")
@click.option("--confusion", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png", help="Also save the confusion matrix as a heatmap.")
@click.option("-q", "--quiet", is_flag=True, help="No download progress bar.")
def eval_(models: tuple[Path, ...], data_dir: Path, mirrors: tuple[str, ...], download_timeout: float,
          split: str, as_json: bool, errors: Path | None, confusion: Path | None,
          quiet: bool) -> None:
    """Score a checkpoint: accuracy, loss, per-class scores, confusion matrix."""
    from . import metrics, run
    from .data import DataError

    ckpt = _load_models(models)
    model = ", ".join(map(str, models))
    _ensure_data(data_dir, mirrors, download_timeout, quiet)
    try:
        X, y = run.evaluation_split(ckpt, split, data_dir)
        result = metrics.evaluate(ckpt.net, X, y)
    except DataError as exc:
        raise _fail(exc) from None
    except (run.RunError, FloatingPointError) as exc:
        raise _fail(f"{model}: {exc}") from None
    if errors is not None:
        from .gallery import save_errors

        try:
            save_errors(errors, X, y, ckpt.net.predict(X))
        except OSError as exc:
            raise _output_error(errors, exc) from None
    if confusion is not None:
        from .plots import confusion_figure, save_figure

        try:
            save_figure(confusion_figure(result["confusion"], result["accuracy"]), confusion)
        except OSError as exc:
            raise _output_error(confusion, exc) from None
    if "member_accuracy" in result:
        result["members"] = [{"model": str(path), "accuracy": accuracy}
                             for path, accuracy in zip(models, result.pop("member_accuracy"))]
    click.echo(json.dumps(result) if as_json else _format_report(result))


# ---------------------------------------------------------------- predict

@main.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_option
@click.option("--top-k", type=click.IntRange(1, 10), default=3,
              help="How many likeliest digits to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per image.")
@click.option("--show-input", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png", help="Save the 28x28 inputs the model saw, side by side.")
def predict(images: tuple[Path, ...], models: tuple[Path, ...], top_k: int, as_json: bool,
            show_input: Path | None) -> None:
    """Classify digit images: photos, scans, drawings; any size, any common format.

    IMAGES are files or folders (their image files, sorted by name). Each image
    is prepared as MNIST's digits were: polarity, background and noise handled,
    the digit fitted to 20x20 and centred by its centre of mass in 28x28.
    """
    from . import imaging
    from .classify import Prediction, classify

    ckpt = _load_models(models)
    paths = imaging.expand_paths(list(images))
    if not paths:
        raise _fail(f"no image files ({', '.join(imaging.IMAGE_SUFFIXES)}) in "
                    f"{', '.join(map(str, images))}")
    try:
        results = classify(ckpt, paths)
    except FloatingPointError as exc:
        raise _fail(f"{', '.join(map(str, models))}: {exc}") from None
    good = [r for r in results if isinstance(r, Prediction)]
    for r in results:
        if not isinstance(r, Prediction):
            click.echo(f"Error: {r}", err=True)
        elif not as_json:
            top = r.top(top_k)
            others = ", ".join(f"{d} {100 * p:.1f}%" for d, p in top[1:])
            click.echo(f"{r.source}: {r.digit} ({100 * r.confidence:.1f}%)"
                       + (f"  then {others}" if others else ""))
    if as_json:
        click.echo(json.dumps([{"path": r.source, "digit": r.digit, "confidence": r.confidence,
                                "top": r.top(top_k)} for r in good]))
    if show_input is not None and good:
        import numpy as np

        from .gallery import save_grid

        try:
            save_grid(show_input, np.stack([r.pixels for r in good]) / np.float32(255),
                      [f"{r.digit} {Path(r.source).name[:10]}" for r in good])
        except OSError as exc:
            raise _output_error(show_input, exc) from None
    if len(good) < len(results):
        sys.exit(1)


# ---------------------------------------------------------------- plot

@main.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--curves", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Where the curves go. Default: NAME.curves.png beside a single run; "
                   "runs.curves.png here for several.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Where a single checkpoint's first-layer weights go. Default: "
                   "NAME.weights.png beside it.")
def plot(runs: tuple[Path, ...], curves: Path | None, weights: Path | None) -> None:
    """Draw runs: their training curves, and a checkpoint's first-layer weights.

    Each RUN is a checkpoint (its NAME.metrics.jsonl beside it) or a metrics
    log. Several runs: their validation curves overlaid, one legend entry each.
    """
    from . import plots

    try:
        pictures = plots.draw_runs(list(runs), curves, weights,
                                   note=lambda line: click.echo(line, err=True))
    except plots.PlotError as exc:
        raise _fail(exc) from None
    for kind, path in pictures:
        click.echo(f"{kind}: {path}")


# ---------------------------------------------------------------- serve

@main.command(context_settings=CONTEXT)
@model_option
@click.option("--host", default="127.0.0.1",
              help="Address to listen on; anything but loopback lets others on the network "
                   "use it.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000,
              help="Port to listen on (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def serve(models: tuple[Path, ...], host: str, port: int, open_browser: bool) -> None:
    """Serve a page to draw digits on and watch the network read them; Ctrl-C stops it."""
    import signal

    from .checkpoint import CheckpointError

    try:
        from .serve import DigitApp, DigitServer, is_loopback
    except ModuleNotFoundError as exc:
        raise _fail(f"mlp serve needs {exc.name}: pip install 'mnist-mlp[serve]'") from None
    try:
        app = DigitApp.load(list(models), note=lambda line: click.echo(line, err=True))
        server = DigitServer(app, host, port)
    except CheckpointError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not is_loopback(host):
        click.echo(f"Warning: listening on {host}: anyone who can reach this machine on the "
                   "network can use this page.", err=True)
    click.echo(f"serving {', '.join(map(str, models))} at {server.url} (Ctrl-C stops)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    server.serve_forever(stop_on=(signal.SIGINT, signal.SIGTERM))


# ---------------------------------------------------------------- entry point

def entry() -> None:
    """The ``mlp`` executable: ``main`` with output errors as one line, not a traceback.

    click already quiets a closed pipe (``mlp predict ... | head -1``); a full
    disk or a device that refuses writes on stdout (``> /dev/full``) ends here.
    """
    try:
        main(prog_name="mlp")
    except OSError as exc:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
        click.echo(f"Error: cannot write the output: {exc.strerror or exc}", err=True)
        sys.exit(1)

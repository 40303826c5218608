"""The ``mlp`` command line: the only module that prints results and picks exit codes.

Exit codes: 0 success; 1 a bad file, a failed download or a failed run; 2 a bad
option or value (click's usage errors); 130 training interrupted with Ctrl-C.
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

from .config import DEFAULT_OUT

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _fail(exc: Exception) -> click.ClickException:
    """One clear line for a user-fixable problem (exit 1)."""
    return click.ClickException(str(exc))


# ---------------------------------------------------------------- shared options

def data_options(f: Callable) -> Callable:
    """--data-dir and --mirror, for every command that reads MNIST."""
    f = click.option("--mirror", "mirrors", multiple=True, metavar="URL",
                     help="MNIST mirror to try, in order; repeatable. Default: "
                          "$MLP_MNIST_MIRRORS (comma-separated), else the public mirrors.")(f)
    f = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     envvar="MLP_DATA_DIR", default="data", show_envvar=True,
                     help="Folder holding (or receiving) the MNIST files.")(f)
    return f


def _ensure_data(data_dir: Path, mirrors: tuple[str, ...], quiet: bool, announce: bool = True):
    """Download what is missing; say so on stderr unless quiet; return the report."""
    from . import data

    try:
        report = data.ensure_mnist(data_dir, mirrors or None, progress=not quiet)
    except data.DataError as exc:
        raise _fail(exc) from None
    fetched = [r.gz_name for r, status in report if status == "downloaded"]
    if fetched and announce and not quiet:
        click.echo(f"downloaded and verified {', '.join(fetched)} into {data_dir}", err=True)
    return report


def _load(split: str, data_dir: Path, val_size: int = 0):
    """``data.load_mnist`` (or, for "train+val", ``data.load_train_val``) with clean errors."""
    from . import data

    try:
        if split == "train+val":
            return data.load_train_val(data_dir, val_size)
        return data.load_mnist(split, data_dir, val_size=val_size)
    except (data.DataError, ValueError) as exc:
        raise _fail(exc) from None


@click.group(context_settings=CONTEXT)
@click.version_option(None, "-V", "--version", package_name="mnist-mlp", prog_name="mlp")
def main() -> None:
    """Train, evaluate and use a multilayer perceptron on MNIST, with backprop in NumPy."""


# ---------------------------------------------------------------- download

@main.command(context_settings=CONTEXT)
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def download(data_dir: Path, mirrors: tuple[str, ...], quiet: bool) -> None:
    """Download and verify the four MNIST files; files already verified are kept."""
    from .data import find_file

    for resource, status in _ensure_data(data_dir, mirrors, quiet, announce=False):
        click.echo(f"{status:<10} {find_file(data_dir, resource)}")


# ---------------------------------------------------------------- train

def _comma_list(kind: type, example: str) -> Callable:
    """A click callback turning "500,300" into (500, 300) of ``kind``."""
    def parse(ctx: click.Context, param: click.Parameter, value: Any) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(kind(v) for v in str(value).split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma list, e.g. {example}") from None
    return parse


def _config_options(f: Callable) -> Callable:
    """One option per TrainConfig field, defaulting to the built-in defaults."""
    from .config import CHOICES, TrainConfig

    d = TrainConfig()
    specs = [
        ("--hidden", dict(default=",".join(map(str, d.hidden)), metavar="W[,W...]",
                          callback=_comma_list(int, "500,300"), help="Hidden layer widths.")),
        ("--epochs", dict(type=int, default=d.epochs, help="Training epochs.")),
        ("--batch-size", dict(type=int, default=d.batch_size, help="Samples per step.")),
        ("--lr", dict(type=float, default=d.lr, help="Peak learning rate.")),
        ("--optimizer", dict(type=click.Choice(CHOICES["optimizer"]), default=d.optimizer,
                             help="Update rule.")),
        ("--momentum", dict(type=float, default=d.momentum, help="SGD momentum / Adam beta1.")),
        ("--weight-decay", dict(type=float, default=d.weight_decay,
                                help="L2 (sgd, nesterov, adam) or decoupled (adamw).")),
        ("--dropout", dict(default=",".join(map(str, d.dropout)), metavar="P[,P...]",
                           callback=_comma_list(float, "0.5,0.3"),
                           help="Hidden-unit drop probability: one, or one per layer.")),
        ("--input-dropout", dict(type=float, default=d.input_dropout,
                                 help="Input-pixel drop probability.")),
        ("--label-smoothing", dict(type=float, default=d.label_smoothing,
                                   help="ε: targets (1 - ε) one-hot + ε/10.")),
        ("--max-norm", dict(type=float, default=d.max_norm,
                            help="Bound on each unit's incoming weight norm (0: off).")),
        ("--schedule", dict(type=click.Choice(CHOICES["schedule"]), default=d.schedule,
                            help="Learning-rate schedule after warm-up.")),
        ("--warmup-epochs", dict(type=float, default=d.warmup_epochs,
                                 help="Linear learning-rate warm-up, in epochs.")),
        ("--augment", dict(type=click.Choice(CHOICES["augment"]), default=d.augment,
                           help="Random distortions of each training batch.")),
        ("--val-size", dict(type=int, default=d.val_size,
                            help="Last N training samples held out for validation.")),
        ("--patience", dict(type=int, default=d.patience,
                            help="Early stopping after N epochs without improvement (0: off).")),
        ("--seed", dict(type=int, default=d.seed,
                        help="Seeds initialisation, shuffling, dropout, distortions.")),
    ]
    for name, kwargs in reversed(specs):
        f = click.option(name, **kwargs)(f)
    return f


class ProgressReporter:
    """tqdm bar per epoch on stderr and one summary line per epoch (both off with --quiet)."""

    def __init__(self, epochs: int, quiet: bool):
        self.epochs, self.quiet, self.bar = epochs, quiet, None

    def epoch_start(self, epoch, n_samples, done):
        from tqdm import tqdm

        self.bar = tqdm(total=n_samples, initial=done, desc=f"epoch {epoch}/{self.epochs}",
                        unit="img", unit_scale=True, leave=False, file=sys.stderr,
                        disable=self.quiet or None, mininterval=0.5)
        self.running = None

    def batch_end(self, n, loss):
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        self.bar.set_postfix(loss=f"{self.running:.4f}", refresh=False)
        self.bar.update(n)

    def epoch_end(self, row, state, improved):
        self.bar.close()
        if not self.quiet:
            click.echo(
                f"epoch {row['epoch']:>3}/{self.epochs}  train loss {row['train_loss']:.4f}  "
                f"val loss {row['val_loss']:.4f}  val acc {100 * row['val_accuracy']:.2f}%"
                f"{' *' if improved else '  '}  {row['train_seconds']:.1f}s  "
                f"lr {row['lr']:.4g}", err=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _StopFlag:
    """Ctrl-C asks training to stop after the current step; a second Ctrl-C stops at once."""

    def __init__(self):
        self.raised = False
        self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.raised = True
        signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.raised

    def restore(self):
        signal.signal(signal.SIGINT, self.previous)


@main.command(context_settings=CONTEXT)
@click.option("--config", "config_name", metavar="FILE|NAME",
              help="A TOML preset: a path, or a name in configs/ (e.g. lecun-800).")
@_config_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              help="Best checkpoint; NAME.last.npz and NAME.metrics.jsonl go beside it.")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --out's .last.npz, bit for bit.")
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.pass_context
def train(ctx: click.Context, config_name: str | None, out: Path, resume: bool,
          data_dir: Path, mirrors: tuple[str, ...], quiet: bool, as_json: bool,
          **options: Any) -> None:
    """Train an MLP on MNIST and save checkpoints.

    Settings come from the built-in defaults (configs/default.toml), then the
    --config file, then the flags given.
    """
    from . import runner
    from .checkpoint import CheckpointError
    from .config import ConfigError, find_preset, load_config_file, resolve
    from .train import TrainingDiverged

    flags = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    files = runner.RunFiles(out)
    try:
        file_values = load_config_file(find_preset(config_name)) if config_name else {}
        cfg = resolve(file_values)
    except ConfigError as exc:
        raise _fail(exc) from None
    try:
        cfg = resolve(file_values, flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None

    try:
        saved = runner.load_saved_run(files, flags) if resume else None
        files.check_writable()
    except (ConfigError, CheckpointError) as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(f"cannot write checkpoints to {out.parent}: {exc.strerror or exc}") from None
    cfg = saved.cfg if saved else cfg

    _ensure_data(data_dir, mirrors, quiet)
    X, y, X_val, y_val = _load("train+val", data_dir, cfg.val_size)
    try:
        trainer = saved.trainer(len(X)) if saved else runner.new_trainer(cfg, len(X))
    except CheckpointError as exc:
        raise _fail(f"{files.last}: {exc}") from None

    display = ProgressReporter(trainer.cfg.epochs, quiet)
    reporter = runner.CheckpointReporter(files, trainer, display)
    stop = _StopFlag()
    try:
        finished = trainer.fit(X, y, X_val, y_val, reporter, should_stop=stop)
    except TrainingDiverged as exc:
        kept = f"; the last good checkpoint is {files.last}" if files.last.exists() else ""
        raise _fail(f"{exc}{kept}") from None
    except OSError as exc:  # e.g. the disk filled up while saving a checkpoint
        raise _fail(f"cannot save checkpoints: {exc.filename or out}: "
                    f"{exc.strerror or exc}") from None
    finally:
        stop.restore()
        display.close()
    if not finished:
        runner.save_last(files, trainer)
        st = trainer.state
        click.echo(f"interrupted at epoch {st.epoch + 1}, batch {st.batch}; saved {files.last}. "
                   f"Resume with: mlp train --resume --out {out}", err=True)
        ctx.exit(130)

    st = trainer.state
    if as_json:
        click.echo(json.dumps({"config": trainer.cfg.to_dict(), "epochs": st.history,
                               "best_epoch": st.best_epoch, "checkpoint": str(out)}))
    else:
        click.echo(f"best val accuracy {100 * st.best_val_accuracy:.2f}% at epoch "
                   f"{st.best_epoch}; saved {out}")


# ---------------------------------------------------------------- eval

def _load_checkpoint(path: Path):
    from .checkpoint import CheckpointError, load

    try:
        return load(path)
    except CheckpointError as exc:
        raise _fail(exc) from None


def _format_report(result: dict[str, Any]) -> str:
    lines = [f"accuracy {100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  "
             f"n {result['n']}", "", "digit  precision  recall     f1  support"]
    for digit, s in enumerate(result["per_class"]):
        lines.append(f"{digit:>5}  {s['precision']:>9.4f}  {s['recall']:>6.4f}  "
                     f"{s['f1']:>5.4f}  {s['support']:>7}")
    lines += ["", "confusion (rows: true digit, columns: predicted)",
              "      " + "".join(f"{j:>6}" for j in range(10))]
    for i, row in enumerate(result["confusion"]):
        lines.append(f"{i:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


@main.command("eval", context_settings=CONTEXT)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              help="Checkpoint to score.")
@data_options
@click.option("--split", type=click.Choice(["test", "train", "val"]), default="test",
              help="train and val are split as in the checkpoint's training run.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--errors", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Also save a grid of up to 100 misclassified digits.")
@click.option("-q", "--quiet", is_flag=True, help="No download progress bar.")
def eval_(model: Path, data_dir: Path, mirrors: tuple[str, ...], split: str, as_json: bool,
          errors: Path | None, quiet: bool) -> None:
    """Score a checkpoint: accuracy, loss, per-class scores, confusion matrix."""
    from . import metrics

    ckpt = _load_checkpoint(model)
    val_size = int(ckpt.meta.get("config", {}).get("val_size", 0)) if split != "test" else 0
    _ensure_data(data_dir, mirrors, quiet)
    X, y = _load(split, data_dir, val_size)
    logits = ckpt.net.logits(X)
    pred = logits.argmax(axis=1)
    confusion = metrics.confusion_matrix(y, pred)
    scores = metrics.per_class_scores(confusion)
    result = {
        "accuracy": metrics.accuracy(y, pred),
        "loss": metrics.mean_cross_entropy(logits, y),
        "n": len(y),
        "per_class": [{k: (int(v[d]) if k == "support" else float(v[d]))
                       for k, v in scores.items()} for d in range(10)],
        "confusion": confusion.tolist(),
    }
    if errors is not None:
        from .gallery import save_errors

        wrong = (pred != y).nonzero()[0][:100]
        try:
            save_errors(errors, X[wrong].reshape(-1, 28, 28), y[wrong], pred[wrong])
        except OSError as exc:
            raise _fail(f"{errors}: {exc.strerror or exc}") from None
    click.echo(json.dumps(result) if as_json else _format_report(result))


# ---------------------------------------------------------------- predict

@main.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT,
              help="Checkpoint to use.")
@click.option("--top-k", type=click.IntRange(1, 10), default=3,
              help="How many likeliest digits to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per image.")
@click.option("--show-input", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.png", help="Save the 28x28 inputs the model saw, side by side.")
def predict(images: tuple[Path, ...], model: Path, top_k: int, as_json: bool,
            show_input: Path | None) -> None:
    """Classify digit images: photos, scans, drawings; any size, any common format.

    IMAGES are files or folders (their image files, sorted by name). Each image
    is prepared as MNIST's digits were: polarity, background and noise handled,
    the digit fitted to 20x20 and centred by its centre of mass in 28x28.
    """
    import numpy as np

    from . import imaging

    ckpt = _load_checkpoint(model)
    scale = ckpt.input_scale
    paths = imaging.expand_paths(list(images))
    if not paths:
        raise _fail(f"no image files ({', '.join(imaging.IMAGE_SUFFIXES)}) in "
                    f"{', '.join(map(str, images))}")
    results, inputs, failed = [], [], 0
    for path in paths:
        try:
            digit = imaging.load_digit(path)                  # uint8 (28, 28)
        except imaging.ImageError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed += 1
            continue
        x = digit.reshape(1, -1).astype(np.float32) / scale  # (1, 784), as in training
        proba = ckpt.net.predict_proba(x)[0]                  # (10,)
        top = np.argsort(proba)[::-1][:top_k]
        results.append({"path": str(path), "digit": int(top[0]),
                        "confidence": float(proba[top[0]]),
                        "top": [[int(d), float(proba[d])] for d in top]})
        inputs.append(digit)
        if not as_json:
            others = ", ".join(f"{d} {100 * p:.1f}%" for d, p in results[-1]["top"][1:])
            click.echo(f"{path}: {top[0]} ({100 * proba[top[0]]:.1f}%)"
                       + (f"  then {others}" if others else ""))
    if as_json:
        click.echo(json.dumps(results))
    if show_input is not None and inputs:
        from .gallery import save_grid

        try:
            save_grid(show_input, np.stack(inputs) / np.float32(255),
                      [f"{r['digit']} {Path(r['path']).name[:10]}" for r in results])
        except OSError as exc:
            raise _fail(f"{show_input}: {exc.strerror or exc}") from None
    if failed:
        sys.exit(1)

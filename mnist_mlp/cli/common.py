"""What the commands share: context settings, error lines, the data and model options."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import click

from ..config import DEFAULT_OUT
from ..dataset import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataSource
from ..download import DOWNLOAD_DEADLINE_S, MIRRORS_ENV

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def fail(exc: Exception | str) -> click.ClickException:
    """One clear line for a user-fixable problem (exit 1)."""
    return click.ClickException(str(exc))


def output_error(path: Path, exc: OSError) -> click.ClickException:
    """One line for an output that cannot be written."""
    return fail(f"{path}: {exc.strerror or exc}")


def picture_path(kind: str) -> Callable:
    """The click callback of a picture option: its file is refused when the option is
    parsed (a stream, FIFO or folder, a file on its path, an extension that is not a
    ``kind`` format: "figure" for matplotlib's, "grid" for the digit grids) rather than
    after the command's work is done and printed."""
    def check(ctx: click.Context, param: click.Parameter, path: Path | None) -> Path | None:
        if path is not None:
            from ..files import format_for
            if kind == "figure":
                from ..plots import FIGURE_FORMATS as formats
            else:
                from ..gallery import GRID_FORMATS as formats
            try:
                format_for(path, formats)
            except OSError as exc:
                raise output_error(path, exc) from None
        return path
    return check


def data_options(f: Callable) -> Callable:
    """--data-dir, --mirror and --download-timeout, handed to the command as one
    ``source: DataSource``, for every command that reads MNIST."""
    @functools.wraps(f)
    def with_source(*args, data_dir: Path | None, mirrors: tuple[str, ...],
                    download_timeout: float, **kwargs):
        if not math.isfinite(download_timeout):  # click's FloatRange lets NaN through
            raise click.BadParameter("not a number of seconds", param_hint="--download-timeout")
        source = DataSource.from_env(data_dir, mirrors, download_timeout)
        return f(*args, source=source, **kwargs)

    with_source = click.option(
        "--download-timeout", type=click.FloatRange(1, 86_400), default=DOWNLOAD_DEADLINE_S,
        metavar="SECONDS", help="Longest a download of one file may take.")(with_source)
    with_source = click.option(
        "--mirror", "mirrors", multiple=True, metavar="URL",
        help=f"MNIST mirror to try, in order; repeatable. Default: ${MIRRORS_ENV} "
             "(comma-separated), else the public mirrors.")(with_source)
    return _data_dir("Folder holding (or receiving) the MNIST files.")(with_source)


def data_dir_option(f: Callable) -> Callable:
    """--data-dir alone, handed to the command as ``source: DataSource``, for a command
    that reads the dataset's files but never downloads them."""
    @functools.wraps(f)
    def with_source(*args, data_dir: Path | None, **kwargs):
        return f(*args, source=DataSource.from_env(data_dir), **kwargs)

    return _data_dir("Folder holding the dataset's files (read, never downloaded).")(with_source)


def _data_dir(what: str) -> Callable[[Callable], Callable]:
    """The --data-dir option, its help ``what`` followed by its default."""
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help=f"{what} Default: ${DATA_DIR_ENV}, else "
                                           f"./{DEFAULT_DATA_DIR}.")


def dataset_option(f: Callable) -> Callable:
    """--dataset NAME, handed to the command as ``dataset``: a Dataset, or None when not
    given (commands that score a model then take the model's)."""
    from ..mnist import DATASETS

    @functools.wraps(f)
    def with_dataset(*args, dataset: str | None, **kwargs):
        return f(*args, dataset=None if dataset is None else DATASETS[dataset], **kwargs)

    return click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
                        help="The dataset (default: mnist; for a model, the one it was "
                             "trained on).")(with_dataset)


def model_dataset(models: tuple[Path, ...], meta: dict, asked=None):
    """The dataset a loaded model (``meta``) was trained on; ``asked``, a --dataset given,
    must be that one."""
    from ..mnist import dataset_of

    dataset = dataset_of(meta)                         # checkpoint.load checked it is known
    if asked is not None and asked != dataset:
        raise fail(f"{', '.join(map(str, models))}: trained on {dataset.title}, it cannot be "
                   f"scored on {asked.title}; leave out --dataset, or give a model trained "
                   f"on {asked.title}")
    return dataset


def ensure_data(source: DataSource, quiet: bool, verify: bool = False):
    """Download what is missing, saying so on stderr unless quiet; the (resource, status)
    list."""
    from ..mnist import DataError

    try:
        report = source.ensure(progress=not quiet, verify=verify)
    except DataError as exc:
        raise fail(exc) from None
    summary = source.summary(report)
    if summary and not quiet and not verify:
        click.echo(summary, err=True)
    return report


def load_models(paths: tuple[Path, ...]):
    """One checkpoint, or a committee of several (their probabilities averaged)."""
    from ..checkpoint import CheckpointError, load_committee

    try:
        return load_committee(list(paths))
    except CheckpointError as exc:
        raise fail(exc) from None


def model_option(f: Callable) -> Callable:
    """--model (repeatable), and --sweep DIR --top K, handed to the command as one tuple
    ``models``, for every command that uses a trained network."""
    @functools.wraps(f)
    def with_models(*args, models: tuple[Path, ...], sweep_dir: Path | None, top: int,
                    **kwargs):
        found: tuple[Path, ...] = ()
        if sweep_dir is not None:
            from ..sweep import SweepError, top_checkpoints

            try:
                found = tuple(top_checkpoints(sweep_dir, top))
            except (SweepError, ImportError, OSError) as exc:
                raise fail(f"--sweep {sweep_dir}: {exc}") from None
        return f(*args, models=models + found or (DEFAULT_OUT,), **kwargs)

    with_models = click.option(
        "--top", type=click.IntRange(1, 1000), default=3, metavar="K",
        help="With --sweep: how many of its best trials vote.")(with_models)
    with_models = click.option(
        "--sweep", "sweep_dir", type=click.Path(file_okay=False, path_type=Path),
        metavar="DIR", help="A committee of the K best completed trials of the `mlp "
                            "sweep` in DIR (beside any --model).")(with_models)
    return click.option("--model", "models", multiple=True,
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="Checkpoint to use; give it several times for a committee (the "
                             f"mean of the members' probabilities). Default: {DEFAULT_OUT}."
                        )(with_models)


threads_flag = click.option(
    "--threads", type=click.IntRange(1, 1024), metavar="N",
    help="BLAS threads (default: the BLAS's own, one per core: the fastest alone). "
         "Give 1 when another heavy job shares the cores.")


def threads_option(f: Callable) -> Callable:
    """--threads N: the BLAS threads of the command's work, applied around it."""
    @functools.wraps(f)
    def with_threads(*args, threads: int | None, **kwargs):
        if threads is None:
            return f(*args, **kwargs)
        from ..threads import limit_threads

        with limit_threads(threads):
            return f(*args, **kwargs)

    return threads_flag(with_threads)

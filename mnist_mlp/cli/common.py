"""What the commands share: context settings, error lines, the data and model options."""

from __future__ import annotations

import functools
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


def data_options(f: Callable) -> Callable:
    """--data-dir, --mirror and --download-timeout, handed to the command as one
    ``source: DataSource``, for every command that reads MNIST."""
    @functools.wraps(f)
    def with_source(*args, data_dir: Path | None, mirrors: tuple[str, ...],
                    download_timeout: float, **kwargs):
        source = DataSource.from_env(data_dir, mirrors, download_timeout)
        return f(*args, source=source, **kwargs)

    with_source = click.option(
        "--download-timeout", type=click.FloatRange(1, 86_400), default=DOWNLOAD_DEADLINE_S,
        metavar="SECONDS", help="Longest a download of one file may take.")(with_source)
    with_source = click.option(
        "--mirror", "mirrors", multiple=True, metavar="URL",
        help=f"MNIST mirror to try, in order; repeatable. Default: ${MIRRORS_ENV} "
             "(comma-separated), else the public mirrors.")(with_source)
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help=f"Folder holding (or receiving) the MNIST files. Default: ${DATA_DIR_ENV}, "
             f"else ./{DEFAULT_DATA_DIR}.")(with_source)


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
    """--model, repeatable, for every command that uses a trained network."""
    return click.option("--model", "models", multiple=True, default=[str(DEFAULT_OUT)],
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="Checkpoint to use; give it several times for a committee (the "
                             "mean of the members' probabilities).")(f)

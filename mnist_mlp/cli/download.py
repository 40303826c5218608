"""``mlp download``."""

from __future__ import annotations

import click

from ..dataset import DataSource
from .common import CONTEXT, data_options, ensure_data


@click.command(context_settings=CONTEXT)
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def download(source: DataSource, quiet: bool) -> None:
    """Download and verify the four MNIST files; files already there are verified."""
    for resource, status in ensure_data(source, quiet, verify=True):
        click.echo(f"{status:<10} {source.path(resource)}")

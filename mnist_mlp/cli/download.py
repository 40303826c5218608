"""``mlp download``."""

from __future__ import annotations

import click

from ..dataset import DataSource
from ..mnist import MNIST, Dataset
from .common import CONTEXT, data_options, dataset_option, ensure_data


@click.command(context_settings=CONTEXT)
@dataset_option
@data_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def download(dataset: Dataset | None, source: DataSource, quiet: bool) -> None:
    """Download and verify a dataset's four files (MNIST's unless --dataset); files already
    there, or in a system package's copy (Debian's dataset-fashion-mnist), are verified."""
    source = source.with_dataset(dataset or MNIST)
    for resource, status in ensure_data(source, quiet, verify=True):
        click.echo(f"{status:<10} {source.path(resource)}")

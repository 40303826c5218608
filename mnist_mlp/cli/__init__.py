"""The ``mlp`` command line: parses options, makes one library call, prints the result.

One module per command; ``common`` holds the options and error lines they share.
This package is the only place that prints results and picks exit codes (progress
bars go to stderr): 0 success; 1 a bad file, a failed download or a failed run;
2 a bad option or value; 130 / 143 training stopped by SIGINT / SIGTERM with its
resumable state saved.
"""

from __future__ import annotations

import sys

import click

from .common import CONTEXT
from .download import download
from .eval import eval_
from .export import export
from .gradcheck import gradcheck
from .plot import plot
from .predict import predict
from .serve import serve
from .sweep import sweep
from .train import train


@click.group(context_settings=CONTEXT)
@click.version_option(None, "-V", "--version", package_name="mnist-mlp", prog_name="mlp")
def main() -> None:
    """Train, evaluate and use a multilayer perceptron on MNIST, with backprop in NumPy."""


for command in (download, train, eval_, predict, plot, serve, export, sweep, gradcheck):
    main.add_command(command)


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

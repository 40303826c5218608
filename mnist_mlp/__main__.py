"""``python -m mnist_mlp`` runs the ``mlp`` command."""

from .cli import main

main(prog_name="mlp")

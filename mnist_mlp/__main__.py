"""``python -m mnist_mlp`` runs the ``mlp`` command."""

from .cli import entry

entry()

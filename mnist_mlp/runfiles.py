"""A training run on disk: its files' names and its metrics log.

For ``--out checkpoints/mnist-mlp.npz``:

- ``checkpoints/mnist-mlp.npz``: the kept epoch's model (see ``records.kept_epoch``),
  for eval, predict, serve and export;
- ``checkpoints/mnist-mlp.last.npz``: the latest state with optimiser and RNG (for resume);
- ``checkpoints/mnist-mlp.metrics.jsonl``: one JSON object per finished epoch;
- ``checkpoints/mnist-mlp.curves.png``: the training curves, redrawn each epoch;
- ``checkpoints/mnist-mlp.lock``: held while a process trains this run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import read_bounded, write_bytes_atomic
from .records import is_history_row

MAX_LOG_BYTES = 64 << 20   # a metrics log is a few hundred bytes an epoch


class RunError(Exception):
    """A run that cannot start, go on or be read: locked, already there, too big,
    unwritable, or a damaged log."""


@dataclass(frozen=True)
class RunFiles:
    """The files of a run, named from the kept model's path."""

    kept: Path

    def _beside(self, suffix: str) -> Path:
        return self.kept.with_name(self.kept.stem + suffix)

    @classmethod
    def of(cls, path: Path) -> "RunFiles":
        """The run any of its files belongs to: a model, its ``.last.npz`` or its log."""
        name = path.name
        for suffix in (".metrics.jsonl", ".last.npz", ".curves.png", ".weights.png"):
            if name.endswith(suffix):
                return cls(path.with_name(name.removesuffix(suffix) + ".npz"))
        return cls(path)

    @property
    def last(self) -> Path:
        return self._beside(".last.npz")

    @property
    def metrics(self) -> Path:
        return self._beside(".metrics.jsonl")

    @property
    def curves(self) -> Path:
        return self._beside(".curves.png")

    @property
    def weights(self) -> Path:
        """The first layer's weights, drawn by ``mlp plot`` (not by training)."""
        return self._beside(".weights.png")

    @property
    def lock(self) -> Path:
        return self._beside(".lock")

    @property
    def outputs(self) -> tuple[Path, ...]:
        return self.kept, self.last, self.metrics, self.curves


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the metrics log from the run's history, so it always matches the checkpoints."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_bytes_atomic(path, text.encode())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``.metrics.jsonl``, checked: one object per epoch, in order,
    every number finite and of a sane size (``records.is_history_row``).

    Raises:
        RunError: missing, not a regular file, empty, truncated or not JSON lines.
    """
    try:
        text = read_bounded(Path(path), MAX_LOG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: no such metrics log") from None
    except OSError as exc:
        raise RunError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RunError(f"{path}: not a text file; not a metrics log") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise RunError(f"{path}: line {number} is not JSON (truncated?); not a metrics "
                           "log of `mlp train`") from None
        if not is_history_row(row, number):
            raise RunError(f"{path}: line {number} is not epoch {number} of a metrics log "
                           "of `mlp train`")
        rows.append(row)
    if not rows:
        raise RunError(f"{path}: empty; the run has not finished an epoch yet")
    return rows

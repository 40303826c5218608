"""A training run on disk: the files beside ``--out`` and how a run starts or resumes.

For ``--out checkpoints/mnist-mlp.npz``:

- ``checkpoints/mnist-mlp.npz``: the best epoch by validation accuracy (for eval, predict);
- ``checkpoints/mnist-mlp.last.npz``: the latest state with optimiser and RNG (for --resume);
- ``checkpoints/mnist-mlp.metrics.jsonl``: one JSON object per finished epoch.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoint
from .atomic import write_bytes_atomic
from .config import ConfigError, TrainConfig, coerce, resolve
from .data import PIXEL_SCALE, checksums
from .network import MLP
from .train import Reporter, Trainer, TrainState

def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist-mlp")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RunFiles:
    """The three files of a run, named from the best checkpoint's path."""

    best: Path

    def check_writable(self) -> None:
        """Create the folder and try a file there, so a bad --out fails before training.

        Raises:
            OSError: the folder cannot be made or written to.
        """
        self.best.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.best.parent):
            pass

    @property
    def last(self) -> Path:
        return self.best.with_name(self.best.stem + ".last.npz")

    @property
    def metrics(self) -> Path:
        return self.best.with_name(self.best.stem + ".metrics.jsonl")


def _meta(trainer: Trainer) -> dict[str, Any]:
    st = trainer.state
    return {
        "package_version": package_version(),
        "input_scale": PIXEL_SCALE,  # X = pixels / input_scale, white ink on black
        "config": trainer.cfg.to_dict(),
        "epoch": st.epoch,
        "metrics": st.history[-1] if st.history else {},
        "data_sha256": checksums(),
    }


def save_best(files: RunFiles, trainer: Trainer) -> None:
    checkpoint.save(files.best, trainer.net, _meta(trainer))


def save_last(files: RunFiles, trainer: Trainer) -> None:
    """The resumable state: parameters, optimiser state, RNG state, position in the epoch."""
    st = trainer.state
    extra = {"order": st.order} if st.order is not None else {}
    checkpoint.save(files.last, trainer.net, {**_meta(trainer), "train_state": st.to_meta()},
                    trainer.optimizer.state_dict(), extra)


def write_metrics(files: RunFiles, history: list[dict[str, Any]]) -> None:
    """Rewrite the metrics log from the run's history, so it always matches the checkpoints."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_bytes_atomic(files.metrics, text.encode())


class CheckpointReporter(Reporter):
    """After each epoch: metrics log, last checkpoint, and the best one when it improved."""

    def __init__(self, files: RunFiles, trainer: Trainer, display: Reporter):
        self.files, self.trainer, self.display = files, trainer, display

    def epoch_start(self, epoch, n_samples, done):
        self.display.epoch_start(epoch, n_samples, done)

    def batch_end(self, n, loss):
        self.display.batch_end(n, loss)

    def epoch_end(self, row, state, improved):
        if improved:
            save_best(self.files, self.trainer)
        save_last(self.files, self.trainer)
        write_metrics(self.files, state.history)
        self.display.epoch_end(row, state, improved)


def new_trainer(cfg: TrainConfig, n_train: int) -> Trainer:
    return Trainer(cfg, MLP(cfg.sizes, seed=cfg.seed), n_train)


RESUME_OVERRIDABLE = ("epochs", "patience")


@dataclass
class SavedRun:
    """A run read back from its last checkpoint, ready to continue."""

    cfg: TrainConfig
    ckpt: checkpoint.Checkpoint
    state: TrainState

    def trainer(self, n_train: int) -> Trainer:
        trainer = Trainer(self.cfg, self.ckpt.net, n_train, self.state)
        try:
            trainer.optimizer.load_state_dict(self.ckpt.optimizer_state)
        except ValueError as exc:
            raise checkpoint.CheckpointError(f"saved optimiser state: {exc}") from None
        return trainer


def load_saved_run(files: RunFiles, overrides: dict[str, Any]) -> SavedRun:
    """Read the run saved in ``files.last``; only ``epochs`` and ``patience`` may change.

    ``overrides`` are the flags given; those equal to the saved values are fine.

    Raises:
        checkpoint.CheckpointError: the last checkpoint is missing or unusable.
        ConfigError: an override of something fixed by the saved run.
    """
    ckpt = checkpoint.load(files.last)
    try:
        saved = {k: coerce(k, v) for k, v in ckpt.meta["config"].items()}
        state = TrainState.from_meta(ckpt.meta["train_state"], ckpt.extra.get("order"))
    except (KeyError, TypeError, ConfigError) as exc:
        raise checkpoint.CheckpointError(
            f"{files.last}: not a resumable checkpoint ({exc})") from None
    changed = sorted(k for k, v in overrides.items()
                     if k not in RESUME_OVERRIDABLE and saved.get(k) != v)
    if changed:
        raise ConfigError(f"--resume continues the saved run with its own config; only "
                          f"{', '.join(RESUME_OVERRIDABLE)} may change, not {', '.join(changed)}")
    cfg = resolve(saved, {k: overrides[k] for k in RESUME_OVERRIDABLE if k in overrides})
    if cfg.sizes != ckpt.net.sizes:
        raise checkpoint.CheckpointError(f"{files.last}: layer sizes {ckpt.net.sizes} do not "
                                         f"match its config {cfg.sizes}")
    return SavedRun(cfg, ckpt, state)

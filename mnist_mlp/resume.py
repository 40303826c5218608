"""A saved run read back: its config, and its resumable state checked before it is trusted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .config import ConfigError, TrainConfig, coerce, resolve
from .dataset import DataSource
from .records import TrainState
from .runfiles import RunError, RunFiles
from .train import Trainer

RESUME_OVERRIDABLE = ("epochs", "patience")


def saved_config(meta: dict[str, Any]) -> TrainConfig:
    """The config a checkpoint was trained with, checked as a config file would be.

    Raises:
        ConfigError: missing, or a value of the wrong type or out of range.
    """
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise ConfigError("it holds no training config")
    return resolve({k: coerce(k, v) for k, v in saved.items()})


def evaluation_split(meta: dict[str, Any], split: str, source: DataSource
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels uint8 (n, 28, 28) and labels int64 (n,) to score a model on: the test set, or
    its own run's train or val split (held out as that run held it out).

    Raises:
        RunError: its saved config is unusable for the train/val split, or it had no
            validation split.
        mnist.DataError: MNIST missing or damaged.
    """
    val_size = 0
    if split != "test":
        try:
            val_size = saved_config(meta).val_size
        except ConfigError as exc:
            raise RunError(f"its training config is unusable ({exc}); only the test split "
                           "can score it") from None
    try:
        return source.load(split, val_size=val_size, flat=False)
    except ValueError as exc:
        raise RunError(str(exc)) from None


@dataclass
class SavedRun:
    """A run read back from its last checkpoint and checked, ready to continue."""

    cfg: TrainConfig
    ckpt: checkpoint.Checkpoint
    state: TrainState

    def trainer(self, n_train: int) -> Trainer:
        """The trainer of the saved run, its optimiser and weight average restored.

        Raises:
            checkpoint.CheckpointError: a saved state that does not fit the run.
        """
        trainer = Trainer(self.cfg, self.ckpt.net, n_train, self.state)
        try:
            trainer.optimizer.load_state_dict(self.ckpt.optimizer_state)
        except ValueError as exc:
            raise checkpoint.CheckpointError(f"saved optimiser state: {exc}") from None
        average = {k[4:]: v for k, v in self.ckpt.extra.items() if k.startswith("ema.")}
        if trainer.average is not None:
            try:
                trainer.average.load_state_dict(average)
            except ValueError as exc:
                raise checkpoint.CheckpointError(f"saved weight average: {exc}") from None
        elif average:
            raise checkpoint.CheckpointError("a weight average is saved but the run has "
                                             "no --ema")
        return trainer


@dataclass(frozen=True)
class ResumedConfig:
    """What a resumed run continues with, read from its last checkpoint."""

    cfg: TrainConfig
    preset: str
    init: Path | None


def resumed_config(files: RunFiles, given: Mapping[str, Any]) -> ResumedConfig:
    """The saved run's config, with epochs and patience as ``given``; its preset and
    starting weights. ``given`` are the values given (file and flags); those equal to the
    saved ones are fine.

    Raises:
        checkpoint.CheckpointError: the last checkpoint missing, or its config unusable.
        ConfigError: a value given of something fixed by the saved run.
    """
    meta = checkpoint.load(files.last).meta
    try:
        cfg = saved_config(meta)
    except ConfigError as exc:
        raise checkpoint.CheckpointError(
            f"{files.last}: not a resumable checkpoint ({exc})") from None
    saved = cfg.to_dict()
    changed = sorted(k for k, v in given.items() if k not in RESUME_OVERRIDABLE
                     and saved[k] != (list(v) if isinstance(v, tuple) else v))
    if changed:
        raise ConfigError(f"--resume continues the saved run with its own config; only "
                          f"{', '.join(RESUME_OVERRIDABLE)} may change, not {', '.join(changed)}")
    cfg = resolve({}, {k: given[k] for k in RESUME_OVERRIDABLE if k in given}, cfg)
    preset, init = meta.get("preset"), meta.get("init")
    return ResumedConfig(cfg, preset if isinstance(preset, str) else "flags",
                         Path(init) if isinstance(init, str) else None)


def load_saved_run(files: RunFiles, cfg: TrainConfig, source: DataSource) -> SavedRun:
    """Read and check the run saved in ``files.last``, to continue as ``cfg`` (its own
    config, but for epochs and patience: ``resumed_config``).

    Raises:
        checkpoint.CheckpointError: the last checkpoint is missing or unusable, was
            trained on other data than ``source`` holds, or is no longer the run ``cfg``
            was read from.
    """
    ckpt = checkpoint.load(files.last, with_state=True)
    try:
        saved = saved_config(ckpt.meta)
        state = TrainState.from_meta(ckpt.meta.get("train_state"), ckpt.extra.get("order"),
                                     source.n_train - saved.val_size, saved.batch_size)
    except (ConfigError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"{files.last}: not a resumable checkpoint ({exc})") from None
    if saved.sizes != ckpt.net.sizes:
        raise checkpoint.CheckpointError(f"{files.last}: layer sizes {ckpt.net.sizes} do not "
                                         f"match its config {saved.sizes}")
    if ckpt.meta.get("data_sha256") != source.checksums():
        raise checkpoint.CheckpointError(f"{files.last}: its data checksums are not those of "
                                         "the MNIST files it would resume on")
    kept = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE}
    if resolve({}, kept, saved) != cfg:
        raise checkpoint.CheckpointError(f"{files.last}: replaced by another run meanwhile")
    return SavedRun(cfg, ckpt, state)

"""A saved run read back: its config, and its resumable state checked before it is trusted."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .config import ConfigError, TrainConfig, coerce, resolve
from .dataset import DataSource, extra_repeats
from .labelled import LabelledFolderError, LabelledImages
from .mnist import find_dataset
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
    """A run read back from its last checkpoint and checked, ready to continue: with its
    source, whose ``extra`` folders are the run's own, and their images, unchanged."""

    cfg: TrainConfig
    ckpt: checkpoint.Checkpoint
    state: TrainState
    source: DataSource
    extras: list[LabelledImages]

    @property
    def origin(self) -> dict[str, Any]:
        """What the run started from: its "init" checkpoint and "extra" folders."""
        return {"init": self.ckpt.meta.get("init"), "extra": self.ckpt.meta.get("extra", [])}

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
    """What a resumed run continues with, read from its last checkpoint: its config (epochs
    and patience as given), its preset, and its source: the config's dataset, the run's own
    --extra folders."""

    cfg: TrainConfig
    preset: str
    source: DataSource


def resumed_config(files: RunFiles, given: Mapping[str, Any], source: DataSource
                   ) -> ResumedConfig:
    """The saved run's config, with epochs and patience as ``given`` (the values given, file
    and flags; those equal to the saved ones are fine), its preset, and ``source`` made
    its own.

    Raises:
        checkpoint.CheckpointError: the last checkpoint missing, or its config unusable.
        ConfigError: a value given of something fixed by the saved run; other --extra
            folders than the run's own.
    """
    meta = checkpoint.load(files.last).meta
    try:
        cfg = saved_config(meta)
        folders = _saved_folders(meta)
    except (ConfigError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"{files.last}: not a resumable checkpoint ({exc})") from None
    saved = cfg.to_dict()
    changed = sorted(k for k, v in given.items() if k not in RESUME_OVERRIDABLE
                     and saved[k] != (list(v) if isinstance(v, tuple) else v))
    if changed:
        raise ConfigError(f"--resume continues the saved run with its own config; only "
                          f"{', '.join(RESUME_OVERRIDABLE)} may change, not {', '.join(changed)}")
    if source.extra and source.extra != folders:
        raise ConfigError(f"--resume continues with the run's own --extra folders "
                          f"({', '.join(map(str, folders)) or 'none'})")
    cfg = resolve({}, {k: given[k] for k in RESUME_OVERRIDABLE if k in given}, cfg)
    preset = meta.get("preset")
    return ResumedConfig(cfg, preset if isinstance(preset, str) else "flags",
                         dataclasses.replace(source.with_dataset(find_dataset(cfg.dataset)),
                                             extra=folders))


def load_saved_run(files: RunFiles, cfg: TrainConfig, source: DataSource) -> SavedRun:
    """Read and check the run saved in ``files.last``, to continue as ``cfg`` on ``source``
    (its own config but for epochs and patience, and its own source: ``resumed_config``).

    Raises:
        checkpoint.CheckpointError: the last checkpoint is missing or unusable, was
            trained on other data than ``source`` holds, or is no longer the run ``cfg``
            was read from.
    """
    ckpt = checkpoint.load(files.last, with_state=True)
    try:
        saved = saved_config(ckpt.meta)
        extras = _saved_extras(ckpt.meta, source)
        n_extra = sum(len(e.labels) for e in extras)
        n_train = source.n_train - saved.val_size
        n_train += n_extra * extra_repeats(n_train, n_extra, saved.extra_share)
        state = TrainState.from_meta(ckpt.meta.get("train_state"), ckpt.extra.get("order"),
                                     n_train, saved.batch_size)
    except (ConfigError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"{files.last}: not a resumable checkpoint ({exc})") from None
    except LabelledFolderError as exc:
        raise checkpoint.CheckpointError(f"{files.last}: its --extra images: {exc}") from None
    if saved.sizes != ckpt.net.sizes:
        raise checkpoint.CheckpointError(f"{files.last}: layer sizes {ckpt.net.sizes} do not "
                                         f"match its config {saved.sizes}")
    if ckpt.meta.get("data_sha256") != source.checksums():
        raise checkpoint.CheckpointError(f"{files.last}: its data checksums are not those of "
                                         f"the {source.dataset.title} files it would resume on")
    kept = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE}
    if resolve({}, kept, saved) != cfg or _saved_folders(ckpt.meta) != source.extra:
        raise checkpoint.CheckpointError(f"{files.last}: replaced by another run meanwhile")
    return SavedRun(cfg, ckpt, state, source, extras)


def _saved_folders(meta: dict[str, Any]) -> tuple[Path, ...]:
    """The run's --extra folders, as its checkpoint records them.

    Raises:
        ValueError: not a list of records.
    """
    records = meta.get("extra", [])
    if not (isinstance(records, list) and all(
            isinstance(r, dict) and isinstance(r.get("folder"), str) for r in records)):
        raise ValueError("its extra folders are not a list of records")
    return tuple(Path(r["folder"]) for r in records)


def _saved_extras(meta: dict[str, Any], source: DataSource) -> list[LabelledImages]:
    """The images of ``source.extra`` (the run's own folders), which must be those the run
    started with.

    Raises:
        ValueError: changed images.
        LabelledFolderError: a folder that can no longer be read.
    """
    extras = source.load_extra()
    for found, record in zip(extras, meta.get("extra", [])):
        if found.record() != record:
            raise ValueError(f"the images in {found.folder} changed since the run started "
                             f"({record.get('count')} then, {len(found.labels)} now); put "
                             "them back, or start a new run")
    return extras

"""A training run on disk: its files, its lock, and how it starts, resumes and stops.

For ``--out checkpoints/mnist-mlp.npz``:

- ``checkpoints/mnist-mlp.npz``: the best epoch by validation accuracy (the last
  epoch when there is no validation split), for eval, predict and serve;
- ``checkpoints/mnist-mlp.last.npz``: the latest state with optimiser and RNG (for resume);
- ``checkpoints/mnist-mlp.metrics.jsonl``: one JSON object per finished epoch;
- ``checkpoints/mnist-mlp.curves.png``: the training curves, redrawn each epoch;
- ``checkpoints/mnist-mlp.lock``: held while a process trains this run.

``train`` is the whole job of ``mlp train``: config, lock, new or resumed
run, data, the training loop with its callbacks, and a clean stop on SIGINT
or SIGTERM with the resumable state saved.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoint, data
from .config import (ConfigError, TrainConfig, coerce, find_preset, load_config_file,
                     resolve)
from .files import (LockHeld, exclusive_lock, read_bounded, remove_stale_parts,
                    write_bytes_atomic, write_target)
from .network import MLP
from .train import Callback, Trainer, TrainState, is_history_row

RESUME_OVERRIDABLE = ("epochs", "patience")
BYTES_PER_FLOAT = 4


class RunError(Exception):
    """A run that cannot start or go on: locked, already there, too big, unwritable."""


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist-mlp")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RunFiles:
    """The files of a run, named from the best checkpoint's path."""

    best: Path

    def _beside(self, suffix: str) -> Path:
        return self.best.with_name(self.best.stem + suffix)

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
        return self.best, self.last, self.metrics, self.curves


# ---------------------------------------------------------------- memory

def estimate_memory(cfg: TrainConfig, n_train: int, n_val: int) -> int:
    """Bytes a run of ``cfg`` needs at its peak, roughly (within ~20%).

    The data as float32 (and its uint8 source while it is read), the parameters
    with their gradients, work space and optimiser slots, and the activations
    of a training batch and of a validation chunk.
    """
    sizes = cfg.sizes
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    slots = (2 if cfg.optimizer.startswith("adam") else 1) + (2 if cfg.ema else 0)
    data_bytes = (n_train + n_val) * sizes[0] * (BYTES_PER_FLOAT + 1)
    param_bytes = params * BYTES_PER_FLOAT * (3 + slots)       # W, dW, scratch, slots, average
    batch = cfg.batch_size * sum(sizes) * BYTES_PER_FLOAT * 4  # Z/A, dA, masks, distortions
    chunk = MLP.predict_chunk * max(sizes) * BYTES_PER_FLOAT * 2
    return data_bytes + param_bytes + batch + chunk


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or the address-space limit."""
    import resource

    limit = math.inf
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limit = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    return int(limit)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory(cfg: TrainConfig, n_train: int, n_val: int) -> None:
    """Refuse, with the estimate, a run that cannot fit in memory.

    Raises:
        RunError: the estimate exceeds the memory available.
    """
    need, have = estimate_memory(cfg, n_train, n_val), available_memory()
    if need > have:
        raise RunError(f"a {'-'.join(map(str, cfg.sizes))} network with batch "
                       f"{cfg.batch_size} needs about {_size(need)}, more than the "
                       f"{_size(have)} of memory available; choose smaller layers")


# ---------------------------------------------------------------- saving

def _meta(trainer: Trainer, preset: str) -> dict[str, Any]:
    st = trainer.state
    return {
        "package_version": package_version(),
        "preset": preset,  # the --config the run started from, for titles
        "input_scale": data.PIXEL_SCALE,  # X = pixels / input_scale, white ink on black
        "config": trainer.cfg.to_dict(),
        "epoch": st.epoch,
        "metrics": st.history[-1] if st.history else {},
        "data_sha256": data.checksums(),
    }


def save_best(files: RunFiles, trainer: Trainer, preset: str) -> None:
    """The model of the epoch just ended: its weights, or their average if that is kept."""
    net = trainer.kept_net()
    checkpoint.save(files.best, net, {**_meta(trainer, preset),
                                      "averaged_weights": net is not trainer.net})


def save_last(files: RunFiles, trainer: Trainer, preset: str) -> None:
    """The resumable state: parameters, optimiser state, weight average, RNG state,
    position in the epoch."""
    st = trainer.state
    extra = {"order": st.order} if st.order is not None else {}
    if trainer.average is not None:
        extra.update({f"ema.{k}": v for k, v in trainer.average.state_dict().items()})
    checkpoint.save(files.last, trainer.net,
                    {**_meta(trainer, preset), "train_state": st.to_meta()},
                    trainer.optimizer.state_dict(), extra)


def write_metrics(files: RunFiles, history: list[dict[str, Any]]) -> None:
    """Rewrite the metrics log from the run's history, so it always matches the checkpoints."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_bytes_atomic(files.metrics, text.encode())


class CheckpointCallback(Callback):
    """After each epoch: the best checkpoint when it improved, the last one, the metrics log."""

    def __init__(self, files: RunFiles, preset: str):
        self.files, self.preset = files, preset

    def on_epoch_end(self, trainer, row, improved):
        if improved:
            save_best(self.files, trainer, self.preset)
        save_last(self.files, trainer, self.preset)
        write_metrics(self.files, trainer.state.history)


# ---------------------------------------------------------------- reading the log

MAX_LOG_BYTES = 64 << 20   # a metrics log is a few hundred bytes an epoch


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``.metrics.jsonl``, checked: one object per epoch, in order.

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


# ---------------------------------------------------------------- resuming

def new_trainer(cfg: TrainConfig, n_train: int) -> Trainer:
    return Trainer(cfg, MLP(cfg.sizes, seed=cfg.seed), n_train)


@dataclass
class SavedRun:
    """A run read back from its last checkpoint and checked, ready to continue."""

    cfg: TrainConfig
    ckpt: checkpoint.Checkpoint
    state: TrainState

    @property
    def preset(self) -> str:
        preset = self.ckpt.meta.get("preset")
        return preset if isinstance(preset, str) else "flags"

    def trainer(self, n_train: int) -> Trainer:
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


def saved_config(meta: dict[str, Any]) -> TrainConfig:
    """The config a checkpoint was trained with, checked as a config file would be.

    Raises:
        ConfigError: missing, or a value of the wrong type or out of range.
    """
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise ConfigError("it holds no training config")
    return resolve({k: coerce(k, v) for k, v in saved.items()})


def evaluation_split(ckpt: checkpoint.Checkpoint, split: str, data_dir: Path | None
                     ) -> tuple[Any, Any]:
    """X (n, 784), y (n,) to score ``ckpt`` on: the test set, or its own run's train or
    val split (held out as that run held it out).

    Raises:
        RunError: its saved config is unusable for the train/val split, or it had no
            validation split.
        data.DataError: MNIST missing or damaged.
    """
    val_size = 0
    if split != "test":
        try:
            val_size = saved_config(ckpt.meta).val_size
        except ConfigError as exc:
            raise RunError(f"its training config is unusable ({exc}); only the test split "
                           "can score it") from None
    try:
        return data.load_mnist(split, data_dir, val_size=val_size)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def load_saved_run(files: RunFiles, overrides: dict[str, Any]) -> SavedRun:
    """Read and check the run saved in ``files.last``; only epochs and patience may change.

    ``overrides`` are the values given (file and flags); those equal to the saved ones are fine.

    Raises:
        checkpoint.CheckpointError: the last checkpoint is missing or unusable.
        ConfigError: an override of something fixed by the saved run.
    """
    ckpt = checkpoint.load(files.last, with_state=True)
    try:
        cfg = saved_config(ckpt.meta)
        n_train = data.RESOURCES[0].count - cfg.val_size
        state = TrainState.from_meta(ckpt.meta.get("train_state"), ckpt.extra.get("order"),
                                     n_train, cfg.batch_size)
    except (ConfigError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"{files.last}: not a resumable checkpoint ({exc})") from None
    if cfg.sizes != ckpt.net.sizes:
        raise checkpoint.CheckpointError(f"{files.last}: layer sizes {ckpt.net.sizes} do not "
                                         f"match its config {cfg.sizes}")
    saved = cfg.to_dict()
    changed = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE
                     and saved[k] != (list(v) if isinstance(v, tuple) else v))
    if changed:
        raise ConfigError(f"--resume continues the saved run with its own config; only "
                          f"{', '.join(RESUME_OVERRIDABLE)} may change, not {', '.join(changed)}")
    cfg = resolve({}, {k: overrides[k] for k in RESUME_OVERRIDABLE if k in overrides}, cfg)
    return SavedRun(cfg, ckpt, state)


# ---------------------------------------------------------------- stopping

class StopSignals:
    """SIGINT and SIGTERM ask training to stop after the current step.

    Until ``armed`` (training has started) a signal interrupts at once, as
    usual: there is nothing to save yet. Once armed, signals are noted, not
    acted on, so the resumable state is always written whole, however many
    arrive. ``signum`` is the first one.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if not self.armed:
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self.signum = self.signum or signum

    def __call__(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopSignals":
        try:
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: the caller's should_stop is all there is
            pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def ignore_from_now(self) -> None:
        """Leave the signals ignored on exit: for a process that is about to end anyway."""
        self.previous = {s: signal.SIG_IGN for s in self.previous}


# ---------------------------------------------------------------- the job

@dataclass
class RunResult:
    """How a run ended: its files, config and state, and the signal that stopped it, if any."""

    files: RunFiles
    trainer: Trainer
    signum: int | None

    @property
    def finished(self) -> bool:
        return self.signum is None


@contextmanager
def _locked(files: RunFiles) -> Iterator[None]:
    try:
        files.best.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=files.best.parent):
            pass
        with exclusive_lock(files.lock):
            yield
    except LockHeld as exc:
        raise RunError(f"another mlp train ({exc.holder}) is running on {files.best}; wait "
                       "for it to finish, or choose another --out") from None


def _describe_existing(files: RunFiles) -> str:
    try:
        meta = checkpoint.load(files.last if files.last.exists() else files.best).meta
        cfg = meta.get("config", {})
        epochs = cfg.get("epochs") if isinstance(cfg, dict) else "?"
        return (f"a run of {'-'.join(map(str, meta['sizes']))}, epoch "
                f"{str(meta.get('epoch'))[:12]} of {str(epochs)[:12]}")
    except checkpoint.CheckpointError:
        return "a file that is not a readable checkpoint"


def train(out: Path, *, config: str | None = None, flags: dict[str, Any] | None = None,
          resume: bool = False, overwrite: bool = False, data_dir: Path | None = None,
          mirrors: tuple[str, ...] | None = None,
          download_deadline_s: float = data.DOWNLOAD_DEADLINE_S, progress: bool = True,
          plots: bool = True, callbacks: Sequence[Callback] = (),
          log: Callable[[str], None] = lambda line: None,
          signals: StopSignals | None = None) -> RunResult:
    """Train a new run, or resume the one at ``out``, until done or stopped by a signal.

    Args:
        out: the best checkpoint's path; the run's other files go beside it.
        config: a preset name or TOML path; ``flags`` override it (only epochs
            and patience may differ from a resumed run's own config).
        overwrite: replace a different run already at ``out``.
        plots: redraw ``NAME.curves.png`` after every epoch.
        callbacks: more epoch and batch hooks (a progress display), called last.
        log: receives a line for each file downloaded.
        signals: the caller's own, already entered ``StopSignals`` (so it can keep
            them until it exits); by default the run installs its own while training.

    Raises:
        ConfigError: a bad value (ConfigFileError: in the config file).
        RunError: locked by another process, a run already at ``out``, too
            big for memory, or an output that cannot be written (a full disk too).
        checkpoint.CheckpointError: nothing to resume, or an unusable last checkpoint.
        data.DataError: MNIST missing and not downloadable, or damaged.
        TrainingDiverged: the loss became NaN or infinite.
    """
    files = RunFiles(Path(out))
    flags = flags or {}
    file_values = load_config_file(find_preset(config)) if config else {}
    cfg = resolve(file_values, flags)
    try:
        for path in files.outputs:
            write_target(path)
    except OSError as exc:
        raise RunError(f"{exc.filename}: {exc.strerror}; refusing to replace it") from None
    try:
        with _locked(files):
            for path in files.outputs:
                remove_stale_parts(path)
            saved = load_saved_run(files, {**file_values, **flags}) if resume else None
            if saved is None and not overwrite and (files.best.exists() or files.last.exists()):
                raise RunError(f"{files.best} already holds {_describe_existing(files)}; "
                               "continue it with --resume, replace it with --overwrite, or "
                               "choose another --out")
            cfg = saved.cfg if saved else cfg
            n_all = data.RESOURCES[0].count
            check_memory(cfg, n_all - cfg.val_size, cfg.val_size)
            preset = saved.preset if saved else Path(config).stem if config else "flags"
            return _train(files, cfg, saved, preset, data_dir, mirrors, download_deadline_s,
                          progress, plots, callbacks, log, signals)
    except OSError as exc:  # the folder, or a full disk while saving
        raise RunError(f"cannot write checkpoints to {files.best.parent}: "
                       f"{exc.strerror or exc}") from None


def _train(files, cfg, saved, preset, data_dir, mirrors, deadline_s, progress, plots, callbacks,
           log, signals):
    folder = Path(data_dir) if data_dir is not None else data.default_data_dir()
    report = data.ensure_mnist(folder, mirrors, progress=progress, verify=False,
                               deadline_s=deadline_s)
    if summary := data.download_summary(report, folder):
        log(summary)
    X, y, X_val, y_val = data.load_train_val(folder, cfg.val_size)
    try:
        trainer = saved.trainer(len(X)) if saved else new_trainer(cfg, len(X))
    except checkpoint.CheckpointError as exc:
        raise checkpoint.CheckpointError(f"{files.last}: {exc}") from None
    hooks: list[Callback] = [CheckpointCallback(files, preset)]
    if plots:
        from .plots import CurvesCallback

        title = f"{'-'.join(map(str, cfg.sizes))} ({preset})"
        hooks.append(CurvesCallback(files.curves, title))
    with StopSignals() if signals is None else nullcontext(signals) as stop:
        stop.armed = True
        finished = trainer.fit(X, y, X_val, y_val, [*hooks, *callbacks], should_stop=stop)
        if not finished:
            save_last(files, trainer, preset)
    return RunResult(files, trainer, None if finished else stop.signum)

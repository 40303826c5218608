"""The job of ``mlp train``: lock, new or resumed run, memory check, data, the training
loop with its callbacks wired, and a clean stop on SIGINT or SIGTERM.

A run's files are described in ``runfiles``; a saved run is read back in ``resume``.
"""

from __future__ import annotations

import hashlib
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint, package_version
from .config import TrainConfig, find_preset, load_config_file, resolve
from .dataset import DataSource, extra_repeats, mix_in, to_input
from .files import LockHeld, exclusive_lock, remove_stale_parts, write_target
from .labelled import LabelledFolderError
from .memory import available_memory, show_size
from .mnist import PIXEL_SCALE, find_dataset
from .network import MLP
from .resume import SavedRun, load_saved_run
from .runfiles import RunError, RunFiles, write_metrics
from .train import Callback, Ending, Trainer, TrainingDiverged

BYTES_PER_FLOAT = 4


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


def check_memory(cfg: TrainConfig, n_train: int, n_val: int) -> None:
    """Refuse, with the estimate, a run that cannot fit in memory.

    Raises:
        RunError: the estimate exceeds the memory available.
    """
    need, have = estimate_memory(cfg, n_train, n_val), available_memory()
    if need > have:
        raise RunError(f"a {'-'.join(map(str, cfg.sizes))} network with batch "
                       f"{cfg.batch_size} needs about {show_size(need)}, more than the "
                       f"{show_size(have)} of memory available; choose smaller layers")


# ---------------------------------------------------------------- saving

class CheckpointCallback(Callback):
    """The run's files: after each epoch the kept model when it changed, the resumable
    state and the metrics log; the resumable state again when the run is stopped; the
    log rewritten from the saved history when a run resumes."""

    def __init__(self, files: RunFiles, preset: str, source: DataSource,
                 origin: dict[str, Any]):
        self.files, self.preset, self.source, self.origin = files, preset, source, origin
        self.saved_last = False  # whether this process wrote files.last

    def _meta(self, trainer: Trainer) -> dict[str, Any]:
        st = trainer.state
        return {
            "package_version": package_version(),
            "preset": self.preset,  # the --config the run started from, for titles
            "input_scale": PIXEL_SCALE,  # X = pixels / input_scale, white ink on black
            "config": trainer.cfg.to_dict(),
            "dataset": self.source.dataset.name,
            "class_names": list(self.source.dataset.class_names),
            "epoch": st.epoch,
            "metrics": st.history[-1] if st.history else {},
            "data_sha256": self.source.checksums(),
            **self.origin,  # "init": the checkpoint it started from; "extra": users' folders
        }

    def save_kept(self, trainer: Trainer) -> None:
        """The model of the epoch just ended: its weights, or their average if that is kept."""
        net = trainer.kept_net()
        checkpoint.save(self.files.kept, net, {**self._meta(trainer),
                                               "averaged_weights": net is not trainer.net})

    def save_last(self, trainer: Trainer) -> None:
        """The resumable state: parameters, optimiser state, weight average, RNG state,
        position in the epoch."""
        st = trainer.state
        extra = {"order": st.order} if st.order is not None else {}
        if trainer.average is not None:
            extra.update({f"ema.{k}": v for k, v in trainer.average.state_dict().items()})
        checkpoint.save(self.files.last, trainer.net,
                        {**self._meta(trainer), "train_state": st.to_meta()},
                        trainer.optimizer.state_dict(), extra)
        self.saved_last = True

    def on_train_begin(self, trainer):
        if trainer.state.history:  # a kill between the last save and its log line: mend it
            write_metrics(self.files.metrics, trainer.state.history)

    def on_epoch_end(self, trainer, row, kept):
        if kept:
            self.save_kept(trainer)
        self.save_last(trainer)
        write_metrics(self.files.metrics, trainer.state.history)

    def on_train_end(self, trainer, ending):
        if ending == "stopped":
            self.save_last(trainer)


# ---------------------------------------------------------------- stopping

class StopSignals:
    """SIGINT and SIGTERM ask training to stop after the current step.

    Until ``armed`` (training has started) a signal interrupts at once, as
    usual: there is nothing to save yet. Once armed, signals are noted, not
    acted on, so the resumable state is always written whole, however many
    arrive. ``signum`` is the first one. Outside the main thread it installs
    nothing and never fires.

    On exit the previous handlers come back, or, once armed, ``then`` if given: a
    command whose run has saved all there is passes SIG_IGN, since a signal while it
    exits would end it with a traceback (Python's finalisation puts back the default
    action for its own handlers, so "ignore" is what stays).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, then: Any = None):
        self.signum: int | None = None
        self.armed = False
        self.then = then
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
            signal.signal(s, self.then if self.armed and self.then is not None else handler)


def stop_signals(signals: StopSignals | None) -> AbstractContextManager[StopSignals]:
    """``signals``, already entered by a caller, or new StopSignals to enter here."""
    return StopSignals() if signals is None else nullcontext(signals)


# ---------------------------------------------------------------- the job

@dataclass
class RunResult:
    """How a run ended: its files, trainer (config and state), "finished" or "stopped",
    and the signal that stopped it, if one did (None when ``should_stop`` did)."""

    files: RunFiles
    trainer: Trainer
    ending: Ending
    signum: int | None


@contextmanager
def _locked(files: RunFiles) -> Iterator[None]:
    try:
        files.kept.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=files.kept.parent):
            pass
        with exclusive_lock(files.lock):
            yield
    except LockHeld as exc:
        raise RunError(f"another mlp train ({exc.holder}) is running on {files.kept}; wait "
                       "for it to finish, or choose another --out") from None


def weights_sha256(net: MLP) -> str:
    """SHA-256 of a network's parameters, W then b, layer by layer: what a run started from."""
    digest = hashlib.sha256()
    for p in net.params:
        digest.update(np.ascontiguousarray(p).tobytes())
    return digest.hexdigest()


def _check_start(init: Path, start: checkpoint.Checkpoint, cfg: TrainConfig) -> None:
    """A starting network must be the run's shape, dataset and input scale.

    Raises:
        RunError: it is not.
    """
    sizes = "-".join(map(str, start.net.sizes))
    if start.net.sizes != cfg.sizes:
        raise RunError(f"--init {init}: a {sizes} network, but the run's is "
                       f"{'-'.join(map(str, cfg.sizes))}; leave out --hidden, or give its own")
    if start.meta.get("dataset", "mnist") != cfg.dataset:
        raise RunError(f"--init {init}: trained on {start.meta.get('dataset', 'mnist')}, not "
                       f"{cfg.dataset}")
    if start.net.input_scale != PIXEL_SCALE:
        raise RunError(f"--init {init}: takes pixels / {start.net.input_scale:g}; training "
                       f"gives pixels / {PIXEL_SCALE:g}")


def _extras(source: DataSource) -> list:
    """The images of ``source.extra``.

    Raises:
        RunError: a folder with no usable image.
    """
    try:
        return source.load_extra()
    except LabelledFolderError as exc:
        raise RunError(f"--extra {exc}") from None


def _describe_existing(files: RunFiles) -> str:
    try:
        meta = checkpoint.load(files.last if files.last.exists() else files.kept).meta
        cfg = meta.get("config", {})
        epochs = cfg.get("epochs") if isinstance(cfg, dict) else "?"
        return (f"a run of {'-'.join(map(str, meta['sizes']))}, epoch "
                f"{str(meta.get('epoch'))[:12]} of {str(epochs)[:12]}")
    except checkpoint.CheckpointError:
        return "a file that is not a readable checkpoint"


def train(out: Path, *, config: str | Path | None = None,
          flags: dict[str, Any] | None = None, resume: bool = False, overwrite: bool = False,
          source: DataSource | None = None, progress: bool = True, plots: bool = True,
          callbacks: Sequence[Callback] = (), log: Callable[[str], None] = lambda line: None,
          should_stop: Callable[[], bool] = lambda: False,
          signals: StopSignals | None = None, init: Path | None = None) -> RunResult:
    """Train a new run, or resume the one at ``out``, until done or stopped.

    SIGINT and SIGTERM (in the main thread) stop the run after the current step with
    its resumable state saved, as ``should_stop`` returning True does.

    Args:
        out: the kept model's path; the run's other files go beside it.
        config: a preset name or TOML path; ``flags`` override it (only epochs
            and patience may differ from a resumed run's own config). None: the
            dataset's default preset (flags' ``dataset``, MNIST by default).
        overwrite: replace a different run already at ``out``.
        source: where the data comes from; ``DataSource.from_env()`` by default, made
            the config's dataset's (``DataSource.with_dataset``).
        progress: download progress bars on stderr.
        plots: redraw ``NAME.curves.png`` after every epoch.
        callbacks: more hooks (a progress display, a pruner), called after the run's own.
        log: receives a line for each file downloaded.
        should_stop: polled after each step and epoch; True stops the run there.
        signals: the caller's entered StopSignals, armed here as training starts (so a
            signal after the run is seen by the caller); by default the run holds its own.
        init: a checkpoint whose weights a new run starts from (its hidden sizes unless
            flags give them); ``source.extra`` folders are mixed into every epoch.

    Raises:
        ConfigError: a bad value (ConfigFileError: in the config file).
        RunError: locked by another process, a run already at ``out``, too
            big for memory, or an output that cannot be written (a full disk too).
        checkpoint.CheckpointError: nothing to resume, or an unusable last checkpoint.
        mnist.DataError: MNIST missing and not downloadable, or damaged.
        TrainingDiverged: the loss became NaN or infinite.
    """
    files = RunFiles(Path(out))
    source = source or DataSource.from_env()
    flags = flags or {}
    if config is None and not resume and flags.get("dataset", "mnist") != "mnist":
        config = find_dataset(flags["dataset"]).default_preset
    file_values = load_config_file(find_preset(str(config))) if config else {}
    start = checkpoint.load(init) if init is not None and not resume else None
    if start is not None and "hidden" not in flags:
        flags = {**flags, "hidden": tuple(start.net.sizes[1:-1])}
    cfg = resolve(file_values, flags)
    if start is not None:
        _check_start(init, start, cfg)
    try:
        for path in files.outputs:
            write_target(path)
    except OSError as exc:
        raise RunError(f"{exc.filename}: {exc.strerror}; refusing to replace it") from None
    try:
        with _locked(files):
            for path in files.outputs:
                remove_stale_parts(path)
            saved = load_saved_run(files, {**file_values, **flags}, source) if resume else None
            if saved is None and not overwrite and (files.kept.exists() or files.last.exists()):
                raise RunError(f"{files.kept} already holds {_describe_existing(files)}; "
                               "continue it with --resume, replace it with --overwrite, or "
                               "choose another --out")
            cfg = saved.cfg if saved else cfg
            source = saved.source if saved else source.with_dataset(find_dataset(cfg.dataset))
            extras = saved.extras if saved else _extras(source)
            n_extra = sum(len(e.labels) for e in extras)
            n_train = source.n_train - cfg.val_size
            check_memory(cfg, n_train + n_extra * extra_repeats(n_train, n_extra,
                                                                cfg.extra_share), cfg.val_size)
            preset = saved.preset if saved else Path(config).stem if config else "flags"
            origin = (saved.origin if saved else
                      {"init": None if start is None else {"model": str(init),
                                                           "sha256": weights_sha256(start.net)},
                       "extra": [e.record() for e in extras]})
            return _train(files, cfg, saved, preset, source, progress, plots, callbacks, log,
                          should_stop, signals, start, extras, origin)
    except OSError as exc:  # the folder, or a full disk while saving
        raise RunError(f"cannot write checkpoints to {files.kept.parent}: "
                       f"{exc.strerror or exc}") from None


def _train(files: RunFiles, cfg: TrainConfig, saved: SavedRun | None, preset: str,
           source: DataSource, progress: bool, plots: bool, callbacks: Sequence[Callback],
           log: Callable[[str], None], should_stop: Callable[[], bool],
           signals: StopSignals | None, start, extras, origin) -> RunResult:
    report = source.ensure(progress=progress, verify=False)
    if summary := source.summary(report):
        log(summary)
    X, y, X_val, y_val = source.load_train_val(cfg.val_size)
    if extras:
        X, y = mix_in(X, y, to_input(np.concatenate([e.pixels for e in extras])),
                      np.concatenate([e.labels for e in extras]), cfg.extra_share)
    try:
        trainer = saved.trainer(len(X)) if saved else Trainer(
            cfg, start.net if start else MLP(cfg.sizes, seed=cfg.seed), len(X))
    except checkpoint.CheckpointError as exc:
        raise checkpoint.CheckpointError(f"{files.last}: {exc}") from None
    saving = CheckpointCallback(files, preset, source, origin)
    hooks: list[Callback] = [saving]
    if plots:
        from .plots import CurvesCallback

        hooks.append(CurvesCallback(files.curves, f"{'-'.join(map(str, cfg.sizes))} ({preset})"))
    with stop_signals(signals) as stop:
        stop.armed = True
        try:
            ending = trainer.fit(X, y, X_val, y_val, [*hooks, *callbacks],
                                 should_stop=lambda: stop() or should_stop())
        except TrainingDiverged as exc:
            if saving.saved_last:
                raise TrainingDiverged(f"{exc}; the last good checkpoint is "
                                       f"{files.last}") from None
            raise
    return RunResult(files, trainer, ending, stop.signum)

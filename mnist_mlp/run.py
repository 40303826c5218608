"""A training run: its specification (``RunSpec``, one value built by ``build_spec``) and
its execution (``Run``: the lock, a new or resumed trainer, the memory check, the data,
the run's own callbacks, and a clean stop on SIGINT or SIGTERM).

A run's files are described in ``runfiles``, its records in ``records``; a saved run is
read back in ``resume``.
"""

from __future__ import annotations

import errno
import hashlib
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import checkpoint, package_version
from .config import TrainConfig, builtin_preset, find_preset, load_config_file, resolve
from .dataset import DataSource, extra_repeats, mix_in, to_input
from .files import LockHeld, exclusive_lock, remove_stale_parts, write_target
from .labelled import LabelledFolderError, LabelledImages
from .memory import available_memory, show_size
from .mnist import PIXEL_SCALE, find_dataset
from .network import MLP
from .records import run_title
from .resume import SavedRun, load_saved_run, resumed_config
from .runfiles import RunError, RunFiles, write_metrics
from .train import Callback, Ending, Trainer, TrainingDiverged

BYTES_PER_FLOAT = 4

Mode = Literal["new", "resume", "overwrite"]


# ---------------------------------------------------------------- the specification

@dataclass(frozen=True)
class RunSpec:
    """Everything a run is: what it trains, on what, from what, and where it is saved.

    ``start``: "new" refuses a run already at ``out``, "overwrite" replaces it, "resume"
    continues it (``cfg`` and ``data`` are then the saved run's, with epochs and patience
    as given).
    """

    cfg: TrainConfig
    data: DataSource                # the dataset, its files, and users' --extra folders
    out: Path                       # the kept model; the run's other files go beside it
    start: Mode = "new"
    preset: str = "flags"           # the --config the run started from, for titles
    init: Path | None = None        # starting weights (a checkpoint); None: fresh ones
    threads: int | None = None      # BLAS threads while training; None: the BLAS's own

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.out)


@dataclass(frozen=True)
class Start:
    """How a run begins: ``mode`` (a new run, one replacing the run at ``out``, or that
    run resumed) and, for a new run, ``init``: a checkpoint whose weights it starts from."""

    mode: Mode = "new"
    init: Path | None = None


def build_spec(out: Path, config: str | Path | TrainConfig | None = None,
               flags: Mapping[str, Any] | None = None, *, data: DataSource | None = None,
               start: Start = Start()) -> RunSpec:
    """The spec of a run at ``out``: built-in defaults, then ``config`` (a preset name, a
    TOML path, or a whole TrainConfig; without it, the default preset of the flags'
    dataset), then ``flags``; hidden sizes those of ``start.init`` unless given. To
    resume, the saved run's config and data, which the values given may only repeat, but
    for epochs and patience.

    ``threads`` is a field to set on the result (``dataclasses.replace``).

    Raises:
        ConfigError: a bad value (ConfigFileError: in the config file); with resume, a
            value given that the saved run fixes.
        RunError: ``init`` of another shape, dataset or input scale.
        checkpoint.CheckpointError: ``init`` unreadable; with resume, nothing saved to
            resume, or unusable.
    """
    data = data or DataSource.from_env()
    flags = dict(flags or {})
    if config is None and start.mode != "resume":     # the packaged one, not ./configs'
        config = builtin_preset(find_dataset(flags.get("dataset", "mnist")).default_preset)
    init = checkpoint.load(start.init) if start.init and start.mode != "resume" else None
    if init is not None and "hidden" not in flags:
        flags["hidden"] = tuple(init.net.sizes[1:-1])
    if isinstance(config, TrainConfig):
        given, preset = {**config.to_dict(), **flags}, "flags"
        cfg = resolve({}, flags, config)
    else:
        file_values = load_config_file(find_preset(str(config))) if config else {}
        given, preset = {**file_values, **flags}, Path(config).stem if config else "flags"
        cfg = resolve(file_values, flags)
    if start.mode == "resume":
        saved = resumed_config(RunFiles(Path(out)), given, data)
        return RunSpec(saved.cfg, saved.source, Path(out), "resume", saved.preset)
    if init is not None:
        _check_start(start.init, init, cfg)
    return RunSpec(cfg, data.with_dataset(find_dataset(cfg.dataset)), Path(out), start.mode,
                   preset, start.init)


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


# ---------------------------------------------------------------- memory

def estimate_memory(cfg: TrainConfig, n_train: int, n_val: int, n_mixed: int = 0) -> int:
    """Bytes a run of ``cfg`` needs at its peak, roughly (within ~20%).

    The data as float32 beside its uint8 source while it is read, or, with ``n_mixed`` rows
    of users' repeated images, the split beside its mixed copy if that is more; the
    parameters with their gradients, work space and optimiser slots; and the activations of
    a training batch and of a validation chunk.
    """
    sizes = cfg.sizes
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    slots = (2 if cfg.optimizer.startswith("adam") else 1) + (2 if cfg.ema else 0)
    data_bytes = sizes[0] * max((n_train + n_val) * (BYTES_PER_FLOAT + 1),
                                (2 * n_train + n_mixed + n_val) * BYTES_PER_FLOAT
                                if n_mixed else 0)
    param_bytes = params * BYTES_PER_FLOAT * (3 + slots)       # W, dW, scratch, slots, average
    batch = cfg.batch_size * sum(sizes) * BYTES_PER_FLOAT * 4  # Z/A, dA, masks, distortions
    chunk = MLP.predict_chunk * max(sizes) * BYTES_PER_FLOAT * 2
    return data_bytes + param_bytes + batch + chunk


def check_memory(cfg: TrainConfig, n_train: int, n_val: int, n_mixed: int = 0) -> None:
    """Refuse, with the estimate, a run that cannot fit in memory.

    Raises:
        RunError: the estimate exceeds the memory available.
    """
    need, have = estimate_memory(cfg, n_train, n_val, n_mixed), available_memory()
    if need > have:
        mixed = (f" ({n_mixed:,} rows of repeated --extra images)" if n_mixed else "")
        advice = "a smaller --extra-share or smaller layers" if n_mixed else "smaller layers"
        raise RunError(f"a {'-'.join(map(str, cfg.sizes))} network with batch "
                       f"{cfg.batch_size}{mixed} needs about {show_size(need)}, more than the "
                       f"{show_size(have)} of memory available; choose {advice}")


# ---------------------------------------------------------------- the run's callbacks

class CheckpointCallback(Callback):
    """The run's files: after each epoch the kept model when it changed, the resumable
    state and the metrics log; the resumable state again when the run is stopped; the
    log rewritten from the saved history when a run resumes."""

    def __init__(self, spec: RunSpec, origin: dict[str, Any]):
        self.spec, self.files, self.origin = spec, spec.files, origin
        self.saved_last = False  # whether this process wrote files.last

    def _meta(self, trainer: Trainer) -> dict[str, Any]:
        state = trainer.state
        return {
            "package_version": package_version(),
            "preset": self.spec.preset,  # the --config the run started from, for titles
            "input_scale": PIXEL_SCALE,  # X = pixels / input_scale, white ink on black
            "config": trainer.cfg.to_dict(),
            "dataset": self.spec.data.dataset.name,
            "class_names": list(self.spec.data.dataset.class_names),
            "epoch": state.epoch,
            "metrics": state.history[-1] if state.history else {},
            "data_sha256": self.spec.data.checksums(),
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
        state = trainer.state
        extra = {"order": state.order} if state.order is not None else {}
        if trainer.average is not None:
            extra.update({f"ema.{k}": v for k, v in trainer.average.state_dict().items()})
        checkpoint.save(self.files.last, trainer.net,
                        {**self._meta(trainer), "train_state": state.to_meta()},
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


class CurvesCallback(Callback):
    """Redraws a run's curves after every epoch, on one figure updated in place."""

    def __init__(self, path: Path, title: str):
        from .plots import CurvesFigure

        self.path, self.figure = path, CurvesFigure(title)

    def on_epoch_end(self, trainer, row, kept):
        from .plots import save_figure

        save_figure(self.figure.update(trainer.state.history), self.path)


# ---------------------------------------------------------------- stopping

class StopSignals:
    """SIGINT and SIGTERM ask training to stop after the current step.

    Until armed (training has started) a signal interrupts at once, as usual:
    there is nothing to save yet. Once armed, signals are noted, not acted on, so
    the resumable state is always written whole, however many arrive (also after
    training, while the stopped run finishes). ``signum`` is the first one. Outside the
    main thread it installs nothing and never fires.

    On exit the previous handlers come back, or, if it was ever armed, ``then`` if given: a
    command whose run has saved all there is passes SIG_IGN, since a signal while it
    exits would end it with a traceback (Python's finalisation puts back the default
    action for its own handlers, so "ignore" is what stays).

    Made, armed and restored here only: by ``Run``, and by ``held_signals`` for a caller
    that runs several (a sweep).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, then: Any = None):
        self.signum: int | None = None
        self.armed = False
        self.was_armed = False
        self.then = then
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if not self.armed and self.signum is None:  # a stop already asked for: still noted
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
            signal.signal(s, self.then if self.was_armed and self.then is not None else handler)

    @contextmanager
    def holding(self) -> Iterator["StopSignals"]:
        """Armed for the block (training, whose state must be saved whole), as before after
        it: a sweep holds signals while its trials run and acts on them at once while it
        reads its space or writes its results, where there is nothing to save."""
        was, self.armed, self.was_armed = self.armed, True, True
        try:
            yield self
        finally:
            self.armed = was


def held_signals(then: Any = None) -> StopSignals:
    """SIGINT and SIGTERM for a caller that runs several runs (a sweep), to enter and hand
    to each ``Run``: acted on at once until ``holding``, noted while held."""
    return StopSignals(then)


# ---------------------------------------------------------------- the run

def _silent(line: str) -> None:
    pass


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Hooks:
    """What a caller hears of a run and how it may end it early."""

    progress: bool = True                          # download progress bars on stderr
    plots: bool = True                             # redraw NAME.curves.png each epoch
    callbacks: Sequence[Callback] = ()             # called after the run's own
    note: Callable[[str], None] = _silent          # a line for each file downloaded
    should_stop: Callable[[], bool] = _never       # polled after each step and epoch


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


def _describe_existing(files: RunFiles) -> str:
    try:
        meta = checkpoint.load(files.last if files.last.exists() else files.kept).meta
        cfg = meta.get("config", {})
        epochs = cfg.get("epochs") if isinstance(cfg, dict) else "?"
        return (f"a run of {'-'.join(map(str, meta['sizes']))}, epoch "
                f"{str(meta.get('epoch'))[:12]} of {str(epochs)[:12]}")
    except checkpoint.CheckpointError:
        return "a file that is not a readable checkpoint"


def _extras(source: DataSource, should_stop: Callable[[], bool]) -> list[LabelledImages]:
    """The images of ``source.extra``.

    Raises:
        RunError: a folder with no usable image.
        labelled.ReadStopped: ``should_stop`` said so while they were read.
    """
    try:
        return source.load_extra(should_stop)
    except LabelledFolderError as exc:
        raise RunError(f"--extra {exc}") from None


class Run:
    """A run of ``spec``, as a context manager: entering it takes the run's lock and reads
    a resumed run's state; ``fit`` trains until done or stopped; leaving releases both the
    lock and the signal handlers.

    SIGINT and SIGTERM (in the main thread) interrupt as usual until training starts,
    then stop the run after the current step with its resumable state saved, as
    ``hooks.should_stop`` returning True does. ``signals``: a caller's ``held_signals``,
    used instead of the run's own; ``then``: the handler left once the run has trained
    (SIG_IGN for a command about to exit), else the previous ones come back.
    """

    def __init__(self, spec: RunSpec, hooks: Hooks = Hooks(),
                 signals: StopSignals | None = None, then: Any = None):
        self.spec, self.hooks = spec, hooks
        self.files = spec.files
        self.own_signals = signals is None
        self.signals = StopSignals(then) if signals is None else signals
        self.saved: SavedRun | None = None
        self.extras: list[LabelledImages] = []   # users' images mixed into training
        self._stack = ExitStack()

    def __enter__(self) -> "Run":
        """Raises:
            RunError: locked by another process, a run already at ``out``, too big
                for memory, an output that cannot be written, or an ``extra`` folder
                with no usable image.
            checkpoint.CheckpointError: nothing to resume, or an unusable last checkpoint.
            ConfigError: the saved run changed since ``spec`` was built from it.
            labelled.ReadStopped: ``hooks.should_stop`` said so while ``extra`` was read.
        """
        with ExitStack() as stack:
            if self.own_signals:
                stack.enter_context(self.signals)
            self._enter_locked(stack)
            self._stack = stack.pop_all()
        return self

    def _enter_locked(self, stack: ExitStack) -> None:
        files, spec = self.files, self.spec
        try:
            for path in files.outputs:
                write_target(path)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise RunError(f"cannot write checkpoints to {files.kept.parent}: "
                               f"{exc.strerror}") from None
            raise RunError(f"{exc.filename}: {exc.strerror}; refusing to replace it") from None
        try:
            stack.enter_context(_locked(files))
            for path in files.outputs:
                remove_stale_parts(path)
        except OSError as exc:
            raise RunError(f"cannot write checkpoints to {files.kept.parent}: "
                           f"{exc.strerror or exc}") from None
        if spec.start == "resume":
            self.saved = load_saved_run(files, spec.cfg, spec.data)
        elif spec.start == "new" and (files.kept.exists() or files.last.exists()):
            raise RunError(f"{files.kept} already holds {_describe_existing(files)}; "
                           "continue it with --resume, replace it with --overwrite, or "
                           "choose another --out")
        self.extras = (self.saved.extras if self.saved
                       else _extras(spec.data, self.hooks.should_stop))
        n_extra = sum(len(e.labels) for e in self.extras)
        n_train = spec.data.n_train - spec.cfg.val_size
        check_memory(spec.cfg, n_train, spec.cfg.val_size,
                     n_extra * extra_repeats(n_train, n_extra, spec.cfg.extra_share))

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def fit(self) -> RunResult:
        """Train until done or stopped.

        Raises:
            RunError: an output that cannot be written (a full disk too).
            checkpoint.CheckpointError: an unusable last checkpoint or ``init``.
            RunError: ``init`` no longer of the run's shape, dataset or input scale.
            mnist.DataError: the data missing and not downloadable, or damaged.
            TrainingDiverged: the loss became NaN or infinite.
        """
        try:
            return self._fit()
        except OSError as exc:  # the folder, or a full disk while saving
            raise RunError(f"cannot write checkpoints to {self.files.kept.parent}: "
                           f"{exc.strerror or exc}") from None

    def _fit(self) -> RunResult:
        spec, hooks, cfg = self.spec, self.hooks, self.spec.cfg
        for line in (line for e in self.extras for line in e.skipped):
            hooks.note(f"skipped {line}")
        report = spec.data.ensure(progress=hooks.progress, verify=False)
        if summary := spec.data.summary(report):
            hooks.note(summary)
        X, y, X_val, y_val = spec.data.load_train_val(cfg.val_size)
        if self.extras:
            X, y = mix_in(X, y, to_input(np.concatenate([e.pixels for e in self.extras])),
                          np.concatenate([e.labels for e in self.extras]), cfg.extra_share)
        trainer, origin = self._trainer(len(X))
        saving = CheckpointCallback(spec, origin)
        callbacks: list[Callback] = [saving]
        if hooks.plots:
            callbacks.append(CurvesCallback(self.files.curves, run_title(
                {"sizes": cfg.sizes, "preset": spec.preset, "dataset": cfg.dataset, **origin})))
        stop = self.signals
        try:
            with stop.holding(), ExitStack() as threads:   # a signal stops the run, saved
                if spec.threads is not None:
                    from .threads import limit_threads

                    threads.enter_context(limit_threads(spec.threads))
                ending = trainer.fit(X, y, (X_val, y_val), [*callbacks, *hooks.callbacks],
                                     should_stop=lambda: stop() or hooks.should_stop())
        except TrainingDiverged as exc:
            if saving.saved_last:
                raise TrainingDiverged(f"{exc}; the last good checkpoint is "
                                       f"{self.files.last}") from None
            raise
        return RunResult(self.files, trainer, ending, stop.signum)

    def _trainer(self, n_train: int) -> tuple[Trainer, dict[str, Any]]:
        """The trainer, new or resumed, and what the run started from ("init": the
        checkpoint and its weights' hash; "extra": users' folders), for its checkpoints.

        Raises:
            checkpoint.CheckpointError: an unusable last checkpoint, or ``init`` unreadable.
            RunError: ``init`` no longer of the run's shape, dataset or input scale.
        """
        spec = self.spec
        if self.saved is not None:
            try:
                return self.saved.trainer(n_train), self.saved.origin
            except checkpoint.CheckpointError as exc:
                raise checkpoint.CheckpointError(f"{self.files.last}: {exc}") from None
        net, init = MLP(spec.cfg.sizes, seed=spec.cfg.seed), None
        if spec.init is not None:
            start = checkpoint.load(spec.init)
            _check_start(spec.init, start, spec.cfg)
            net, init = start.net, {"model": str(spec.init),
                                    "sha256": weights_sha256(start.net)}
        origin = {"init": init, "extra": [e.record() for e in self.extras]}
        return Trainer(spec.cfg, net, n_train), origin


def train(spec: RunSpec, hooks: Hooks = Hooks()) -> RunResult:
    """``spec`` run whole: ``with Run(spec, hooks) as run: return run.fit()``."""
    with Run(spec, hooks) as run:
        return run.fit()


"""Hyperparameter sweeps: a space file, an Optuna study whose trials are `mlp train` runs,
and its results (a table, ``best.toml``, ``sweep.png``, the best trials' checkpoints).

A sweep lives in a folder DIR::

    DIR/study.db               the embedded study (SQLite), when no PostgreSQL URL is given
    DIR/sweep.json             which study (and storage) DIR belongs to
    DIR/trial-0007.npz         trial 7's run, with .last.npz, .metrics.jsonl, .curves.png
    DIR/best.toml              the best trial's config: `mlp train --config DIR/best.toml`
    DIR/sweep.png              score per trial, and each searched setting against the score
    DIR/workers/*.lock         one per live local worker, to share the cores

Each trial trains on the training split and reports each epoch's validation score to
the study, whose pruner may stop it; nothing here reads the test set. Several workers
(processes, on one machine or many) run one study: Optuna hands out the trials, its
heartbeats find a killed worker's trial, which a live worker runs again, resuming the
dead one's run where it stopped when its files are on the same machine.

Optuna (the ``sweep`` extra) is imported only inside functions that need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
import tomllib
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (
    FIELDS,
    ConfigError,
    TrainConfig,
    coerce,
    find_preset,
    is_list,
    item_type,
    load_config_file,
    resolve,
)
from .dataset import DataSource
from .files import read_bounded, write_bytes_atomic, write_target
from .runfiles import RunFiles
from .threads import default_threads, limit_threads, live_workers, registered_worker
from .train import Callback, TrainingDiverged, val_score

if TYPE_CHECKING:  # run, checkpoint: imported when a sweep runs, not with the CLI
    from .run import StopSignals

INSTALL_HINT = "pip install 'mnist-mlp[sweep]'"
MAX_SPACE_BYTES = 1 << 20       # a space file is a few hundred bytes
SPACE_KEYS = ("config", "fixed", "search")
DIMENSION_KEYS = ("low", "high", "log", "step", "choices")
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 30                # a running trial writes its heartbeat this often...
GRACE_HEARTBEATS = 3            # ...and counts as dead after this many are missed
MAX_RETRIES = 3                 # runs of a trial whose worker keeps dying
STUDY_DB, SWEEP_JSON, BEST_TOML, SWEEP_PNG = "study.db", "sweep.json", "best.toml", "sweep.png"
WORKERS = "workers"
SQLITE_TIMEOUT_S = 60           # a worker waits this long for another's write to the study.db
WAIT_S = 5                      # how often a worker with no trial left looks at the others'
POLL_S = 0.5                    # and at its signals


class SpaceError(ValueError):
    """A space file that cannot be used; the message names the file and the key."""


class SweepError(Exception):
    """A sweep that cannot start or go on: Optuna missing, storage unreachable, DIR taken."""


class _Interrupted(Exception):
    """Raised out of a trial stopped by SIGINT or SIGTERM, so Optuna marks it failed."""


# ---------------------------------------------------------------- the space file

@dataclass(frozen=True)
class Dimension:
    """One searched setting: numbers from ``low`` to ``high`` (``log`` scale or ``step``s
    optional), or one of ``choices`` (values as TrainConfig takes them: tuples for lists)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def label(self, value: Any) -> Any:
        """A choice as Optuna stores it: lists as "800,800", since its choices are scalars."""
        return ",".join(map(str, value)) if isinstance(value, tuple) else value

    def suggest(self, trial: Any) -> Any:
        """This setting's value for ``trial`` (an ``optuna.Trial``), as TrainConfig takes it."""
        if self.choices:
            labels = [self.label(c) for c in self.choices]
            return self.choices[labels.index(trial.suggest_categorical(self.name, labels))]
        if item_type(self.name) is int:
            value = trial.suggest_int(self.name, self.low, self.high, step=self.step or 1,
                                      log=self.log)
        else:
            value = trial.suggest_float(self.name, self.low, self.high, step=self.step,
                                        log=self.log)
        return (value,) if is_list(self.name) else value

    def extremes(self) -> tuple[Any, ...]:
        """The values a space check tries: both ends of a range, or every choice."""
        if self.choices:
            return self.choices
        ends = (self.low, self.high)
        return tuple((v,) for v in ends) if is_list(self.name) else ends

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": [self.label(c) for c in self.choices]}
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class Space:
    """A validated space file: the base config (a preset or config file), the settings
    fixed for every trial, and the searched ones."""

    path: Path
    config: str                          # the base config file, for run.train's config=
    file_values: dict[str, Any]          # its values
    fixed: dict[str, Any]
    search: dict[str, Dimension]

    def flags(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's settings over the base config: the fixed ones and its searched ones."""
        return {**self.fixed, **params}

    def resolve(self, params: Mapping[str, Any]) -> TrainConfig:
        return resolve(self.file_values, self.flags(params))

    def fingerprint(self) -> str:
        """What the study must agree on: the base settings and the searched ranges."""
        return json.dumps({"base": self.resolve({}).to_dict(),
                           "search": {k: d.to_dict() for k, d in self.search.items()}},
                          sort_keys=True)


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _number(key: str, value: Any, what: str) -> Any:
    """``value`` as one number for ``key`` (an item of a list setting), checked against the
    setting's type and bounds."""
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{key}: {what} must be one number, not {_short(value)}")
    value = coerce(key, value)
    return value[0] if is_list(key) else value


def _dimension(key: str, spec: Any) -> Dimension:
    """One ``[search]`` entry, checked against the setting's type, bounds and choices.

    Raises:
        ConfigError: the message names the key.
    """
    if key not in FIELDS:
        raise ConfigError(f"unknown setting {_short(key)}; settings: {', '.join(FIELDS)}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{key} must be {{ low = ..., high = ... }} or "
                          f"{{ choices = [...] }}, not {_short(spec)}")
    unknown = [k for k in spec if k not in DIMENSION_KEYS]
    if unknown:
        raise ConfigError(f"{key}: unknown key {_short(unknown[0])}; a searched setting has "
                          "low, high, log, step or choices")
    if "choices" in spec:
        if len(spec) > 1:
            raise ConfigError(f"{key}: choices go alone, without low, high, log or step")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key}: choices must be a non-empty list")
        values = tuple(coerce(key, c) for c in choices)
        if len(set(values)) < len(values):
            raise ConfigError(f"{key}: a choice is listed twice")
        return Dimension(key, choices=values)
    if item_type(key) is str:
        raise ConfigError(f"{key} takes choices = [...], not a range")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key} needs low and high, or choices")
    low, high = _number(key, spec["low"], "low"), _number(key, spec["high"], "high")
    if low >= high:
        raise ConfigError(f"{key}: {'empty' if low == high else 'reversed'} range: low "
                          f"{low} must be below high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}: log must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{key}: a log range needs low > 0, not {low}")
    step = spec.get("step")
    if step is not None:
        kind = item_type(key)
        if isinstance(step, bool) or not isinstance(step, (int, float) if kind is float
                                                    else int) or not 0 < step <= high - low:
            raise ConfigError(f"{key}: step must be a positive {kind.__name__} at most "
                              f"high - low, not {_short(step)}")
        if log:
            raise ConfigError(f"{key}: log and step do not go together")
        steps = (high - low) / step
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ConfigError(f"{key}: high - low ({high - low:g}) must be a whole number of "
                              f"steps of {step:g}")
    return Dimension(key, low=low, high=high, log=log, step=step)


def _base_config(name: Any, folder: Path) -> Path:
    """The ``config`` key: a preset name, or a config file (relative to the space file)."""
    if not isinstance(name, str):
        raise ConfigError(f"config must be a preset name or a config file, not {_short(name)}")
    path = Path(name)
    if path.suffix or len(path.parts) > 1:
        path = folder / path
    return find_preset(str(path) if path.suffix or len(path.parts) > 1 else name).resolve()


def load_space(path: Path) -> Space:
    """Read a space file and check it against TrainConfig before any trial runs::

        config = "default"      # the base: a preset name or a config file
        [fixed]
        epochs = 12
        [search]
        lr = { low = 0.02, high = 0.3, log = true }
        hidden = { choices = [[800], [1024], [800, 800]] }

    Every value must fit its setting's type, bounds and choices; each searched setting's
    ends (or choices) must make a valid config with the rest; a sweep needs val_size > 0.

    Raises:
        SpaceError: unreadable, not TOML, an unknown key, an empty or reversed range, a
            value out of bounds, a setting both fixed and searched; names file and key.
    """
    path = Path(path)

    def fail(message: str) -> SpaceError:
        return SpaceError(f"{path}: {message}")

    try:
        raw = tomllib.loads(read_bounded(path, MAX_SPACE_BYTES).decode("utf-8"))
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"not a TOML space file ({exc})") from None
    except RecursionError:
        raise fail("nested too deeply to be a space file") from None
    unknown = [k for k in raw if k not in SPACE_KEYS]
    if unknown:
        raise fail(f"unknown key {_short(unknown[0])}; a space file has config, [fixed] "
                   "and [search]")
    fixed_raw, search_raw = raw.get("fixed", {}), raw.get("search")
    if not isinstance(fixed_raw, dict):
        raise fail("fixed must be a table: [fixed]")
    if not isinstance(search_raw, dict) or not search_raw:
        raise fail("nothing to search: add a [search] table, e.g. lr = { low = 0.02, "
                   "high = 0.3, log = true }")
    try:
        config = _base_config(raw.get("config", "default"), path.parent)
        file_values = load_config_file(config)
    except ConfigError as exc:
        raise fail(f"config: {exc}") from None
    try:
        fixed = {k: coerce(k, v) for k, v in fixed_raw.items()}
    except ConfigError as exc:
        raise fail(f"in [fixed], {exc}") from None
    both = [k for k in search_raw if k in fixed]
    if both:
        raise fail(f"{both[0]} is both in [fixed] and in [search]; keep it in one")
    try:
        search = {k: _dimension(k, v) for k, v in search_raw.items()}
    except ConfigError as exc:
        raise fail(f"in [search], {exc}") from None
    space = Space(path, str(config), file_values, fixed, search)
    try:
        base = space.resolve({})
    except ConfigError as exc:
        raise fail(f"config and [fixed]: {exc}") from None
    _check_validation(space, base, fail)
    return space


def _check_validation(space: Space, base: TrainConfig, fail: Callable[[str], SpaceError]
                      ) -> None:
    """Each searched setting's ends with the rest make a valid config with a validation split."""
    tries = [(None, None, base)]
    for key, dim in space.search.items():
        for value in dim.extremes():
            try:
                tries.append((key, value, space.resolve({key: value})))
            except ConfigError as exc:
                raise fail(f"in [search], {key} = {dim.label(value)}: {exc}") from None
    for key, value, cfg in tries:
        if cfg.val_size == 0:
            where = f"with {key} = {value}, " if key else ""
            raise fail(f"{where}val_size is 0: a sweep selects on the validation split; set "
                       "val_size > 0 in [fixed]")


# ---------------------------------------------------------------- storage

def _optuna():
    """The optuna module, or a SweepError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise SweepError(f"mlp sweep needs Optuna: {INSTALL_HINT}") from None
    return optuna


def storage_url(storage: str | None, out_dir: Path) -> str:
    """The SQLAlchemy URL of the study: DIR's own SQLite file, or the PostgreSQL server
    (``postgresql://user:password@host/db``, through the psycopg driver).

    Raises:
        SweepError: a URL of another kind.
    """
    if storage is None:
        return f"sqlite:///{(Path(out_dir) / STUDY_DB).resolve()}"
    scheme, sep, rest = storage.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    raise SweepError(f"--storage takes postgresql://user:password@host/db, not "
                     f"{redact(storage)[:60]}")


def redact(url: str) -> str:
    """``url`` without its password, for messages and DIR/sweep.json (libpq takes the
    password from PGPASSWORD or ~/.pgpass when the URL has none)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}@{host}"))


def _postgres(storage: str | None) -> str | None:
    """The libpq URL of a PostgreSQL storage (psycopg takes what users write), or None."""
    return None if storage is None else "postgresql://" + storage.partition("://")[2]


class _FileLock:
    """An exclusive flock on a file, taken and released as often as needed."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)

    def acquire(self) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


class _AdvisoryLock:
    """A PostgreSQL session-level advisory lock, held on a connection of its own; the server
    drops it when the connection ends, however the worker ends."""

    def __init__(self, conn: Any, name: str):
        self.conn = conn
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big",
                                  signed=True)

    def acquire(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))


@contextmanager
def _locks(postgres: str | None, out_dir: Path, study: str) -> Iterator[tuple[Any, Any]]:
    """(schema lock, admission lock): one worker at a time creates the tables, and one at a
    time decides whether to start a trial and asks Optuna for it (so --trials is exact).

    PostgreSQL: advisory locks, since the study's workers share no folder (two workers
    creating the tables of a fresh database at once: one fails on a duplicate key in
    pg_type). The embedded store: an flock in DIR.
    """
    if postgres is None:
        lock = _FileLock(out_dir / "sweep.lock")
        try:
            yield lock, lock
        finally:
            lock.close()
        return
    import psycopg

    try:
        conn = psycopg.connect(postgres, autocommit=True, connect_timeout=30)
    except psycopg.Error as exc:
        raise SweepError(f"cannot connect to {redact(postgres)}: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    try:
        yield (_AdvisoryLock(conn, "mnist-mlp schema"),
               _AdvisoryLock(conn, f"mnist-mlp study {study}"))
    finally:
        conn.close()


@contextmanager
def _held(lock: Any) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _open_storage(optuna: Any, url: str, heartbeat_s: int, schema_lock: Any) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    sqlite = url.startswith("sqlite")
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    try:
        with _held(schema_lock):
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                grace_period=GRACE_HEARTBEATS * heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRIES))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SweepError(f"cannot open the study storage {redact(url)}: {reason}") from None


@contextmanager
def _quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna's own log lines and experimental-feature warnings off: the sweep says what
    happened in its own words."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _make_pruner(optuna: Any, name: str) -> Any:
    """Epochs are the steps (from 1): the median pruner judges from epoch 2 on, once 3
    trials have finished; hyperband gives every trial at least one epoch."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, not {name!r}")


def _bind_folder(out_dir: Path, study: str | None, storage: str | None) -> str:
    """The study DIR belongs to, recorded in DIR/sweep.json on first use.

    Raises:
        SweepError: DIR belongs to another study or storage.
    """
    path = out_dir / SWEEP_JSON
    shown = redact(storage) if storage else None
    try:
        have = json.loads(read_bounded(path, 1 << 16))
    except FileNotFoundError:
        have = None
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: unreadable ({exc}); not a sweep folder") from None
    if have is not None:
        if not isinstance(have, dict) or have.get("storage") != shown or (
                study is not None and have.get("study") != study):
            where = have.get("storage") if isinstance(have, dict) else None
            raise SweepError(f"{out_dir} holds study {str(have.get('study'))[:60]!r} in "
                             f"{where or 'its own ' + STUDY_DB}; give the same --study and "
                             "--storage to continue it, or choose another --out")
        return have["study"]
    name = study or out_dir.resolve().name
    write_bytes_atomic(path, json.dumps({"study": name, "storage": shown}).encode())
    return name


# ---------------------------------------------------------------- a trial

class PruningCallback(Callback):
    """Reports each epoch's validation score to an Optuna trial (step = epoch, a resumed
    run's earlier epochs at its start) and notes the epoch at which the study's pruner
    says to stop."""

    def __init__(self, trial: Any):
        self.trial, self.pruned_at = trial, None

    def _report(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self.trial.report(val_score(row), row["epoch"])
        if rows and self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = rows[-1]["epoch"]

    def on_train_begin(self, trainer):
        self._report(trainer.state.history)

    def on_epoch_end(self, trainer, row, kept):
        self._report([row])


def _train_trial(files: RunFiles, space: Space, flags: dict[str, Any], resume: bool,
                 source: DataSource | None, plots: bool, pruning: PruningCallback,
                 signals: StopSignals) -> tuple[str, list[dict[str, Any]]]:
    """One trial's run of `mlp train`: how it ended ("finished", "pruned", or "stopped" by
    a signal, noted in ``signals``) and its history (one row per epoch, resumed ones too).

    Raises:
        RunError, CheckpointError, DataError, TrainingDiverged: as run.train.
    """
    from . import run

    result = run.train(files.kept, config=space.config, flags=flags, resume=resume,
                       overwrite=not resume, source=source, progress=False, plots=plots,
                       callbacks=[pruning],
                       should_stop=lambda: signals() or pruning.pruned_at is not None)
    signals.signum = signals.signum or result.signum  # run.train held the signals meanwhile
    history = result.trainer.state.history
    if result.ending == "stopped" and signals():
        return "stopped", history
    return ("pruned" if pruning.pruned_at is not None else "finished"), history


def _saved_epoch(files: RunFiles) -> int:
    """The epoch a run's resumable state is at (0 when it cannot tell)."""
    from .checkpoint import CheckpointError, load

    try:
        return int(load(files.last).meta.get("epoch", 0))
    except (CheckpointError, TypeError, ValueError):
        return 0


def kept_score(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The validation score of the epoch a run kept: a trial's value."""
    if not history:
        return None
    return val_score(history[history[-1].get("kept_epoch", len(history)) - 1])


# ---------------------------------------------------------------- the worker

@dataclass
class _Worker:
    """One process's part in a study: admits trials under the lock so the study runs
    exactly ``budget`` of them, trains them, and stays while other workers' trials run, to
    take over any whose worker dies."""

    optuna: Any
    study: Any
    space: Space
    out_dir: Path
    budget: int
    admission: Any
    signals: StopSignals
    threads: int | None
    source: DataSource | None
    plots: bool
    heartbeat_s: int
    log: Callable[[str], None]
    held: bool = False
    current: int | None = None
    interrupted: int | None = None
    told_waiting: set[int] = field(default_factory=set)

    def admit(self) -> bool:
        """Whether to start a trial; if so, return with the admission lock held (Optuna's
        ask follows; the trial releases it). Waits while others' trials run."""
        counted = {"COMPLETE", "PRUNED", "RUNNING", "WAITING"}
        while not self.signals():
            self.admission.acquire()
            self.held = True
            self.optuna.storages.fail_stale_trials(self.study)  # a dead worker's: retried
            trials = self.study.get_trials(deepcopy=False)
            states = [t.state.name for t in trials]
            if "WAITING" in states or sum(s in counted for s in states) < self.budget:
                return True
            self.release()
            running = {t.number for t in trials if t.state.name == "RUNNING"}
            if not running:
                return False
            if not running <= self.told_waiting:
                self.told_waiting |= running
                self.log(f"waiting for trial {', '.join(map(str, sorted(running)))} in other "
                         f"workers (a dead worker's trial is run again after "
                         f"{GRACE_HEARTBEATS * self.heartbeat_s} s)")
            deadline = time.monotonic() + min(self.heartbeat_s, WAIT_S)
            while time.monotonic() < deadline and not self.signals():
                time.sleep(POLL_S)
        return False

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.release()

    def run(self) -> None:
        if not self.admit():
            return
        try:
            self.study.optimize(self.objective, callbacks=[self.after_trial])
        except _Interrupted:
            self.interrupted = self.current
            trial = next(t for t in self.study.get_trials() if t.number == self.current)
            # Queued again: the next worker (or the same command again) resumes it.
            self.optuna.storages.RetryHeartbeatStaleTrialCallback()(self.study, trial)
        finally:
            self.release()

    def objective(self, trial: Any) -> float:
        self.release()
        self.current = trial.number
        if self.signals():
            trial.set_user_attr("interrupted", "before training")
            raise _Interrupted
        params = {name: dim.suggest(trial) for name, dim in self.space.search.items()}
        # A rerun of a trial that died or was interrupted carries its user attrs: it goes on
        # with that trial's files, from where they stopped if they are on this machine.
        rerun_of = trial.user_attrs.get("checkpoint")
        name = Path(rerun_of).name if rerun_of else f"trial-{trial.number:04d}.npz"
        files = RunFiles(self.out_dir / name)
        if trial.user_attrs.get("interrupted"):
            trial.set_user_attr("interrupted", None)
        try:
            cfg = self.space.resolve(params)
        except ConfigError as exc:   # settings that do not go together
            trial.set_user_attr("ending", f"invalid: {exc}")
            raise self.optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("checkpoint", str(files.kept.absolute()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        resume = rerun_of is not None and files.last.exists()
        trial.set_user_attr("resumed_from_epoch", _saved_epoch(files) if resume else 0)
        n_threads = self.threads or default_threads(live_workers(self.out_dir / WORKERS))
        trial.set_user_attr("threads", n_threads)
        pruning = PruningCallback(trial)
        try:
            with limit_threads(n_threads):
                ending, history = _train_trial(files, self.space, self.space.flags(params),
                                               resume, self.source, self.plots, pruning,
                                               self.signals)
        except TrainingDiverged as exc:
            trial.set_user_attr("ending", "diverged")
            raise self.optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("epochs", len(history))
        trial.set_user_attr("seconds", round(sum(r["train_seconds"] for r in history), 2))
        trial.set_user_attr("ending", ending)
        if ending == "stopped":
            trial.set_user_attr("interrupted", signal.Signals(self.signals.signum).name)
            raise _Interrupted
        if ending == "pruned":
            raise self.optuna.TrialPruned(f"pruned at epoch {pruning.pruned_at}")
        return kept_score(history)

    def after_trial(self, study: Any, trial: Any) -> None:
        row = trial_row(trial)
        score = "-" if row.score is None else f"{100 * row.score:.2f}%"
        cost = "" if row.seconds is None else f", {row.epochs} epochs in {row.seconds:.0f} s"
        self.log(f"trial {row.number} {row.state}: val accuracy {score}{cost}; "
                 f"{_params_text(row.params)}")
        write_best(make_report(study, None), self.out_dir)
        if not self.admit():
            study.stop()


# ---------------------------------------------------------------- results

@dataclass
class TrialRow:
    """One trial as the results show it."""

    number: int
    state: str                 # complete pruned diverged interrupted died failed running waiting
    value: float | None        # the kept epoch's validation score (complete trials)
    score: float | None        # the value, or the best score reported (pruned trials)
    params: dict[str, Any]     # Optuna's values: lists as "800,800"
    epochs: int | None
    seconds: float | None
    checkpoint: str | None
    host: str | None
    retry_of: int | None
    config: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def trial_row(trial: Any) -> TrialRow:
    """A FrozenTrial as a TrialRow."""
    attrs, state = trial.user_attrs, trial.state.name.lower()
    if state == "fail":
        state = "interrupted" if attrs.get("interrupted") else "failed"
    elif state == "pruned" and attrs.get("ending") == "diverged":
        state = "diverged"
    values = list(trial.intermediate_values.values())
    value = trial.value if state == "complete" else None  # Optuna gives pruned ones a value
    return TrialRow(
        number=trial.number, state=state, value=value,
        score=value if value is not None else max(values, default=None),
        params=dict(trial.params), epochs=attrs.get("epochs", len(values) or None),
        seconds=attrs.get("seconds"), checkpoint=attrs.get("checkpoint"),
        host=attrs.get("host"), retry_of=trial.system_attrs.get("failed_trial"),
        config=attrs.get("config"))


@dataclass
class Report:
    """A study's trials, best first (completed trials by value, then the rest by number)."""

    study: str
    storage: str | None
    rows: list[TrialRow]

    @property
    def best(self) -> TrialRow | None:
        return self.rows[0] if self.rows and self.rows[0].state == "complete" else None

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage,
                "trials": [r.to_dict() for r in self.rows],
                "best": self.best.to_dict() if self.best else None}


def make_report(study: Any, storage: str | None) -> Report:
    """The study's trials as a Report (``storage`` shown without its password)."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    retried = {r.retry_of for r in rows if r.retry_of is not None}
    for r in rows:
        if r.state == "failed" and r.number in retried:
            r.state = "died"
    rows.sort(key=lambda r: (r.state != "complete", -(r.value or 0.0), r.number))
    return Report(study.study_name, redact(storage) if storage else None, rows)


def _params_text(params: Mapping[str, Any]) -> str:
    def show(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={show(v)}" for k, v in params.items())


def format_table(report: Report) -> str:
    """The results as a text table: rank, trial, state, val accuracy (in parentheses: the
    best epoch of a trial that did not finish), epochs run, seconds, searched settings."""
    head = f"study {report.study} ({report.storage or 'embedded'}): {len(report.rows)} trials"
    columns = (f"{'rank':>4}  {'trial':>5}  {'state':<11}  {'val acc':>8}  {'epochs':>6}  "
               f"{'seconds':>7}  settings")
    lines = [head, columns]
    rank = 0
    for r in report.rows:
        rank += r.state == "complete"
        score = "" if r.score is None else f"{100 * r.score:.2f}%"
        if r.value is None and score:
            score = f"({score})"
        retry = f" (rerun of {r.retry_of})" if r.retry_of is not None else ""
        lines.append(f"{rank if r.state == 'complete' else '-':>4}  {r.number:>5}  "
                     f"{r.state:<11}  {score:>8}  {r.epochs or '':>6}  "
                     f"{'' if r.seconds is None else f'{r.seconds:.0f}':>7}  "
                     f"{_params_text(r.params)}{retry}")
    return "\n".join(lines)


def _toml(values: Mapping[str, Any]) -> str:
    """Flat settings as TOML (JSON's numbers, strings and lists are TOML's too)."""
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def importances(study: Any) -> dict[str, float]:
    """Each searched setting's share of what decided the score (Optuna's PED-ANOVA over the
    completed trials); empty while there are too few to tell."""
    optuna = _optuna()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shares = dict(optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
    return {} if caught else shares  # it warns when it can only call them equal


def write_best(report: Report, out_dir: Path) -> None:
    """Write DIR/best.toml: the best completed trial's config, for `mlp train --config`."""
    best = report.best
    if best is not None and best.config:
        head = (f"# Trial {best.number} of study {report.study}: validation accuracy "
                f"{100 * best.value:.2f}%.\n# Train it: mlp train --config "
                f"{out_dir / BEST_TOML}\n")
        write_bytes_atomic(out_dir / BEST_TOML, (head + _toml(best.config)).encode())


def write_outputs(study: Any, search: Mapping[str, Dimension], out_dir: Path,
                  storage: str | None = None, plots: bool = True) -> Report:
    """Write DIR/best.toml and (with ``plots``) DIR/sweep.png; return their report."""
    report = make_report(study, storage)
    write_best(report, out_dir)
    if plots:
        from .plots import save_figure

        weights = importances(study) if report.best is not None else {}
        save_figure(sweep_figure(report.rows, search, weights), out_dir / SWEEP_PNG)
    return report


def sweep_figure(rows: Sequence[TrialRow], search: Mapping[str, Dimension],
                 weights: Mapping[str, float]) -> Any:
    """A matplotlib Figure: validation accuracy per trial (completed trials filled, those
    stopped early hollow at their best epoch, the best so far as a step line), and below,
    each searched setting against the score, titled with its importance when known."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullLocator

    from .plots import PLAIN

    scored = sorted((r for r in rows if r.score is not None), key=lambda r: r.number)
    groups = {"completed": [r for r in scored if r.state == "complete"],
              "stopped early (best epoch)": [r for r in scored if r.state != "complete"]}
    styles = {"completed": {"color": "C0"},
              "stopped early (best epoch)": {"color": "C1", "markerfacecolor": "none"}}
    n = max(1, len(search))
    # Fixed margins: a layout engine would double the drawing time.
    fig = Figure(figsize=(max(8, 3 * n), 7), dpi=100)
    grid = fig.add_gridspec(2, n, left=0.07, right=0.98, bottom=0.08, top=0.94, hspace=0.35,
                            wspace=0.3)
    top = fig.add_subplot(grid[0, :])
    for label, group in groups.items():
        top.plot([r.number for r in group], [100 * r.score for r in group], "o", label=label,
                 **styles[label])
    done = groups["completed"]
    so_far = [100 * max(r.score for r in done[:i + 1]) for i in range(len(done))]
    top.step([r.number for r in done], so_far, where="post", color="C2", label="best so far")
    top.set(xlabel="trial", ylabel="validation accuracy (%)",
            title=f"{len(rows)} trials, {len(done)} completed")
    top.grid(True, alpha=0.3)
    top.legend(fontsize="small", loc="best")
    for i, (name, dim) in enumerate(search.items()):
        ax = fig.add_subplot(grid[1, i])
        labels = [str(dim.label(c)) for c in dim.choices]
        for label, group in groups.items():
            xs = [labels.index(str(r.params[name])) if labels else r.params[name]
                  for r in group if name in r.params]
            ax.plot(xs, [100 * r.score for r in group if name in r.params], "o", alpha=0.8,
                    **styles[label])
        if labels:
            ax.set_xticks(range(len(labels)), labels, fontsize="small")
        elif dim.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(PLAIN)
        share = f" ({100 * weights[name]:.0f}% of importance)" if name in weights else ""
        ax.set(xlabel=name, title=f"{name}{share}")
        ax.grid(True, alpha=0.3)
    return fig


# ---------------------------------------------------------------- the sweep

@dataclass
class SweepResult:
    """The study's results after this worker's part; the signal that stopped it, if any, and
    the trial it interrupted."""

    report: Report
    signum: int | None
    interrupted: int | None


def run_sweep(space_path: Path, out_dir: Path, trials: int, *, storage: str | None = None,
              study: str | None = None, pruner: str = "median", threads: int | None = None,
              source: DataSource | None = None, plots: bool = True,
              seed: int | None = None,
              heartbeat_s: int = HEARTBEAT_S, log: Callable[[str], None] = lambda line: None,
              signals: StopSignals | None = None) -> SweepResult:
    """Run trials of the study in DIR (``out_dir``) until it has ``trials`` of them, with
    other workers started the same way; then write its results. The same call again
    continues the study; ``trials`` 0 only reports.

    Args:
        space_path: the space file (see ``load_space``).
        storage: ``postgresql://user:password@host/db`` for a study shared by machines;
            default DIR/study.db, for the workers of one machine.
        study: its name; default DIR's name.
        pruner: median, hyperband or none.
        threads: BLAS threads per trial; default this machine's cores shared among the
            sweep's live workers in DIR.
        source: where MNIST comes from, as for run.train.
        plots: draw each trial's curves every epoch, and DIR/sweep.png at the end.
        seed: the sampler's seed (reproducible with one worker).
        heartbeat_s: how often a running trial says it is alive; a trial silent for
            3 heartbeats counts as dead and is run again.
        log: receives a line per trial and per wait.
        signals: the caller's entered StopSignals; by default the sweep holds its own.
            SIGINT or SIGTERM stop the running trial resumably and mark it interrupted
            (queued to run again).

    Raises:
        SpaceError: a bad space file.
        SweepError: Optuna missing, storage unreachable, DIR holding another study, or
            a study of another space.
        RunError, DataError, CheckpointError: a trial that cannot run.
    """
    from .run import StopSignals

    optuna = _optuna()
    space = load_space(space_path)
    out_dir = Path(out_dir)
    url = storage_url(storage, out_dir)
    if storage is not None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SweepError(f"a PostgreSQL storage needs psycopg: {INSTALL_HINT}") from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = _bind_folder(out_dir, study, storage)
        for output in (BEST_TOML, SWEEP_PNG):   # refused now, not after the first trial
            write_target(out_dir / output)
    except OSError as exc:
        raise SweepError(f"{exc.filename or out_dir}: {exc.strerror or exc}") from None
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with (_quiet_optuna(optuna),
              _locks(_postgres(storage), out_dir, name) as (schema, admit),
              registered_worker(out_dir / WORKERS),
              StopSignals() if signals is None else nullcontext(signals) as stop):
            stop.armed = True
            st = _load_study(optuna, _open_storage(optuna, url, heartbeat_s, schema), name,
                             space, pruner, seed, admit)
            worker = _Worker(optuna, st, space, out_dir, trials, admit, stop, threads, source,
                             plots, heartbeat_s, log)
            if trials > 0:
                worker.run()
            report = write_outputs(st, space.search, out_dir, storage, plots)
    except OSError as exc:  # DIR's own files: the lock, best.toml, sweep.png
        raise SweepError(f"{exc.filename or out_dir}: {exc.strerror or exc}") from None
    except SQLAlchemyError as exc:
        raise SweepError(f"the study storage {redact(storage or url)} failed: "
                         f"{str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}"
                         ) from None
    return SweepResult(report, stop.signum, worker.interrupted)


def _load_study(optuna: Any, storage: Any, name: str, space: Space, pruner: str,
                seed: int | None, admission: Any) -> Any:
    """The study, created on first use and checked to be of this space.

    Raises:
        SweepError: a study of another space, or not made by mlp sweep.
    """
    sampler = optuna.samplers.TPESampler(seed=seed)  # constant liar: workers spread out
    with _held(admission):
        st = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                 sampler=sampler, pruner=_make_pruner(optuna, pruner),
                                 load_if_exists=True)
        mine = space.fingerprint()
        theirs = st.user_attrs.get("mnist_mlp.space")
        if theirs is None and st.get_trials(deepcopy=False):
            raise SweepError(f"study {name!r} already has trials not made by mlp sweep; "
                             "choose another --study")
        if theirs is None:
            st.set_user_attr("mnist_mlp.space", mine)
        elif theirs != mine:
            raise SweepError(f"study {name!r} was started with another space (base settings "
                             "or searched ranges differ); use its space file or another "
                             "--study")
    return st


def load_study(out_dir: Path) -> tuple[Any, str | None]:
    """DIR's study, as DIR/sweep.json names it (a PostgreSQL password comes from
    PGPASSWORD or ~/.pgpass, as it is not stored), and its storage URL.

    Raises:
        SweepError: not a sweep folder, Optuna missing, storage unreachable.
    """
    optuna = _optuna()
    out_dir = Path(out_dir)
    try:
        meta = json.loads(read_bounded(out_dir / SWEEP_JSON, 1 << 16))
        name, storage = meta["study"], meta["storage"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SweepError(f"{out_dir}: not a sweep folder (no readable {SWEEP_JSON})") from None
    from sqlalchemy.exc import SQLAlchemyError

    with _quiet_optuna(optuna):
        try:
            st = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(
                storage_url(storage, out_dir), skip_table_creation=True))
        except (SQLAlchemyError, KeyError) as exc:
            raise SweepError(f"cannot read study {name!r} of {out_dir}: "
                             f"{str(exc).strip().splitlines()[0]}") from None
    return st, storage


def top_checkpoints(out_dir: Path, k: int) -> list[Path]:
    """The checkpoints of the ``k`` best completed trials of DIR's study, best first: the
    members of a committee (``mlp eval --sweep DIR --top K``).

    Raises:
        SweepError: fewer than ``k`` completed trials, or a checkpoint not on this machine.
    """
    st, _ = load_study(out_dir)
    done = [r for r in make_report(st, None).rows if r.state == "complete"][:k]
    if len(done) < k:
        raise SweepError(f"{out_dir}: study {st.study_name!r} has {len(done)} completed "
                         f"trials, fewer than {k}")
    paths = []
    for r in done:
        path = Path(r.checkpoint)
        if not path.is_file():
            raise SweepError(f"trial {r.number}'s checkpoint {path} is not on this machine "
                             f"(it ran on {r.host}); copy it here first")
        paths.append(path)
    return paths

"""Where a sweep's study lives and how workers share it: the storage URL (DIR's embedded
SQLite file, or a PostgreSQL server through psycopg), the locks that let one worker at a
time create the tables and admit a trial, the storage opened with heartbeats, the pruners,
and DIR bound to its study in DIR/sweep.json.

Optuna (the ``sweep`` extra) is imported only inside functions that need it (``optuna_module``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..files import exclusive_lock, read_bounded, write_bytes_atomic
from .space import Space

INSTALL_HINT = "pip install 'mnist-mlp[sweep]'"
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 30                # a running trial writes its heartbeat this often...
GRACE_HEARTBEATS = 3            # ...and counts as dead after this many are missed
MAX_RETRIES = 3                 # runs of a trial whose worker keeps dying
STUDY_DB, SWEEP_JSON = "study.db", "sweep.json"
SQLITE_TIMEOUT_S = 60           # a worker waits this long for another's write to the study.db
MAX_BINDING_BYTES = 1 << 16     # sweep.json holds two short strings
SECRET_PARAMETERS = ("password", "sslpassword")   # a storage URL's query parameters never shown
_SECRETS = re.compile(r"(//[^\s\"'/?#@:]*):[^\s\"']*@|(?i:\b("
                      + "|".join(SECRET_PARAMETERS) + r"))=[^&\s\"']*")


class SweepError(Exception):
    """A sweep that cannot start or go on: Optuna missing, storage unreachable, DIR taken."""


def reason(exc: BaseException) -> str:
    """The first line of what a storage error says (SQLAlchemy's: of the driver's error),
    passwords hidden (libpq quotes a URL it cannot parse whole)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return hide_passwords(next(iter(text.splitlines()), text))


def hide_passwords(text: str) -> str:
    """``text`` with every password of a URL in it (even a broken one) as ``***``: in a
    user part (``//user:password@``) and in ``password`` or ``sslpassword`` parameters."""
    return _SECRETS.sub(lambda m: f"{m[1]}:***@" if m[1] else f"{m[2]}=***", text)


def storage_failure(exc: BaseException) -> BaseException | None:
    """The storage error behind ``exc``, or None: the outermost SQLAlchemy or psycopg error
    (else Optuna's StorageInternalError) among ``exc`` and the exceptions it was raised from
    or while handling (not those it hides, ``raise ... from None``). A storage lost
    mid-trial reaches the caller as Optuna's own UnboundLocalError, raised while it
    handled the StorageInternalError."""
    from sqlalchemy.exc import SQLAlchemyError

    optuna = optuna_module()
    try:
        import psycopg
        driver: tuple[type[BaseException], ...] = (SQLAlchemyError, psycopg.Error)
    except ImportError:
        driver = (SQLAlchemyError,)
    seen, internal = set(), None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, driver):
            return exc
        if internal is None and isinstance(exc, optuna.exceptions.StorageInternalError):
            internal = exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return internal


def read_binding(out_dir: Path) -> Any:
    """DIR/sweep.json, parsed: which study and storage DIR belongs to.

    Raises:
        OSError, ValueError: missing, unreadable, too large or not JSON.
    """
    return json.loads(read_bounded(out_dir / SWEEP_JSON, MAX_BINDING_BYTES))


def optuna_module():
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
    """``url`` without its passwords, for messages and DIR/sweep.json: the one in its user
    part (``user:password@``) and the ``password`` and ``sslpassword`` query parameters, in
    any case (libpq takes the password from PGPASSWORD or ~/.pgpass when the URL has none).
    A URL too broken to take apart has them as ``***`` (``hide_passwords``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return hide_passwords(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    kept = [(k, v) for k, v in query if k.lower() not in SECRET_PARAMETERS]
    if netloc == parts.netloc and len(kept) == len(query):
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc,
                                                  query=urllib.parse.urlencode(kept)))


def postgres_url(storage: str | None) -> str | None:
    """The libpq URL of a PostgreSQL storage (psycopg takes what users write), or None."""
    return None if storage is None else "postgresql://" + storage.partition("://")[2]


class _FileLock:
    """An exclusive flock on a file (``files.exclusive_lock``), taken and released as often
    as needed."""

    def __init__(self, path: Path):
        self.path, self.held = path, ExitStack()

    def acquire(self) -> None:
        self.held.enter_context(exclusive_lock(self.path, wait=True))

    def release(self) -> None:
        self.held.close()

    def close(self) -> None:
        self.held.close()


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
def locks(postgres: str | None, out_dir: Path, study: str) -> Iterator[tuple[Any, Any]]:
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
        raise SweepError(f"cannot connect to {redact(postgres)}: {reason(exc)}") from None
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


def open_storage(optuna: Any, url: str, heartbeat_s: int, schema_lock: Any) -> Any:
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
        raise SweepError(f"cannot open the study storage {redact(url)}: {reason(exc)}"
                         ) from None


@contextmanager
def quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna's own log lines and experimental-feature warnings off, and the traceback of a
    storage error that ends its heartbeat thread (the storage is lost: the trial's next
    write to it fails too, and the sweep says so in one line): the sweep says what
    happened in its own words."""
    verbosity, excepthook = optuna.logging.get_verbosity(), threading.excepthook

    def hook(args: Any) -> None:
        if storage_failure(args.exc_value) is None:
            excepthook(args)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    threading.excepthook = hook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        threading.excepthook = excepthook
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


def bind_folder(out_dir: Path, study: str | None, storage: str | None) -> str:
    """The study DIR belongs to, as DIR/sweep.json records it (``record_binding``), or the
    one this sweep starts: ``study``, by default DIR's name. Storages are compared without
    their passwords (``redact``), which sweep.json never holds.

    Raises:
        SweepError: DIR belongs to another study or storage.
    """
    path = out_dir / SWEEP_JSON
    try:
        have = read_binding(out_dir)
    except FileNotFoundError:
        return study or out_dir.resolve().name
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: unreadable ({exc}); not a sweep folder") from None
    if not isinstance(have, dict) or not isinstance(have.get("study"), str):
        raise SweepError(f"{path}: holds no study name; not a sweep folder")
    stored = have.get("storage")   # redacted again: as an earlier version may have kept it
    stored = redact(stored) if isinstance(stored, str) else stored
    if stored != (redact(storage) if storage else None) or (
            study is not None and have["study"] != study):
        raise SweepError(f"{out_dir} holds study {have['study'][:60]!r} in "
                         f"{str(stored or 'its own ' + STUDY_DB)[:200]}; give the same "
                         "--study and --storage to continue it, or choose another --out")
    return have["study"]


def record_binding(out_dir: Path, study: str, storage: str | None) -> None:
    """Bind DIR to ``study`` in ``storage`` (without its password) in DIR/sweep.json, once
    the study is open: a storage that could not be reached binds nothing."""
    if not (out_dir / SWEEP_JSON).exists():
        write_bytes_atomic(out_dir / SWEEP_JSON, json.dumps(
            {"study": study, "storage": redact(storage) if storage else None}).encode())


def open_study(optuna: Any, storage: Any, name: str, space: Space, pruner: str,
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


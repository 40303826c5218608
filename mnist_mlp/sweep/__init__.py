"""Hyperparameter sweeps: a space file, an Optuna study whose trials are `mlp train` runs,
and its results (a table, ``best.toml``, ``sweep.png``, the best trials' checkpoints).

A sweep lives in a folder DIR::

    DIR/study.db               the embedded study (SQLite), when no PostgreSQL URL is given
    DIR/sweep.json             which study (and storage) DIR belongs to
    DIR/trial-0007.npz         trial 7's run, with .last.npz, .metrics.jsonl, .curves.png
    DIR/best.toml              the best trial's config: `mlp train --config DIR/best.toml`
    DIR/sweep.png              score per trial, and each searched setting against the score
    DIR/workers/*.lock         one per local worker training a trial, to share the cores

Each trial trains on the training split and reports each epoch's validation score to
the study, whose pruner may stop it; nothing here reads the test set. Several workers
(processes, on one machine or many) run one study: Optuna hands out the trials, its
heartbeats find a killed worker's trial, which a live worker runs again, resuming the
dead one's run where it stopped when its files are on the same machine.

Optuna (the ``sweep`` extra) is imported only inside functions that need it.

The package's modules: ``space`` (the space file), ``storage`` (where the study lives and
how workers share it), ``trial`` (a trial and a worker's loop), ``results`` (the table,
best.toml, sweep.png); here, a sweep run and a finished study read back.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_target
from ..threads import registered_worker
from .results import BEST_TOML, SWEEP_PNG, Report, format_table, make_report, write_outputs
from .space import SpaceError, load_space
from .storage import (
    HEARTBEAT_S,
    INSTALL_HINT,
    PRUNERS,
    SWEEP_JSON,
    SweepError,
    bind_folder,
    locks,
    open_storage,
    open_study,
    optuna_module,
    postgres_url,
    quiet_optuna,
    read_binding,
    reason,
    record_binding,
    redact,
    storage_failure,
    storage_url,
)
from .trial import WORKERS, SweepSpec, Worker

if TYPE_CHECKING:  # run: imported when a sweep runs, not with the CLI
    from ..run import StopSignals

__all__ = ["HEARTBEAT_S", "PRUNERS", "SpaceError", "SweepError", "SweepResult", "SweepSpec",
           "format_table", "load_space", "load_study", "run_sweep", "top_checkpoints"]


@dataclass
class SweepResult:
    """The study's results after this worker's part; the signal that stopped it, if any, and
    the trial it interrupted."""

    report: Report
    signum: int | None
    interrupted: int | None


def _silent(line: str) -> None:
    pass


def run_sweep(spec: SweepSpec, note: Callable[[str], None] = _silent,
              signals: StopSignals | None = None) -> SweepResult:
    """Run trials of the study in DIR (``spec.out_dir``) until it has ``spec.trials`` of
    them, with other workers started the same way; then write its results. The same call
    again continues the study; ``trials`` 0 only reports.

    Args:
        note: receives a line per trial and per wait.
        signals: the caller's ``run.held_signals()``; by default the sweep holds its own.
            SIGINT or SIGTERM stop the running trial resumably and mark it interrupted
            (queued to run again); outside a trial (opening the study, writing the
            results) they stop at once, as unarmed StopSignals do.

    Raises:
        SweepError: Optuna missing, storage unreachable, DIR holding another study, or
            a study of another space.
        RunError, DataError, CheckpointError: a trial that cannot run.
    """
    from ..run import held_signals

    optuna = optuna_module()
    out_dir = Path(spec.out_dir)
    url = storage_url(spec.storage, out_dir)
    if spec.storage is not None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SweepError(f"a PostgreSQL storage needs psycopg: {INSTALL_HINT}") from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = bind_folder(out_dir, spec.study, spec.storage)
        for output in (BEST_TOML, SWEEP_PNG):   # refused now, not after the first trial
            write_target(out_dir / output)
        with registered_worker(out_dir / WORKERS):  # and so are the workers' lock files
            pass
    except OSError as exc:
        raise SweepError(f"{exc.filename or out_dir}: {exc.strerror or exc}") from None
    try:
        with (quiet_optuna(optuna),
              locks(postgres_url(spec.storage), out_dir, name) as (schema, admission),
              nullcontext(signals) if signals else held_signals() as stop):
            study = open_study(optuna, open_storage(optuna, url, spec.heartbeat_s, schema),
                               name, spec.space, spec.pruner, spec.seed, admission)
            record_binding(out_dir, name, spec.storage)
            worker = Worker(spec, study, admission, stop, note)
            if spec.trials > 0:
                with stop.holding():       # a trial stopped by a signal is saved, resumable
                    worker.run()
            report = write_outputs(study, spec.space.search, out_dir, spec.storage, spec.plots)
    except OSError as exc:  # DIR's own files: the lock, best.toml, sweep.png
        raise SweepError(f"{exc.filename or out_dir}: {exc.strerror or exc}") from None
    except Exception as exc:  # the storage lost mid-trial reaches here as Optuna's own error
        failure = storage_failure(exc)
        if failure is None:
            raise
        raise SweepError(f"the study storage {redact(spec.storage or url)} failed: "
                         f"{reason(failure)}") from None
    return SweepResult(report, stop.signum, worker.interrupted)


def load_study(out_dir: Path) -> tuple[Any, str | None]:
    """DIR's study, as DIR/sweep.json names it (a PostgreSQL password comes from
    PGPASSWORD or ~/.pgpass, as it is not stored), and its storage URL.

    Raises:
        SweepError: not a sweep folder, Optuna missing, storage unreachable.
    """
    optuna = optuna_module()
    out_dir = Path(out_dir)
    try:
        meta = read_binding(out_dir)
        name, storage = meta["study"], meta["storage"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SweepError(f"{out_dir}: not a sweep folder (no readable {SWEEP_JSON})") from None
    from sqlalchemy.exc import SQLAlchemyError

    with quiet_optuna(optuna):
        try:
            study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(
                storage_url(storage, out_dir), skip_table_creation=True))
        except (SQLAlchemyError, KeyError) as exc:
            raise SweepError(f"cannot read study {name!r} of {out_dir}: {reason(exc)}"
                             ) from None
    return study, storage


def top_checkpoints(out_dir: Path, k: int) -> list[Path]:
    """The checkpoints of the ``k`` best completed trials of DIR's study, best first: the
    members of a committee (``mlp eval --sweep DIR --top K``).

    Raises:
        SweepError: fewer than ``k`` completed trials, or a checkpoint not on this machine.
    """
    study, _ = load_study(out_dir)
    done = [r for r in make_report(study, None).rows if r.state == "complete"][:k]
    if len(done) < k:
        raise SweepError(f"{out_dir}: study {study.study_name!r} has {len(done)} completed "
                         f"trials, fewer than {k}")
    paths = []
    for r in done:
        path = Path(r.checkpoint)
        if not path.is_file():
            raise SweepError(f"trial {r.number}'s checkpoint {path} is not on this machine "
                             f"(it ran on {r.host}); copy it here first")
        paths.append(path)
    return paths

"""A sweep's spec and trials: the callback that reports each epoch to Optuna's pruner, one
trial as a run of `mlp train` (a ``run.Run``), and one process's part in the study
(``Worker``): it admits trials so the study runs exactly as many as asked, trains them,
and stays to take over the trial of any worker that dies.

``run`` and ``checkpoint`` are imported when a trial runs, not with the CLI.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, TrainConfig
from ..dataset import DataSource
from ..records import TrainState, val_score
from ..runfiles import RunFiles
from ..threads import default_threads, limit_threads, live_workers, registered_worker, set_threads
from ..train import Callback, TrainingDiverged
from .results import make_report, params_text, trial_row, write_best
from .space import Space
from .storage import GRACE_HEARTBEATS, HEARTBEAT_S, optuna_module

if TYPE_CHECKING:  # run: imported when a sweep runs, not with the CLI
    from ..run import Hooks, RunSpec, StopSignals

WORKERS = "workers"             # DIR/workers/*.lock: one per local worker training a trial
WAIT_S = 5                      # how often a worker with no trial left looks at the others'
POLL_S = 0.5                    # and at its signals


class _Interrupted(Exception):
    """Raised out of a trial stopped by SIGINT or SIGTERM, so Optuna marks it failed."""


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


class ThreadShare(Callback):
    """A worker's BLAS threads: ``fixed``, or its share of the cores among the local
    workers training a trial, counted again before each epoch as they come and go (a
    worker started a moment before the others would otherwise hold every core for all
    of its first trial, and the last trial would run on one worker's share); noted on
    the trial."""

    def __init__(self, trial: Any, workers: Path, fixed: int | None):
        self.trial, self.workers, self.fixed, self.threads = trial, workers, fixed, 0

    def count(self) -> int:
        """The threads this worker should use now."""
        threads = self.fixed or default_threads(live_workers(self.workers))
        if threads != self.threads:
            self.threads = threads
            self.trial.set_user_attr("threads", threads)
        return threads

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        before = self.threads
        if self.count() != before:
            set_threads(self.threads)


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: its space, its folder DIR and how many trials the study should have, where
    the study lives, and how each trial runs.

    ``storage``: ``postgresql://user:password@host/db`` for a study shared by machines;
    None: DIR/study.db, for the workers of one machine. ``study``: its name (None: DIR's
    name). ``pruner``: median, hyperband or none. ``threads``: BLAS threads per trial
    (None: this machine's cores shared among the sweep's live workers in DIR, counted
    before every epoch). ``plots``: each trial's curves every epoch, and DIR/sweep.png at
    the end. ``seed``: the sampler's (reproducible with one worker). ``heartbeat_s``: how
    often a running trial says it is alive; a trial silent for 3 heartbeats counts as
    dead and is run again.
    """

    space: Space
    out_dir: Path
    trials: int
    storage: str | None = None
    study: str | None = None
    pruner: str = "median"
    threads: int | None = None
    data: DataSource = field(default_factory=DataSource.from_env)
    plots: bool = True
    seed: int | None = None
    heartbeat_s: int = HEARTBEAT_S



def _train_trial(spec: RunSpec, hooks: Hooks, pruning: PruningCallback,
                 signals: StopSignals) -> tuple[str, TrainState]:
    """One trial's run of `mlp train`: how it ended ("finished", "pruned", or "stopped" by
    a signal, noted in ``signals``) and its trainer's state (the history has one row per
    epoch, resumed ones too).

    Raises:
        RunError, CheckpointError, DataError, TrainingDiverged: as ``run.Run``.
    """
    from .. import run

    with run.Run(spec, hooks, signals) as trial_run:
        result = trial_run.fit()
    state = result.trainer.state
    if result.ending == "stopped" and signals():
        return "stopped", state
    return ("pruned" if pruning.pruned_at is not None else "finished"), state


def _saved_epoch(files: RunFiles) -> int:
    """The epoch a run's resumable state is at (0 when it cannot tell)."""
    from ..checkpoint import CheckpointError, load

    try:
        return int(load(files.last).meta.get("epoch", 0))
    except (CheckpointError, TypeError, ValueError):
        return 0


# ---------------------------------------------------------------- the worker

@dataclass
class Worker:
    """One process's part in a study: admits trials under the lock so the study runs
    exactly ``spec.trials`` of them, trains them, and stays while other workers' trials
    run, to take over any whose worker dies."""

    spec: SweepSpec
    study: Any
    admission: Any                          # the lock held while a trial is admitted
    signals: StopSignals
    note: Callable[[str], None]
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
            optuna_module().storages.fail_stale_trials(self.study)  # a dead worker's: retried
            trials = self.study.get_trials(deepcopy=False)
            states = [t.state.name for t in trials]
            if "WAITING" in states or sum(s in counted for s in states) < self.spec.trials:
                return True
            self.release()
            running = {t.number for t in trials if t.state.name == "RUNNING"}
            if not running:
                return False
            if not running <= self.told_waiting:
                self.told_waiting |= running
                self.note(f"waiting for trial {', '.join(map(str, sorted(running)))} in other "
                         f"workers (a dead worker's trial is run again after "
                         f"{GRACE_HEARTBEATS * self.spec.heartbeat_s} s)")
            deadline = time.monotonic() + min(self.spec.heartbeat_s, WAIT_S)
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
            optuna_module().storages.RetryHeartbeatStaleTrialCallback()(self.study, trial)
        finally:
            self.release()

    def objective(self, trial: Any) -> float:
        self.release()
        self.current = trial.number
        if self.signals():
            trial.set_user_attr("interrupted", "before training")
            raise _Interrupted
        from .. import run

        space, out_dir = self.spec.space, Path(self.spec.out_dir)
        params = {name: dim.suggest(trial) for name, dim in space.search.items()}
        # A rerun of a trial that died or was interrupted carries its user attrs: it goes on
        # with that trial's files, from where they stopped if they are on this machine.
        rerun_of = trial.user_attrs.get("checkpoint")
        name = Path(rerun_of).name if rerun_of else f"trial-{trial.number:04d}.npz"
        files = RunFiles(out_dir / name)
        if trial.user_attrs.get("interrupted"):
            trial.set_user_attr("interrupted", None)
        resume = rerun_of is not None and files.last.exists()
        try:
            spec = self.run_spec(files, space.resolve(params), resume)
        except ConfigError as exc:   # settings that do not go together
            trial.set_user_attr("ending", f"invalid: {exc}")
            raise optuna_module().TrialPruned(str(exc)) from None
        trial.set_user_attr("config", spec.cfg.to_dict())
        trial.set_user_attr("checkpoint", str(files.kept.absolute()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("resumed_from_epoch", _saved_epoch(files) if resume else 0)
        pruning = PruningCallback(trial)
        share = ThreadShare(trial, out_dir / WORKERS, self.spec.threads)
        hooks = run.Hooks(progress=False, plots=self.spec.plots, callbacks=[pruning, share],
                          should_stop=lambda: pruning.pruned_at is not None)
        try:
            with registered_worker(out_dir / WORKERS), limit_threads(share.count()):
                ending, state = _train_trial(spec, hooks, pruning, self.signals)
        except TrainingDiverged as exc:
            trial.set_user_attr("ending", "diverged")
            raise optuna_module().TrialPruned(str(exc)) from None
        trial.set_user_attr("epochs", len(state.history))
        trial.set_user_attr("seconds", round(sum(r["train_seconds"] for r in state.history), 2))
        trial.set_user_attr("ending", ending)
        if ending == "stopped":
            trial.set_user_attr("interrupted", signal.Signals(self.signals.signum).name)
            raise _Interrupted
        if ending == "pruned":
            raise optuna_module().TrialPruned(f"pruned at epoch {pruning.pruned_at}")
        return state.kept_val_accuracy

    def run_spec(self, files: RunFiles, cfg: TrainConfig, resume: bool) -> RunSpec:
        """The spec of a trial's run of ``cfg``: a new one, or the saved one resumed.

        Raises:
            ConfigError: ``cfg`` is not the saved run's (a space changed under it).
            CheckpointError: the saved run is unusable.
        """
        from .. import run

        space = self.spec.space
        spec = run.build_spec(files.kept, cfg,
                              data=dataclasses.replace(self.spec.data, extra=space.extra),
                              start=run.Start("resume" if resume else "overwrite", space.init))
        return dataclasses.replace(spec, preset=Path(space.config).stem)

    def after_trial(self, study: Any, trial: Any) -> None:
        row = trial_row(trial)
        score = "-" if row.score is None else f"{100 * row.score:.2f}%"
        cost = "" if row.seconds is None else f", {row.epochs} epochs in {row.seconds:.0f} s"
        self.note(f"trial {row.number} {row.state}: val accuracy {score}{cost}; "
                  f"{params_text(row.params)}")
        write_best(make_report(study, None), Path(self.spec.out_dir))
        if not self.admit():
            study.stop()


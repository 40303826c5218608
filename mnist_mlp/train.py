"""The training loop: shuffled mini-batches, epochs, validation, early stopping.

``fit`` owns no I/O: progress, checkpoints and pictures are callbacks the
caller hands in, called in turn at the run's begin and end and at each
batch's and epoch's end (as Keras's ``fit(callbacks=[...])``). All randomness
after initialisation (shuffling, dropout, augmentation) comes from one generator
whose state is part of ``TrainState``, so a run stopped after any step resumes to
bit-identical parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import metrics
from .augment import AUGMENTATIONS, Distortion
from .batches import Batches
from .config import TrainConfig
from .network import MLP, softmax_cross_entropy
from .optim import Optimizer, WeightAverage, clip_row_norms_, make_optimizer, make_schedule

ROW_KEYS = ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "train_seconds")
# Scores of the averaged weights (--ema): null or absent when there are none.
AVERAGE_KEYS = ("ema_val_loss", "ema_val_accuracy")
# Saved train states of earlier releases called the kept epoch the best one.
FORMER_NAMES = {"best_epoch": "kept_epoch", "best_val_accuracy": "kept_val_accuracy"}


MAX_LOGGED = 1e12  # no loss, rate or time in a history row comes near this


def is_history_row(row: Any, epoch: int) -> bool:
    """Whether ``row`` is epoch ``epoch``'s row of a run's history (and metrics log):
    ``epoch``, a number (or null, for the validation scores) for each of ROW_KEYS and
    AVERAGE_KEYS, accuracies in [0, 1] and the rest in [0, MAX_LOGGED], and
    ``kept_epoch``, the epoch the run kept so far, if given. Integers too large for a
    float and booleans are not numbers here."""
    def number(key: str) -> bool:
        value = row.get(key)
        if value is None:
            return key.startswith(("val_", "ema_"))
        high = 1 if key.endswith("accuracy") else MAX_LOGGED
        return type(value) in (int, float) and 0 <= value <= high  # NaN fails too

    if not (isinstance(row, dict) and type(row.get("epoch")) is int and row["epoch"] == epoch):
        return False
    kept = row.get("kept_epoch", epoch)
    return (all(map(number, ROW_KEYS + AVERAGE_KEYS))
            and type(kept) is int and 1 <= kept <= epoch)


def val_score(row: Mapping[str, Any]) -> float | None:
    """An epoch's validation accuracy: of the weights or their average, whichever is
    higher; None without a validation split. Values that are not numbers are skipped."""
    scores = [row.get(k) for k in ("val_accuracy", "ema_val_accuracy")]
    return max((s for s in scores if type(s) in (int, float)), default=None)


def average_is_kept(row: Mapping[str, Any]) -> bool:
    """For a run with averaged weights: whether the epoch keeps them rather than the
    weights, i.e. they validated at least as well (without a validation split there is
    no telling, and the average is kept)."""
    raw, averaged = row["val_accuracy"], row["ema_val_accuracy"]
    return raw is None or averaged >= raw


def kept_epoch(history: Sequence[dict[str, Any]], tolerance: float = 0.0) -> int:
    """The epoch a run keeps: the latest whose validation score is within ``tolerance``
    of the best (0: the first best); the last epoch when there is no validation split.

    Validation accuracy on a few thousand images moves by a few images from one
    epoch to the next; a tolerance of about that noise prefers the later, more
    annealed epochs over one that was lucky on the validation split.
    """
    scored = [(score, r["epoch"]) for r in history if (score := val_score(r)) is not None]
    if not scored:
        return history[-1]["epoch"]
    best = max(score for score, _ in scored)
    if tolerance == 0:
        return min(epoch for score, epoch in scored if score == best)
    return max(epoch for score, epoch in scored if score >= best - tolerance - 1e-9)


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; parameters were left at the last good step."""


@dataclass
class TrainState:
    """Where a run is: enough, with the parameters and optimiser, to resume exactly."""

    epoch: int = 0                     # completed epochs
    step: int = 0                      # optimiser steps taken in all
    rng_state: dict[str, Any] | None = None
    order: np.ndarray | None = None    # this epoch's sample order (n,), mid-epoch only
    batch: int = 0                     # batches done in the current epoch
    loss_sum: float = 0.0              # running sums of the current epoch
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    kept_val_accuracy: float = -1.0    # validation score of the kept epoch; -1 before one
    kept_epoch: int = 0                # the kept epoch (``kept_epoch`` of the history)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        """JSON-friendly fields (``order`` is stored as an array beside)."""
        return {k: v for k, v in self.__dict__.items() if k != "order"}

    @classmethod
    def from_meta(cls, meta: Any, order: np.ndarray | None, n_train: int, batch_size: int
                  ) -> "TrainState":
        """The state saved by ``to_meta`` (and ``order``), checked before it is trusted.

        Raises:
            ValueError: a field missing, of the wrong type or out of range; a
                sample order that is not a permutation of ``n_train``.
        """
        names = [f for f in cls.__dataclass_fields__ if f != "order"]
        if isinstance(meta, dict):  # runs saved before the kept epoch had its one name
            meta = {FORMER_NAMES.get(k, k): v for k, v in meta.items()}
        if not isinstance(meta, dict) or sorted(meta) != sorted(names):
            raise ValueError(f"train state must have exactly the keys {', '.join(names)}")
        n_batches = math.ceil(n_train / batch_size)
        counts = {"epoch": 100_000, "step": 2**62, "batch": n_batches, "correct": n_train,
                  "seen": n_train, "kept_epoch": meta.get("epoch")}
        for key, high in counts.items():
            value = meta[key]
            if type(value) is not int or not 0 <= value <= high:
                raise ValueError(f"train state {key} {value!r} is not a count in [0, {high}]")
        for key in ("loss_sum", "seconds", "kept_val_accuracy"):
            value = meta[key]
            if type(value) not in (int, float) or not math.isfinite(value) or value < -1:
                raise ValueError(f"train state {key} {value!r} is not a finite number")
        accuracy = meta["kept_val_accuracy"]
        if not (accuracy == -1 or 0 <= accuracy <= 1):
            raise ValueError(f"train state kept_val_accuracy {accuracy!r} is not in [0, 1]")
        history = meta["history"]
        if not isinstance(history, list) or len(history) != meta["epoch"] or not all(
                is_history_row(row, i) for i, row in enumerate(history, 1)):
            raise ValueError("train state history is not one row per finished epoch")
        try:
            np.random.default_rng().bit_generator.state = meta["rng_state"]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(f"train state rng_state is not a generator state ({exc})") from None
        if meta["batch"] > 0:
            if (order is None or order.shape != (n_train,) or order.dtype.kind not in "iu"
                    or not np.array_equal(np.sort(order), np.arange(n_train))):
                raise ValueError(f"the saved sample order is not a permutation of {n_train}")
        else:
            order = None
        return cls(**{**meta, "order": order})


Ending = Literal["finished", "stopped", "diverged", "failed"]


class Callback:
    """Hooks the loop calls in turn: progress display, checkpoints, pictures, pruning.

    ``on_train_end`` always comes once ``on_train_begin`` has, told how the run
    ended: "finished" (all epochs, or early stopping), "stopped" (``should_stop``;
    the state is whole and resumable), "diverged" (NaN loss; parameters of the last
    good step), "failed" (an error in a callback or a full disk). No-ops here.
    """

    def on_train_begin(self, trainer: "Trainer") -> None: ...

    def on_epoch_begin(self, trainer: "Trainer", epoch: int, n_samples: int, done: int
                       ) -> None: ...

    def on_batch_end(self, trainer: "Trainer", n: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", row: dict[str, Any], kept: bool) -> None:
        """``kept``: the epoch just ended is now the one the run keeps."""

    def on_train_end(self, trainer: "Trainer", ending: Ending) -> None: ...


@dataclass
class Trainer:
    """A network, its optimiser and schedule, and the state of the run, for one config."""

    cfg: TrainConfig
    net: MLP
    n_train: int
    state: TrainState = field(default_factory=TrainState)
    optimizer: Optimizer = field(init=False)
    average: WeightAverage | None = field(init=False)  # of the parameters, with --ema
    lr_at: Callable[[int], float] = field(init=False)

    def __post_init__(self):
        cfg = self.cfg
        decayed = [True] * len(self.net.W) + [False] * len(self.net.b)  # weights, not biases
        self.optimizer = make_optimizer(cfg.optimizer, self.net.params, cfg.momentum,
                                        cfg.weight_decay, decayed)
        self.average = WeightAverage(self.net.params, cfg.ema) if cfg.ema else None
        steps_per_epoch = math.ceil(self.n_train / cfg.batch_size)
        self.lr_at = make_schedule(cfg.schedule, cfg.lr, cfg.epochs * steps_per_epoch,
                                   round(cfg.warmup_epochs * steps_per_epoch))
        hidden = cfg.dropout if len(cfg.dropout) > 1 else cfg.dropout * len(cfg.hidden)
        self.dropout = [cfg.input_dropout, *hidden]  # per layer input, as MLP.forward takes
        if self.state.rng_state is None:
            # Stream 1 of the seed: initialisation used the seed itself.
            self.state.rng_state = np.random.default_rng([cfg.seed, 1]).bit_generator.state
        # The one generator of shuffling, dropout and distortions; its state is copied
        # into ``state`` whenever the state may be saved (each epoch's end, the run's end).
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = self.state.rng_state

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
            callbacks: Sequence[Callback] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Ending:
        """Train until ``cfg.epochs`` or early stopping, or until ``should_stop``.

        Args:
            X, y: training split, float (n, 784) and int64 (n,).
            X_val, y_val: validation split, same layout; empty (val_size 0) for
                none, when every epoch counts as the best so far.
            callbacks: called in order at the run's begin and end, and after each
                batch and epoch.
            should_stop: polled after each step and each epoch; True ends the run
                there, with ``state`` ready to save and resume.

        Returns:
            "finished" or "stopped".

        Raises:
            TrainingDiverged: the loss became NaN or infinite (callbacks are told
                "diverged").
        """
        callbacks = list(callbacks)
        for cb in callbacks:
            cb.on_train_begin(self)
        ending: Ending = "failed"
        batches = Batches(X, self.cfg.batch_size, self.state, self.rng,
                          AUGMENTATIONS[self.cfg.augment])     # each epoch's: in _run
        try:
            # Overflow shows up as a non-finite loss, which _step reports: no warnings.
            with np.errstate(over="ignore", invalid="ignore"):
                finished = self._run(batches, y, X_val, y_val, callbacks, should_stop)
            ending = "finished" if finished else "stopped"
            return ending
        except TrainingDiverged:
            ending = "diverged"
            raise
        finally:
            batches.close()
            self.state.rng_state = batches.rng_state()
            for cb in callbacks:
                cb.on_train_end(self, ending)

    def _run(self, batches: Batches, y, X_val, y_val, callbacks, should_stop) -> bool:
        cfg, st, rng = self.cfg, self.state, self.rng
        n = len(y)
        while st.epoch < cfg.epochs:
            if st.order is None:
                st.order = rng.permutation(n)
            batches.distortion = self.distortion_at(st.epoch)
            for cb in callbacks:
                cb.on_epoch_begin(self, st.epoch + 1, n, st.seen)
            while st.batch < batches.n_batches:
                idx = batches.indices(st.batch)
                t0 = time.perf_counter()
                loss, correct = self._step(batches, y[idx])
                st.seconds += time.perf_counter() - t0
                st.batch += 1
                st.loss_sum += loss * len(idx)
                st.correct += correct
                st.seen += len(idx)
                for cb in callbacks:
                    cb.on_batch_end(self, len(idx), loss)
                if should_stop():
                    return False
            row, kept = self._end_epoch(X_val, y_val)
            for cb in callbacks:
                cb.on_epoch_end(self, row, kept)
            if cfg.patience and st.epoch - st.kept_epoch >= cfg.patience:
                break
            if st.epoch < cfg.epochs and should_stop():
                return False
        return True

    def _step(self, batches: Batches, yb: np.ndarray) -> tuple[float, int]:
        """One optimiser step on the current batch; returns its loss and number of correct
        predictions."""
        net, cfg, st = self.net, self.cfg, self.state
        Xb = batches.take(st.batch)                                  # (B, 784)
        Z, cache = net.forward(Xb, self.dropout, self.rng)           # (B, 10)
        batches.prepare(st.batch + 1)         # the next batch's distortions, meanwhile
        correct = int(np.count_nonzero(Z.argmax(axis=1) == yb))
        loss, dZ = softmax_cross_entropy(Z, yb, cfg.label_smoothing)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss} at epoch {st.epoch + 1}, batch {st.batch + 1}; "
                f"try a lower learning rate than {cfg.lr}")
        lr = self.lr_at(st.step)
        dZ *= dZ.dtype.type(self.optimizer.gradient_scale(lr))     # SGD: -lr, see optim
        dW, db = net.backward(dZ, cache)                         # scaled alike: linear in dZ
        self.optimizer.step([*dW, *db], lr, scaled=True)
        if cfg.max_norm:
            for W in net.W:
                clip_row_norms_(W, cfg.max_norm)
        if self.average is not None:
            self.average.update()
        st.step += 1
        return loss, correct

    def distortion_at(self, epoch: int) -> Distortion | None:
        """The distortions of epoch ``epoch`` (0 first): the preset's ranges times a strength
        falling linearly from 1 in the first epoch to ``augment_end`` in the last; None
        without distortions."""
        preset = AUGMENTATIONS[self.cfg.augment]
        if preset is None or self.cfg.augment_end == 1:
            return preset
        progress = epoch / (self.cfg.epochs - 1)      # augment_end < 1 needs epochs >= 2
        return preset.at_strength(1 - (1 - self.cfg.augment_end) * progress)

    def averaged_net(self) -> MLP:
        """The network with the averaged weights (``cfg.ema`` > 0)."""
        params = self.average.averaged()
        L = len(self.net.W)
        return MLP.from_params(params[:L], params[L:])

    def kept_net(self) -> MLP:
        """The network to save for the epoch just ended: the averaged weights when they
        validated at least as well as the weights (or there is no validation split)."""
        if self.average is not None and average_is_kept(self.state.history[-1]):
            return self.averaged_net()
        return self.net

    def _scores(self, net: MLP, X_val: np.ndarray, y_val: np.ndarray
                ) -> tuple[float | None, float | None]:
        """(loss, accuracy) of ``net`` on the validation split; (None, None) without one."""
        if not len(y_val):
            return None, None
        try:
            logits = net.logits(X_val)
        except FloatingPointError as exc:
            raise TrainingDiverged(f"{exc} after epoch {self.state.epoch + 1}; try a lower "
                                   f"learning rate than {self.cfg.lr}") from None
        return metrics.mean_cross_entropy(logits, y_val), metrics.accuracy(
            y_val, logits.argmax(axis=1))

    def _end_epoch(self, X_val: np.ndarray, y_val: np.ndarray) -> tuple[dict[str, Any], bool]:
        st = self.state
        val_loss, val_accuracy = self._scores(self.net, X_val, y_val)
        ema_loss = ema_accuracy = None
        if self.average is not None:
            ema_loss, ema_accuracy = self._scores(self.averaged_net(), X_val, y_val)
        row = {
            "epoch": st.epoch + 1,
            "lr": self.lr_at(max(st.step - 1, 0)),
            "train_loss": st.loss_sum / st.seen,
            "train_accuracy": st.correct / st.seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "ema_val_loss": ema_loss,
            "ema_val_accuracy": ema_accuracy,
            "train_seconds": st.seconds,
        }
        st.epoch += 1
        st.history.append(row)
        row["kept_epoch"] = st.kept_epoch = kept_epoch(st.history, self.cfg.select_tolerance)
        score = val_score(st.history[st.kept_epoch - 1])
        st.kept_val_accuracy = -1.0 if score is None else score
        st.order, st.batch = None, 0
        st.loss_sum, st.correct, st.seen, st.seconds = 0.0, 0, 0, 0.0
        st.rng_state = self.rng.bit_generator.state  # the state to save with this epoch
        return row, st.kept_epoch == st.epoch


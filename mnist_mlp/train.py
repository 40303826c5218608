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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import metrics
from .augment import AUGMENTATIONS, Distortion, mixup
from .batches import Batches
from .config import TrainConfig
from .network import MLP, softmax_cross_entropy
from .optim import Optimizer, WeightAverage, clip_row_norms_, make_optimizer, make_schedule
from .records import TrainState, average_is_kept, kept_epoch, val_score


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; parameters were left at the last good step."""


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

    def fit(self, X: np.ndarray, y: np.ndarray,
            validation: tuple[np.ndarray, np.ndarray] | None = None,
            callbacks: Sequence[Callback] = (),
            should_stop: Callable[[], bool] = lambda: False) -> Ending:
        """Train until ``cfg.epochs`` or early stopping, or until ``should_stop``.

        Args:
            X, y: training split, float (n, 784) and int64 (n,).
            validation: (X_val, y_val), the validation split, same layout; None (or
                empty, val_size 0) for none, when every epoch counts as the best so far.
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
        validation = (X[:0], y[:0]) if validation is None else validation
        for cb in callbacks:
            cb.on_train_begin(self)
        ending: Ending = "failed"
        batches = Batches(X, self.cfg.batch_size, self.state, self.rng,
                          AUGMENTATIONS[self.cfg.augment])     # each epoch's: in _run
        try:
            # Overflow shows up as a non-finite loss, which _step reports: no warnings.
            with np.errstate(over="ignore", invalid="ignore"):
                finished = self._run(batches, y, validation, callbacks, should_stop)
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

    def _run(self, batches: Batches, y, validation, callbacks, should_stop) -> bool:
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
            row, kept = self._end_epoch(*validation)
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
        mixed, yb_main = None, yb
        if cfg.mixup:
            Xb, perm, lam = mixup(Xb, cfg.mixup, self.rng)
            mixed = yb[perm], lam
            yb_main = yb if lam >= 0.5 else yb[perm]                 # the larger part's
        Z, cache = net.forward(Xb, self.dropout, self.rng)           # (B, 10)
        batches.prepare(st.batch + 1)         # the next batch's distortions, meanwhile
        correct = int(np.count_nonzero(Z.argmax(axis=1) == yb_main))
        loss, dZ = softmax_cross_entropy(Z, yb, cfg.label_smoothing, mixed)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss} at epoch {st.epoch + 1}, batch {st.batch + 1}; "
                f"try a lower learning rate than {cfg.lr}")
        dW, db = net.backward(dZ, cache)
        self.optimizer.step([*dW, *db], self.lr_at(st.step))
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


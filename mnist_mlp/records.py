"""A run's record format: its history rows (the metrics log), the kept-epoch rule and its
inputs, and the train state saved for resuming, with the checks a saved one passes.

The training loop writes these records and every reader of a run (its files, plots, the
page, export, a sweep's results) reads them through here, without the loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

ROW_KEYS = ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "train_seconds")
# Scores of the averaged weights (--ema): null or absent when there are none.
AVERAGE_KEYS = ("ema_val_loss", "ema_val_accuracy")

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
    # 1e-9: best - tolerance may round above a score exactly that far below (0.92 - 0.1)
    return max(epoch for score, epoch in scored if score >= best - tolerance - 1e-9)



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


def run_title(meta: Mapping[str, Any]) -> str:
    """A run's title for its pictures, from its checkpoint's metadata: the layer sizes and
    preset, the dataset when it is not MNIST, and what the run started from: the model
    (``init``) and the users' images (``extra``) mixed in."""
    parts = [str(meta.get("preset") or "flags")]
    if meta.get("dataset", "mnist") != "mnist":
        parts.append(str(meta["dataset"]))
    init = meta.get("init")
    if isinstance(init, dict) and isinstance(init.get("model"), str):
        parts.append(f"from {PurePath(init['model']).name}")
    extra = meta.get("extra")
    if isinstance(extra, list) and extra:
        count = sum(r["count"] for r in extra if isinstance(r, dict)
                    and type(r.get("count")) is int)
        parts.append(f"+ {count:,} users' images")
    return f"{'-'.join(map(str, meta.get('sizes', [])))} ({', '.join(parts)})"

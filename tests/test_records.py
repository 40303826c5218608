"""A run's records: the kept-epoch rule and an epoch's score, history rows, and a saved
train state checked before it is trusted."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp.records import TrainState, average_is_kept, is_history_row, kept_epoch, val_score

from .test_train import _fit, _trainer


def _rows(val, ema=None):
    ema = ema or [None] * len(val)
    return [{"epoch": i, "val_accuracy": v, "ema_val_accuracy": e}
            for i, (v, e) in enumerate(zip(val, ema), 1)]


def test_the_kept_epoch_rule():
    val = [0.90, 0.950, 0.949, 0.950, 0.944, 0.9495]
    assert kept_epoch(_rows(val)) == 2                      # the first best
    assert kept_epoch(_rows(val), 0.001) == 6               # the latest within 0.1 points
    assert kept_epoch(_rows(val), 0.0005) == 6              # 0.9495 is exactly 0.05 below
    assert kept_epoch(_rows(val), 0.0004) == 4
    # the average's score counts too: epoch 5's average is the best of all
    assert kept_epoch(_rows(val, [0.91, 0.94, 0.94, 0.94, 0.96, 0.90]), 0.001) == 5
    assert kept_epoch(_rows([None, None, None])) == 3     # no validation: the last


def test_a_score_exactly_tolerance_below_the_best_is_within_it():
    # 0.92 - 0.1 rounds up to 0.8200000000000001 in binary: the rule allows for that
    assert 0.92 - 0.1 > 0.82
    assert kept_epoch(_rows([0.92, 0.82]), 0.1) == 2
    assert kept_epoch(_rows([0.92, 0.8199]), 0.1) == 1


def test_an_epochs_score_is_the_better_of_weights_and_average():
    assert val_score({"val_accuracy": 0.9, "ema_val_accuracy": 0.95}) == 0.95
    assert val_score({"val_accuracy": 0.9, "ema_val_accuracy": None}) == 0.9
    assert val_score({"val_accuracy": None, "ema_val_accuracy": "x"}) is None
    assert average_is_kept({"val_accuracy": 0.9, "ema_val_accuracy": 0.9})
    assert not average_is_kept({"val_accuracy": 0.91, "ema_val_accuracy": 0.9})
    assert average_is_kept({"val_accuracy": None, "ema_val_accuracy": None})


def _saved_state():
    trainer = _trainer(epochs=2, val_size=50, batch_size=50)
    calls = iter(range(100))
    _fit(trainer, should_stop=lambda: next(calls) == 7)   # 5 steps, epoch 1's end, 2 steps
    return trainer.state.to_meta(), trainer.state.order


def test_a_saved_state_is_read_back():
    meta, order = _saved_state()
    state = TrainState.from_meta(meta, order, 250, 50)
    assert state.batch == 2 and state.epoch == 1 and np.array_equal(state.order, order)
    assert state.rng_state == meta["rng_state"]


@pytest.mark.parametrize("change, message", [
    ({"epoch": -1}, "epoch -1 is not a count"),
    ({"epoch": 1.5}, "epoch 1.5 is not a count"),
    ({"epoch": True}, "epoch True is not a count"),
    ({"batch": 99}, r"batch 99 is not a count in \[0, 5\]"),
    ({"seen": "many"}, "seen 'many' is not a count"),
    ({"kept_epoch": 7}, "kept_epoch 7 is not a count"),
    ({"kept_val_accuracy": 7.0}, r"kept_val_accuracy 7.0 is not in \[0, 1\]"),
    ({"kept_val_accuracy": -0.5}, r"kept_val_accuracy -0.5 is not in \[0, 1\]"),
    ({"loss_sum": float("nan")}, "loss_sum nan is not a finite number"),
    ({"seconds": None}, "seconds None is not a finite number"),
    ({"history": {}}, "history is not one row per finished epoch"),
    ({"history": [{"epoch": 1, "lr": "fast"}]}, "history is not one row per finished epoch"),
    ({"rng_state": {"bit_generator": "PCG64"}}, "rng_state is not a generator state"),
    ({"rng_state": {"bit_generator": "PCG64", "state": {"state": 2**200, "inc": 1},
                    "has_uint32": 0, "uinteger": 0}}, "rng_state is not a generator state"),
    ({"rng_state": "seed"}, "rng_state is not a generator state"),
    ({"extra": 1}, "must have exactly the keys"),
    ({"best_epoch": 1}, "must have exactly the keys"),       # no other name for the kept one
])
def test_hostile_states_are_refused(change, message):
    meta, order = _saved_state()
    with pytest.raises(ValueError, match=message):
        TrainState.from_meta({**meta, **change}, order, 250, 50)


@pytest.mark.parametrize("order", [None, np.arange(249), np.zeros(250, np.int64),
                                   np.arange(250, dtype=np.float64), np.arange(1, 251)])
def test_a_sample_order_must_be_a_permutation(order):
    meta, _ = _saved_state()
    with pytest.raises(ValueError, match="not a permutation of 250"):
        TrainState.from_meta(meta, order, 250, 50)


# ---------------------------------------------------------------- history rows

ROW = {"epoch": 2, "lr": 0.1, "train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.4,
       "val_accuracy": 0.91, "ema_val_loss": None, "ema_val_accuracy": None,
       "train_seconds": 1.5, "kept_epoch": 1}


@pytest.mark.parametrize("change", [
    {"lr": 1}, {"train_seconds": 0}, {"val_loss": None, "val_accuracy": None},
    {"ema_val_loss": 0.3, "ema_val_accuracy": 1}, {"kept_epoch": 2},
])
def test_history_rows_that_are_fine(change):
    row = {**ROW, **change}
    assert is_history_row(row, 2)
    assert not is_history_row(row, 3)


@pytest.mark.parametrize("change", [
    {"epoch": True}, {"epoch": 2.0}, {"lr": True}, {"lr": 10**400}, {"lr": 1e308},
    {"lr": -0.1}, {"lr": float("nan")}, {"lr": float("inf")}, {"lr": None},
    {"train_loss": "0.5"}, {"val_accuracy": 7.0}, {"train_accuracy": -0.1},
    {"ema_val_accuracy": 1.5}, {"kept_epoch": 3}, {"kept_epoch": 0}, {"kept_epoch": True},
    {"train_seconds": None},
])
def test_history_rows_that_are_refused(change):
    assert not is_history_row({**ROW, **change}, 2)
    assert not is_history_row([ROW], 2) and not is_history_row(None, 2)


def test_a_runs_title_says_what_it_started_from():
    from mnist_mlp.records import run_title

    assert run_title({"sizes": [784, 800, 10], "preset": "default"}) == "784-800-10 (default)"
    meta = {"sizes": [784, 16, 10], "preset": "tune", "dataset": "fashion-mnist",
            "init": {"model": "/m/default.npz", "sha256": "ab"},
            "extra": [{"folder": "/a", "count": 100, "sha256": "x"},
                      {"folder": "/b", "count": 1200, "sha256": "y"}]}
    assert run_title(meta) == ("784-16-10 (tune, fashion-mnist, from default.npz, + 1,300 "
                               "users' images)")
    assert run_title({"sizes": [784, 10], "init": None, "extra": []}) == "784-10 (flags)"

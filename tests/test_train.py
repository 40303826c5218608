"""The training loop: early stopping, training without validation, callbacks, and a saved
state checked before it is trusted."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp.config import resolve
from mnist_mlp.run import new_trainer
from mnist_mlp.train import Callback, TrainState, kept_epoch

from .conftest import synthetic_digits


def _data(n=300, seed=1):
    images, labels = synthetic_digits(n, seed)
    return images.reshape(n, -1).astype(np.float32) / 255, labels.astype(np.int64)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        self.events.append(("begin", epoch))

    def on_batch_end(self, trainer, n, loss):
        self.events.append(("batch", n))

    def on_epoch_end(self, trainer, row, improved):
        self.events.append(("end", row["epoch"], improved))


def test_callbacks_are_called_in_turn():
    X, y = _data()
    first, second = Recorder(), Recorder()
    trainer = new_trainer(resolve({"hidden": (8,), "epochs": 2, "batch_size": 100,
                                   "val_size": 50}), 250)
    trainer.fit(X[:250], y[:250], X[250:], y[250:], [first, second])
    assert first.events == second.events
    assert [e for e in first.events if e[0] != "end"] == [
        ("begin", 1), ("batch", 100), ("batch", 100), ("batch", 50),
        ("begin", 2), ("batch", 100), ("batch", 100), ("batch", 50)]


def test_patience_stops_after_epochs_without_improvement():
    X, y = _data()
    # lr so small nothing improves after the first epochs; patience 2 stops the run early
    trainer = new_trainer(resolve({"hidden": (8,), "epochs": 30, "val_size": 50, "lr": 1e-6,
                                   "schedule": "constant", "patience": 2}), 250)
    assert trainer.fit(X[:250], y[:250], X[250:], y[250:])
    st = trainer.state
    assert st.epoch < 30 and st.epoch - st.best_epoch == 2
    accuracies = [r["val_accuracy"] for r in st.history]
    assert max(accuracies[st.best_epoch:]) <= accuracies[st.best_epoch - 1]


def test_without_validation_every_epoch_is_kept():
    X, y = _data()
    recorder = Recorder()
    trainer = new_trainer(resolve({"hidden": (8,), "epochs": 3, "val_size": 0}), 300)
    empty_X, empty_y = X[:0], y[:0]
    assert trainer.fit(X, y, empty_X, empty_y, [recorder])
    assert [e for e in recorder.events if e[0] == "end"] == [("end", 1, True), ("end", 2, True),
                                                           ("end", 3, True)]
    assert all(r["val_loss"] is None and r["val_accuracy"] is None
               for r in trainer.state.history)
    assert trainer.state.best_epoch == 3


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


def test_the_average_is_scored_each_epoch_and_kept_when_better():
    X, y = _data()
    trainer = new_trainer(resolve({"hidden": (16,), "epochs": 4, "val_size": 50, "lr": 0.05,
                                   "batch_size": 25, "ema": 0.9}), 250)
    kept = []

    class Keep(Callback):
        def on_epoch_end(self, trainer, row, improved):
            kept.append(trainer.kept_net())

    trainer.fit(X[:250], y[:250], X[250:], y[250:], [Keep()])
    for row, net in zip(trainer.state.history, kept):
        assert row["ema_val_accuracy"] is not None and row["ema_val_loss"] > 0
        averaged = row["ema_val_accuracy"] >= row["val_accuracy"]
        assert (net is not trainer.net) == averaged
    # the average is not the weights: it lags behind them
    assert not np.array_equal(trainer.averaged_net().W[0], trainer.net.W[0])
    assert trainer.state.best_epoch == kept_epoch(trainer.state.history)


def test_the_average_never_changes_the_weights():
    X, y = _data()
    nets = []
    for ema in (0.0, 0.9):
        trainer = new_trainer(resolve({"hidden": (16,), "epochs": 2, "val_size": 50,
                                       "batch_size": 25, "augment": "elastic",
                                       "dropout": (0.2,), "ema": ema}), 250)
        trainer.fit(X[:250], y[:250], X[250:], y[250:])
        nets.append(trainer.net)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(nets[0].params, nets[1].params))


def _saved_state():
    X, y = _data()
    trainer = new_trainer(resolve({"hidden": (8,), "epochs": 2, "val_size": 50,
                                   "batch_size": 50}), 250)
    calls = iter(range(100))
    trainer.fit(X[:250], y[:250], X[250:], y[250:], should_stop=lambda: next(calls) == 6)
    return trainer.state.to_meta(), trainer.state.order


def test_a_saved_state_is_read_back():
    meta, order = _saved_state()
    state = TrainState.from_meta(meta, order, 250, 50)
    assert state.batch == 2 and state.epoch == 1 and np.array_equal(state.order, order)


@pytest.mark.parametrize("change, message", [
    ({"epoch": -1}, "epoch -1 is not a count"),
    ({"epoch": 1.5}, "epoch 1.5 is not a count"),
    ({"batch": 99}, r"batch 99 is not a count in \[0, 5\]"),
    ({"seen": "many"}, "seen 'many' is not a count"),
    ({"best_epoch": 7}, "best_epoch 7 is not a count"),
    ({"loss_sum": float("nan")}, "loss_sum nan is not a finite number"),
    ({"seconds": None}, "seconds None is not a finite number"),
    ({"history": {}}, "history is not one row per finished epoch"),
    ({"history": [{"epoch": 1, "lr": "fast"}]}, "history is not one row per finished epoch"),
    ({"rng_state": {"bit_generator": "PCG64"}}, "rng_state is not a generator state"),
    ({"rng_state": {"bit_generator": "PCG64", "state": {"state": 2**200, "inc": 1},
                    "has_uint32": 0, "uinteger": 0}}, "rng_state is not a generator state"),
    ({"rng_state": "seed"}, "rng_state is not a generator state"),
    ({"extra": 1}, "must have exactly the keys"),
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

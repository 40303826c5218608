"""The training loop: callbacks and their lifecycle, early stopping, training without
validation, the kept epoch, the weight average, and the state at each epoch's end."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mnist_mlp import batches
from mnist_mlp.augment import AUGMENTATIONS, draw
from mnist_mlp.config import resolve
from mnist_mlp.network import MLP
from mnist_mlp.records import TrainState, kept_epoch
from mnist_mlp.train import Callback, Trainer, TrainingDiverged

from .tiny_data import synthetic_digits


def _data(n=300, seed=1):
    images, labels = synthetic_digits(n, seed)
    return images.reshape(n, -1).astype(np.float32) / 255, labels.astype(np.int64)


def _trainer(n_train=250, state=None, **settings) -> Trainer:
    cfg = resolve({"hidden": (8,), **settings})
    return Trainer(cfg, MLP(cfg.sizes, seed=cfg.seed), n_train, state or TrainState())


def _fit(trainer, callbacks=(), should_stop=lambda: False):
    X, y = _data()
    return trainer.fit(X[:250], y[:250], (X[250:], y[250:]), callbacks, should_stop)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        self.events.append(("begin", epoch))

    def on_batch_end(self, trainer, n, loss):
        self.events.append(("batch", n))

    def on_epoch_end(self, trainer, row, kept):
        self.events.append(("end", row["epoch"], kept))

    def on_train_end(self, trainer, ending):
        self.events.append(("train_end", ending))


def test_callbacks_are_called_in_turn_from_begin_to_end():
    first, second = Recorder(), Recorder()
    trainer = _trainer(epochs=2, batch_size=100, val_size=50)
    assert _fit(trainer, [first, second]) == "finished"
    assert first.events == second.events
    assert [e for e in first.events if e[0] != "end"] == [
        ("train_begin",),
        ("begin", 1), ("batch", 100), ("batch", 100), ("batch", 50),
        ("begin", 2), ("batch", 100), ("batch", 100), ("batch", 50),
        ("train_end", "finished")]


def test_a_stopped_run_ends_stopped_where_it_stopped():
    recorder = Recorder()
    calls = iter(range(100))         # polled after each of 3 steps, and after epoch 1
    trainer = _trainer(epochs=2, batch_size=100)
    assert _fit(trainer, [recorder], should_stop=lambda: next(calls) == 4) == "stopped"
    assert recorder.events.count(("train_begin",)) == 1
    assert recorder.events[-1] == ("train_end", "stopped")
    assert (trainer.state.epoch, trainer.state.batch, trainer.state.step) == (1, 1, 4)
    calls = iter(range(100))
    trainer = _trainer(epochs=2, batch_size=100)
    assert _fit(trainer, should_stop=lambda: next(calls) == 3) == "stopped"
    assert (trainer.state.epoch, trainer.state.batch, trainer.state.order) == (1, 0, None)


def test_a_diverged_run_tells_its_callbacks():
    recorder = Recorder()
    trainer = _trainer(epochs=2)
    for W in trainer.net.W:
        W *= np.float32(1e20)                    # finite, but the logits overflow
    before = [p.copy() for p in trainer.net.params]
    with pytest.raises(TrainingDiverged, match="the loss became nan at epoch 1, batch 1; try a "
                                                "lower learning rate than 0.1"):
        _fit(trainer, [recorder])
    assert recorder.events == [("train_begin",), ("begin", 1), ("train_end", "diverged")]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, trainer.net.params))


def test_a_failing_callback_ends_the_run_as_failed():
    class Broken(Callback):
        def on_epoch_end(self, trainer, row, kept):
            raise OSError("disk full")

    recorder = Recorder()
    with pytest.raises(OSError, match="disk full"):
        _fit(_trainer(epochs=2), [Broken(), recorder])
    assert recorder.events[-1] == ("train_end", "failed")
    assert recorder.events.count(("train_begin",)) == 1


def test_patience_stops_after_epochs_without_improvement():
    # lr so small nothing improves after the first epochs; patience 2 stops the run early
    trainer = _trainer(epochs=30, val_size=50, lr=1e-6, schedule="constant", patience=2)
    assert _fit(trainer) == "finished"
    st = trainer.state
    assert st.epoch < 30 and st.epoch - st.kept_epoch == 2
    accuracies = [r["val_accuracy"] for r in st.history]
    assert max(accuracies[st.kept_epoch:]) <= accuracies[st.kept_epoch - 1]
    assert st.kept_val_accuracy == accuracies[st.kept_epoch - 1]


def test_without_validation_every_epoch_is_kept():
    X, y = _data()
    recorder = Recorder()
    trainer = _trainer(300, epochs=3, val_size=0)
    assert trainer.fit(X, y, None, [recorder]) == "finished"
    assert [e for e in recorder.events if e[0] == "end"] == [("end", 1, True), ("end", 2, True),
                                                           ("end", 3, True)]
    assert all(r["val_loss"] is None and r["val_accuracy"] is None
               for r in trainer.state.history)
    assert trainer.state.kept_epoch == 3 and trainer.state.kept_val_accuracy == -1


def test_the_average_is_scored_each_epoch_and_kept_when_better():
    trainer = _trainer(hidden=(16,), epochs=4, val_size=50, lr=0.05, batch_size=25, ema=0.9)
    kept = []

    class Keep(Callback):
        def on_epoch_end(self, trainer, row, is_kept):
            kept.append(trainer.kept_net())

    _fit(trainer, [Keep()])
    for row, net in zip(trainer.state.history, kept):
        assert row["ema_val_accuracy"] is not None and row["ema_val_loss"] > 0
        averaged = row["ema_val_accuracy"] >= row["val_accuracy"]
        assert (net is not trainer.net) == averaged
    # the average is not the weights: it lags behind them
    assert not np.array_equal(trainer.averaged_net().W[0], trainer.net.W[0])
    assert trainer.state.kept_epoch == kept_epoch(trainer.state.history)


def test_the_average_never_changes_the_weights():
    nets = []
    for ema in (0.0, 0.9):
        trainer = _trainer(hidden=(16,), epochs=2, val_size=50, batch_size=25,
                           augment="elastic", dropout=(0.2,), ema=ema)
        _fit(trainer)
        nets.append(trainer.net)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(nets[0].params, nets[1].params))


def test_the_trainer_decays_weights_not_biases():
    trainer = _trainer(hidden=(8, 4), weight_decay=0.1)
    n = len(trainer.net.W)
    assert trainer.optimizer.decay == [0.1] * n + [0.0] * n


def test_distortions_weaken_linearly_to_augment_end():
    preset = AUGMENTATIONS["elastic"]
    trainer = _trainer(augment="elastic", augment_end=0.25, epochs=5)
    strengths = [trainer.distortion_at(e).rotate_deg / preset.rotate_deg for e in range(5)]
    np.testing.assert_allclose(strengths, [1, 0.8125, 0.625, 0.4375, 0.25])
    assert trainer.distortion_at(4) == preset.at_strength(0.25)
    assert _trainer(augment="elastic", epochs=5).distortion_at(4) is preset
    assert _trainer(augment="none").distortion_at(0) is None


def test_each_epoch_is_distorted_at_its_strength(monkeypatch):
    drawn = []                                       # (epoch, distortion) of each batch

    def recording_draw(d, n, rng):
        drawn.append((trainer.state.epoch, d))
        return draw(d, n, rng)

    monkeypatch.setattr(batches, "draw", recording_draw)
    trainer = _trainer(augment="affine", augment_end=0.0, epochs=3, batch_size=50)
    _fit(trainer)
    assert len(drawn) == 3 * 5
    assert all(d == trainer.distortion_at(epoch) for epoch, d in drawn)
    assert {d.rotate_deg for _, d in drawn} == {12, 6, 0}


def test_dropout_per_hidden_layer():
    per_layer = _trainer(hidden=(16, 8), dropout=(0.5, 0.1), input_dropout=0.2)
    assert per_layer.dropout == [0.2, 0.5, 0.1]
    shared = _trainer(hidden=(16, 8), dropout=(0.3,))
    assert shared.dropout == [0.0, 0.3, 0.3]


# ---------------------------------------------------------------- the state

SETTINGS = {"hidden": (16,), "epochs": 3, "val_size": 50, "batch_size": 32,
            "augment": "elastic", "augment_end": 0.2, "dropout": (0.3,), "ema": 0.9}


def test_the_state_at_each_epochs_end_resumes_bit_for_bit():
    """What a run saves at an epoch's end (its state, parameters, optimiser and average)
    continues exactly as the run itself did: the generator's state is synced there."""
    saved = {}

    class Snapshot(Callback):
        def on_epoch_end(self, trainer, row, kept):
            assert trainer.state.rng_state == trainer.rng.bit_generator.state
            if row["epoch"] == 1:
                saved.update(meta=copy.deepcopy(trainer.state.to_meta()),
                             params=[p.copy() for p in trainer.net.params],
                             opt={k: v.copy() for k, v in trainer.optimizer.state_dict().items()},
                             avg={k: v.copy() for k, v in trainer.average.state_dict().items()})

    whole = _trainer(**SETTINGS)
    _fit(whole, [Snapshot()])
    state = TrainState.from_meta(saved["meta"], None, 250, 32)
    net = MLP.from_params(saved["params"][:2], saved["params"][2:])
    again = Trainer(resolve(SETTINGS), net, 250, state)
    again.optimizer.load_state_dict(saved["opt"])
    again.average.load_state_dict(saved["avg"])
    _fit(again)
    for a, b in zip(whole.net.params + whole.average.m, again.net.params + again.average.m):
        assert a.tobytes() == b.tobytes()
    assert [{**r, "train_seconds": 0} for r in whole.state.history] == [
        {**r, "train_seconds": 0} for r in again.state.history]

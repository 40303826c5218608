"""A saved run read back: its config, the splits to score it on, and its resumable state
checked before it is trusted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mnist_mlp import checkpoint
from mnist_mlp.config import ConfigError, resolve
from mnist_mlp.dataset import DataSource
from mnist_mlp.resume import evaluation_split, load_saved_run, resumed_config, saved_config
from mnist_mlp.runfiles import RunError, RunFiles

from .tiny_data import TINY, copy_run, tiny_source, train_tiny


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory):
    """One epoch of the TINY config with Adam and a weight average (read-only)."""
    out = tmp_path_factory.mktemp("adam-run") / "m.npz"
    train_tiny(out, tiny_source(tmp_path_factory.mktemp("data")), epochs=1, optimizer="adam",
               ema=0.9)
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> RunFiles:
    return RunFiles(copy_run(tiny_run, tmp_path / "run"))


def _rewrite(path, meta=None, state=None, optimizer=None, extra=None, drop_extra=()):
    """Save ``path`` again with metadata, train state, optimiser state or extras changed."""
    ckpt = checkpoint.load(path, with_state=True)
    ckpt.meta.update(meta or {})
    ckpt.meta["train_state"].update(state or {})
    ckpt.optimizer_state.update(optimizer or {})
    ckpt.extra.update(extra or {})
    for key in drop_extra:
        del ckpt.extra[key]
    checkpoint.save(path, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)


def _load(files, given, source):
    """The saved run, read as ``mlp train --resume`` reads it: its config (with ``given``)
    when the spec is built, its state under the lock."""
    resumed = resumed_config(files, given, source)
    return load_saved_run(files, resumed.cfg, resumed.source)


def _refused(files, source, *fragments, overrides=None, build=True):
    """The error loading (and building the trainer of) the saved run: one line naming the
    file, never calling the state good."""
    with pytest.raises(checkpoint.CheckpointError) as info:
        saved = _load(files, overrides or {}, source)
        if build:
            saved.trainer(source.n_train - saved.cfg.val_size)
    message = str(info.value)
    assert "\n" not in message and "good" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- config and splits

def test_the_saved_config_is_checked_as_a_file_would_be():
    assert saved_config({"config": resolve({"hidden": (16,)}).to_dict()}).hidden == (16,)
    with pytest.raises(ConfigError, match="it holds no training config"):
        saved_config({})
    with pytest.raises(ConfigError, match="val_size must be of type int"):
        saved_config({"config": {"val_size": "lots"}})
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        saved_config({"config": {"learning_rate": 0.1}})


def test_a_model_is_scored_on_its_own_runs_splits(tiny_run, tiny_mnist):
    meta = checkpoint.load(tiny_run).meta
    pixels, y = evaluation_split(meta, "test", tiny_mnist)
    assert pixels.dtype == np.uint8 and pixels.shape == (200, 28, 28) and len(y) == 200
    images, labels = tiny_mnist.load("train", flat=False)
    pixels, y = evaluation_split(meta, "val", tiny_mnist)           # the run held out 100
    np.testing.assert_array_equal(pixels, images[500:])
    np.testing.assert_array_equal(y, labels[500:])
    pixels, y = evaluation_split(meta, "train", tiny_mnist)
    np.testing.assert_array_equal(pixels, images[:500])


def test_splits_a_run_cannot_be_scored_on(tiny_run, tiny_mnist):
    meta = checkpoint.load(tiny_run).meta
    no_val = {**meta, "config": {**meta["config"], "val_size": 0}}
    with pytest.raises(RunError, match="there is no validation split"):
        evaluation_split(no_val, "val", tiny_mnist)
    assert len(evaluation_split(no_val, "train", tiny_mnist)[1]) == 600
    bad = {**meta, "config": {**meta["config"], "val_size": "lots"}}
    with pytest.raises(RunError, match="its training config is unusable .*'lots'.*; only the "
                                       "test split can score it"):
        evaluation_split(bad, "val", tiny_mnist)
    assert len(evaluation_split(bad, "test", tiny_mnist)[1]) == 200


# ---------------------------------------------------------------- the saved run

def test_a_saved_run_is_read_back_with_its_state(run_copy, tiny_mnist):
    saved = _load(run_copy, {}, tiny_mnist)
    assert saved.cfg == resolve(TINY)
    assert resumed_config(run_copy, {}, tiny_mnist).preset == "default"
    assert saved.state.epoch == 3 and len(saved.state.history) == 3
    trainer = saved.trainer(500)
    ckpt = checkpoint.load(run_copy.last, with_state=True)
    assert trainer.net is saved.ckpt.net and trainer.state is saved.state
    for key, value in trainer.optimizer.state_dict().items():
        assert value.tobytes() == ckpt.optimizer_state[key].tobytes(), key


def test_the_average_and_adams_moments_are_restored(adam_run, tiny_mnist):
    saved = _load(RunFiles(adam_run), {}, tiny_mnist)
    trainer = saved.trainer(500)
    ckpt = checkpoint.load(RunFiles(adam_run).last, with_state=True)
    assert sorted(trainer.optimizer.state_dict()) == sorted(ckpt.optimizer_state)
    assert all(trainer.optimizer.state_dict()[k].tobytes() == v.tobytes()
               for k, v in ckpt.optimizer_state.items())
    average = trainer.average.state_dict()
    assert all(average[k[4:]].tobytes() == v.tobytes() for k, v in ckpt.extra.items()
               if k.startswith("ema."))


def test_only_epochs_and_patience_may_change(run_copy, tiny_mnist):
    saved = _load(run_copy, {"epochs": 5, "patience": 2, "hidden": (16,), "lr": 0.1},
                  tiny_mnist)                                   # equal values are fine
    assert (saved.cfg.epochs, saved.cfg.patience) == (5, 2)
    with pytest.raises(ConfigError, match="only epochs, patience may change, not hidden, lr"):
        resumed_config(run_copy, {"lr": 0.3, "hidden": (8,), "epochs": 5}, tiny_mnist)


def test_a_run_replaced_since_its_config_was_read_is_refused(run_copy, tiny_mnist):
    cfg = resumed_config(run_copy, {"epochs": 5}, tiny_mnist).cfg
    assert load_saved_run(run_copy, cfg, tiny_mnist).cfg == cfg
    with pytest.raises(checkpoint.CheckpointError, match="replaced by another run meanwhile"):
        load_saved_run(run_copy, resolve({**TINY, "lr": 0.3}), tiny_mnist)


def test_nothing_to_resume(tmp_path, tiny_mnist):
    with pytest.raises(checkpoint.CheckpointError, match="m.last.npz: no such checkpoint"):
        resumed_config(RunFiles(tmp_path / "m.npz"), {}, tiny_mnist)


@pytest.mark.parametrize("state, message", [
    ({"epoch": -3}, "epoch -3 is not a count"),
    ({"rng_state": {"bit_generator": "MT19937"}}, "rng_state is not a generator state"),
    ({"step": 10**30}, "step 10000"),
    ({"history": "x"}, "history is not one row per finished epoch"),
    ({"kept_val_accuracy": 7.0}, "kept_val_accuracy 7.0 is not in [0, 1]"),
])
def test_hostile_resume_states_are_one_line(run_copy, tiny_mnist, state, message):
    _rewrite(run_copy.last, state=state)
    _refused(run_copy, tiny_mnist, f"{run_copy.last}: not a resumable checkpoint", message)


def test_a_run_on_other_data_is_not_resumed(run_copy, tiny_mnist):
    other = dataclasses.replace(tiny_mnist, resources=DataSource().resources)
    _refused(run_copy, other, f"{run_copy.last}: its data checksums are not those of the MNIST "
                              "files it would resume on")
    _rewrite(run_copy.last, meta={"data_sha256": {"train-images-idx3-ubyte": "0" * 64}})
    _refused(run_copy, tiny_mnist, "its data checksums are not those")


def test_a_config_that_does_not_fit_the_network(run_copy, tiny_mnist):
    ckpt = checkpoint.load(run_copy.last)
    _rewrite(run_copy.last, meta={"config": {**ckpt.meta["config"], "hidden": [32]}})
    _refused(run_copy, tiny_mnist, "layer sizes [784, 16, 10] do not match its config "
                                   "[784, 32, 10]")


def test_hostile_optimiser_state_is_one_line(run_copy, tiny_mnist):
    velocity = checkpoint.load(run_copy.last, with_state=True).optimizer_state["velocity.0"]
    velocity[0, 0] = np.inf
    _rewrite(run_copy.last, optimizer={"velocity.0": velocity})
    _refused(run_copy, tiny_mnist, "saved optimiser state: optimiser state velocity.0 holds "
                                   "NaN or infinity")
    velocity[0, 0] = 0
    _rewrite(run_copy.last, optimizer={"velocity.0": velocity, "lr_prev": np.array(0.1)})
    _refused(run_copy, tiny_mnist, "unexpected saved state ['opt.lr_prev']")


def test_negative_second_moments_are_refused(adam_run, tmp_path, tiny_mnist):
    files = RunFiles(copy_run(adam_run, tmp_path / "run"))
    v = checkpoint.load(files.last, with_state=True).optimizer_state["v.1"]
    v[3] = -1e-3
    _rewrite(files.last, optimizer={"v.1": v})
    _refused(files, tiny_mnist, "saved optimiser state: optimiser state holds negative second "
                                "moments v")


def test_hostile_weight_average_state_is_one_line(adam_run, tmp_path, tiny_mnist):
    files = RunFiles(copy_run(adam_run, tmp_path / "run"))
    m0 = checkpoint.load(files.last, with_state=True).extra["ema.m.0"]
    _rewrite(files.last, extra={"ema.m.0": m0.T.copy()})
    _refused(files, tiny_mnist, "extra.ema.m.0 is float32 (784, 16), the metadata calls for")
    files = RunFiles(copy_run(adam_run, tmp_path / "again"))   # the file above cannot load
    _rewrite(files.last, drop_extra=["ema.t"])
    _refused(files, tiny_mnist, "saved weight average: weight average state has keys")


def test_an_average_without_ema_is_refused(run_copy, tiny_mnist):
    _rewrite(run_copy.last, extra={"ema.t": np.array(3)})
    _refused(run_copy, tiny_mnist, "a weight average is saved but the run has no --ema")

"""Space files: the settings they give TrainConfig, and every bad one refused in one line
naming the file and the key, before any trial."""

from __future__ import annotations

import os
import signal
import time

import pytest
from click.testing import CliRunner

from mnist_mlp import plots
from mnist_mlp.sweep.space import MAX_SPACE_BYTES, SpaceError, load_space


def test_a_space_file_becomes_settings_of_train_config(tmp_path):
    optuna = pytest.importorskip("optuna")
    path = tmp_path / "space.toml"
    path.write_text('config = "default"\n[fixed]\nepochs = 3\n[search]\n'
                    'lr = { low = 0.02, high = 0.3, log = true }\n'
                    'hidden = { choices = [[800], [1024], [800, 800]] }\n'
                    'dropout = { low = 0.0, high = 0.5, step = 0.1 }\n'
                    'seed = { choices = [0, 1, 2] }\nbatch_size = { low = 64, high = 256 }\n')
    space = load_space(path)
    assert space.fixed == {"epochs": 3}
    assert space.search["hidden"].choices == ((800,), (1024,), (800, 800))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = {k: d.suggest(trial) for k, d in space.search.items()}
        cfg = space.resolve(params)                      # a valid TrainConfig every time
        assert cfg.epochs == 3 and 0.02 <= cfg.lr <= 0.3 and cfg.hidden in space.search[
            "hidden"].choices
        assert trial.params["hidden"] == ",".join(map(str, cfg.hidden))  # lists as labels
        assert isinstance(cfg.batch_size, int) and 64 <= cfg.batch_size <= 256
        assert round(cfg.dropout[0] * 10, 9) == round(cfg.dropout[0] * 10)
        seen.add(cfg.hidden)
        study.tell(trial, 0.5)
    assert seen == {(800,), (1024,), (800, 800)}


HOSTILE = [
    ('[search]\nlr = { low = 0.3, high = 0.02 }\n', "in [search], lr: reversed range"),
    ('[search]\nlr = { low = 0.1, high = 0.1 }\n', "in [search], lr: empty range"),
    ('[search]\nlearning_rate = { low = 0.1, high = 0.2 }\n', "unknown setting 'learning_rate'"),
    ('[search]\nlr = { low = 0.1, high = 0.2, base = 2 }\n', "lr: unknown key 'base'"),
    ('[search]\ndropout = { low = 0.0, high = 1.0 }\n', "dropout must be in [0, 1)"),
    ('[search]\nlr = { low = 0.0, high = 0.3 }\n', "lr must be in (0, 1e+06]"),
    ('[search]\nepochs = { low = 1.5, high = 3 }\n', "epochs must be of type int"),
    ('[search]\noptimizer = { choices = ["sgd", "rmsprop"] }\n', "optimizer must be one of"),
    ('[search]\noptimizer = { low = 1, high = 2 }\n', "optimizer takes choices"),
    ('[search]\nseed = { choices = [] }\n', "seed: choices must be a non-empty list"),
    ('[search]\nseed = { choices = [1, 1] }\n', "seed: a choice is listed twice"),
    ('[search]\ndropout = { low = 0.0, high = 0.5, log = true }\n', "needs low > 0"),
    ('[search]\nlr = { low = 0.1, high = 0.3, step = 0.15 }\n', "whole number of steps"),
    ('[fixed]\nlr = 0.1\n[search]\nlr = { low = 0.1, high = 0.3 }\n',
     "lr is both in [fixed] and in [search]"),
    ('[fixed]\nval_size = 0\n[search]\nlr = { low = 0.1, high = 0.3 }\n',
     "val_size is 0: a sweep selects on the validation split"),
    ('[search]\nval_size = { choices = [0, 5000] }\n', "with val_size = 0, val_size is 0"),
    ('[fixed]\nepochs = 2\n[search]\nwarmup_epochs = { low = 0.0, high = 4.0 }\n',
     "warmup_epochs = 4.0: warmup_epochs (4) must be between 0 and epochs (2)"),
    ('[fixed]\nbogus = 1\n[search]\nlr = { low = 0.1, high = 0.3 }\n', "in [fixed], unknown key"),
    ('epochs = 3\n[search]\nlr = { low = 0.1, high = 0.3 }\n', "unknown key 'epochs'"),
    ('config = "nope"\n[search]\nlr = { low = 0.1, high = 0.3 }\n',
     "config: no config file or preset 'nope'"),
    ('[fixed]\nepochs = 3\n', "nothing to search"),
    ('[search]\nlr = 0.1\n', "lr must be { low = ..., high = ... } or { choices = [...] }"),
    ('[search\nlr = 1', "not a TOML space file"),
]


@pytest.mark.parametrize("text, message", HOSTILE)
def test_a_bad_space_file_is_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(SpaceError) as caught:
        load_space(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_space_files_that_are_not_files_or_too_big_are_refused(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(SpaceError, match="is a FIFO, not a regular file"):
        load_space(fifo)     # refused at once: never blocks on the FIFO
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (MAX_SPACE_BYTES + 1))
    with pytest.raises(SpaceError, match="larger than 1,048,576 bytes"):
        load_space(huge)
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpaceError):
        load_space(deep)


@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGTERM, 143, ""),
    (signal.SIGINT, 130, "SIGINT: stopped outside a trial; nothing to save\n")])
def test_a_signal_while_the_results_are_drawn_stops_the_sweep_at_once(
        tmp_path, monkeypatch, signum, code, line):
    """A signal while `--trials 0` draws the results (of a space of 20,000 seeds) stops the
    sweep within a second, leaving no picture, rather than when the drawing ends."""
    pytest.importorskip("optuna")
    from mnist_mlp.cli.sweep import sweep as sweep_command

    space = tmp_path / "space.toml"
    space.write_text('config = "quick"\n[search]\nlr = { low = 0.05, high = 0.3 }\n'
                     f'seed = {{ choices = [{", ".join(map(str, range(20_000)))}] }}\n')
    sent = []

    def slow_drawing(fig, path):
        sent.append(time.monotonic())
        os.kill(os.getpid(), signum)
        time.sleep(10)                 # a drawing that would take 10 s more

    monkeypatch.setattr(plots, "save_figure", slow_drawing)
    result = CliRunner().invoke(sweep_command, [str(space), "--trials", "0", "--out",
                                                str(tmp_path / "sw")])
    assert result.exit_code == code, result.output
    assert time.monotonic() - sent[0] < 1
    assert result.stderr == line
    assert not (tmp_path / "sw" / "sweep.png").exists()


def test_a_space_may_start_every_trial_from_a_model_with_users_images(tmp_path):
    from mnist_mlp.sweep import SpaceError, load_space

    (tmp_path / "m.npz").write_bytes(b"")
    (tmp_path / "mine").mkdir()
    search = '[search]\nlr = { low = 0.01, high = 0.1 }\n'
    path = tmp_path / "s.toml"
    path.write_text(f'init = "m.npz"\nextra = ["mine"]\n{search}')
    space = load_space(path)
    assert (space.init, space.extra) == (tmp_path / "m.npz", (tmp_path / "mine",))
    path.write_text(search)
    assert load_space(path).fingerprint() != space.fingerprint()
    for text, message in (('init = "none.npz"\n', "none.npz: no such checkpoint"),
                          ('extra = "mine"\n', "extra must be a list of folders"),
                          ('extra = ["nowhere"]\n', "nowhere: not a folder")):
        path.write_text(text + search)
        with pytest.raises(SpaceError, match=message):
            load_space(path)

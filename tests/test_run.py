"""The job of `mlp train` as a library call: one process per --out, no silent overwrite,
memory checked first, stops that resume bit for bit (asked, signalled or SIGKILLed),
callbacks wired after the run's own."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mnist_mlp import checkpoint, metrics, run
from mnist_mlp.config import ConfigError, resolve
from mnist_mlp.dataset import DataSource, to_input
from mnist_mlp.files import exclusive_lock
from mnist_mlp.resume import evaluation_split
from mnist_mlp.runfiles import RunError, RunFiles, read_metrics, write_metrics
from mnist_mlp.train import Callback, TrainingDiverged

from .mirrors import Mirror
from .tiny_data import TINY, copy_run, train_run, train_tiny

TINY_DATA = Path(__file__).with_name("tiny_data.py")


class Ends(Callback):
    """Records the lifecycle calls it gets, and what the run's files held at each epoch."""

    def __init__(self, files: RunFiles | None = None):
        self.files, self.events = files, []

    def on_train_begin(self, trainer):
        self.events.append("begin")

    def on_epoch_end(self, trainer, row, kept):
        logged = len(read_metrics(self.files.metrics)) if self.files else None
        self.events.append(("epoch", row["epoch"], logged))

    def on_train_end(self, trainer, ending):
        self.events.append(ending)


# ---------------------------------------------------------------- the spec

def test_a_spec_is_built_from_defaults_a_config_file_and_flags(tmp_path, tiny_mnist):
    preset = tmp_path / "small.toml"
    preset.write_text("epochs = 2\nlr = 0.5\nhidden = [8]\n")
    spec = run.build_spec(tmp_path / "m.npz", preset, {"lr": 0.02}, data=tiny_mnist)
    assert spec.cfg == resolve({"epochs": 2, "lr": 0.02, "hidden": (8,)})
    assert (spec.preset, spec.start, spec.init, spec.threads) == ("small", "new", None, None)
    assert spec.data is tiny_mnist and spec.files == RunFiles(tmp_path / "m.npz")
    whole = run.build_spec(tmp_path / "m.npz", spec.cfg, {"epochs": 3}, data=tiny_mnist)
    assert whole.cfg == dataclasses.replace(spec.cfg, epochs=3) and whole.preset == "flags"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.out = tmp_path  # type: ignore[misc]


def test_a_plain_run_is_the_packaged_default_whatever_configs_holds(tmp_path, monkeypatch,
                                                                    tiny_mnist):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.toml").write_text("epochs = 1\nhidden = [8]\n")
    spec = run.build_spec(tmp_path / "m.npz", None, {"lr": 0.05}, data=tiny_mnist)
    assert spec.cfg == resolve({"lr": 0.05}) and spec.preset == "default"
    named = run.build_spec(tmp_path / "m.npz", "default", {}, data=tiny_mnist)
    assert named.cfg.epochs == 1          # asked for by name, ./configs/ comes first


def test_a_resumed_spec_is_the_saved_runs(tiny_run, tmp_path, tiny_mnist):
    out = copy_run(tiny_run, tmp_path)
    spec = run.build_spec(out, None, {"epochs": 5, "lr": 0.1}, data=tiny_mnist,
                          start=run.Start("resume"))        # lr as saved: fine
    assert spec.cfg == resolve({**TINY, "epochs": 5}) and spec.start == "resume"
    assert spec.preset == "default" and spec.init is None


def test_a_signal_while_a_run_trains_stops_it_saved(tmp_path, tiny_mnist):
    class Kill(Callback):
        def on_batch_end(self, trainer, n, loss):
            if trainer.state.step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    spec = run.build_spec(tmp_path / "m.npz", None, TINY, data=tiny_mnist)
    with run.Run(spec, run.Hooks(plots=False, callbacks=[Kill()])) as job:
        assert signal.getsignal(signal.SIGTERM) not in before.values()
        result = job.fit()
    assert (result.ending, result.signum) == ("stopped", signal.SIGTERM)
    assert result.trainer.state.step == 5
    assert checkpoint.load(RunFiles(tmp_path / "m.npz").last).meta["train_state"]["step"] == 5
    assert all(signal.getsignal(s) is handler for s, handler in before.items())


def test_a_run_trains_with_the_threads_it_is_given(tmp_path, tiny_mnist):
    from threadpoolctl import threadpool_info

    class Threads(Callback):
        def on_train_begin(self, trainer):
            self.seen = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    seen = Threads()
    spec = run.build_spec(tmp_path / "m.npz", None, {**TINY, "epochs": 1}, data=tiny_mnist)
    run.train(dataclasses.replace(spec, threads=2), run.Hooks(plots=False, callbacks=[seen]))
    assert seen.seen == {2}


def test_a_run_is_not_silently_replaced(tiny_run, tmp_path, tiny_mnist):
    out = copy_run(tiny_run, tmp_path)
    first = out.read_bytes()
    with pytest.raises(RunError) as info:
        train_run(out, tiny_mnist, flags={**TINY, "seed": 1})
    assert str(info.value).startswith(
        f"{out} already holds a run of 784-16-10, epoch 3 of 3; continue it with --resume, "
        "replace it with --overwrite")
    assert out.read_bytes() == first
    train_tiny(out, tiny_mnist, seed=1)
    assert out.read_bytes() != first
    assert checkpoint.load(out).meta["config"]["seed"] == 1


def test_a_finished_run_is_returned_with_its_files(tmp_path, tiny_mnist):
    ends = Ends(RunFiles(tmp_path / "m.npz"))
    result = train_run(tmp_path / "m.npz", tiny_mnist, flags=TINY, callbacks=[ends])
    assert (result.ending, result.signum, result.files) == ("finished", None,
                                                            RunFiles(tmp_path / "m.npz"))
    assert result.trainer.state.epoch == 3 and result.trainer.cfg == resolve(TINY)
    # the run's own callbacks come first: each epoch is in the log when ours is called
    assert ends.events == ["begin", ("epoch", 1, 1), ("epoch", 2, 2), ("epoch", 3, 3),
                           "finished"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.last.npz", "m.lock",
                                                          "m.metrics.jsonl", "m.npz", "tiny"]
    ckpt = checkpoint.load(tmp_path / "m.npz")
    assert ckpt.meta["epoch"] == result.trainer.state.kept_epoch
    assert ckpt.meta["data_sha256"] == tiny_mnist.checksums() and ckpt.input_scale == 255
    assert ckpt.meta["preset"] == "default" and ckpt.meta["config"] == resolve(TINY).to_dict()


def test_a_config_file_is_the_base_of_the_flags(tmp_path, tiny_mnist):
    preset = tmp_path / "small.toml"
    preset.write_text("epochs = 2\nlr = 0.5\nhidden = [8]\nval_size = 100\n")
    result = train_run(tmp_path / "m.npz", tiny_mnist, preset, {"lr": 0.02})
    cfg = result.trainer.cfg
    assert (cfg.epochs, cfg.lr, cfg.hidden) == (2, 0.02, (8,))
    assert checkpoint.load(tmp_path / "m.npz").meta["preset"] == "small"


def test_files_downloaded_are_reported_to_the_log(tmp_path, tiny_mnist):
    mirror = Mirror({f"/mnist/{p.name}": p.read_bytes() for p in tiny_mnist.folder.glob("*.gz")})
    source = dataclasses.replace(tiny_mnist, folder=tmp_path / "new", mirrors=(mirror.url,))
    lines = []
    try:
        for _ in range(2):
            train_run(tmp_path / "m.npz", source, flags={**TINY, "epochs": 1},
                      start="overwrite", note=lines.append)
    finally:
        mirror.close()
    assert lines == [f"downloaded and verified {', '.join(r.gz_name for r in source.resources)}"
                     f" into {source.folder}"]


def test_stale_parts_are_cleaned_by_the_next_run(tmp_path, tiny_mnist):
    stale = [tmp_path / "m.npz.dead1.part", tmp_path / "m.last.npz.dead2.part",
             tmp_path / "m.metrics.jsonl.dead3.part"]
    for p in stale:
        p.write_bytes(b"left by a killed run")
    train_tiny(tmp_path / "m.npz", tiny_mnist, epochs=1)
    assert not any(p.exists() for p in stale)


def test_outputs_that_are_not_regular_files_are_refused_before_training(tmp_path, tiny_mnist):
    os.mkfifo(tmp_path / "m.metrics.jsonl")
    with pytest.raises(RunError, match="m.metrics.jsonl: is a FIFO, not a regular file; "
                                       "refusing to replace it"):
        train_tiny(tmp_path / "m.npz", tiny_mnist)
    assert not (tmp_path / "m.npz").exists()


def test_symlinked_outputs_are_written_through(tmp_path, tiny_mnist):
    (tmp_path / "store").mkdir()
    (tmp_path / "m.npz").symlink_to(tmp_path / "store" / "kept.npz")
    with pytest.raises(RunError, match="m.npz: is a symlink to .*kept.npz, which does not "
                                       "exist; refusing to write through it"):
        train_tiny(tmp_path / "m.npz", tiny_mnist, epochs=1)
    (tmp_path / "store" / "kept.npz").write_bytes(b"")
    train_tiny(tmp_path / "m.npz", tiny_mnist, epochs=1)
    assert (tmp_path / "m.npz").is_symlink()
    assert checkpoint.load(tmp_path / "store" / "kept.npz").net.sizes == [784, 16, 10]


def test_an_unwritable_out_fails_before_training(tmp_path, tiny_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(RunError, match=f"cannot write checkpoints to {blocker}"):
        train_tiny(blocker / "m.npz", tiny_mnist)


def test_one_process_per_run(tmp_path, tiny_mnist):
    out = tmp_path / "m.npz"
    with exclusive_lock(RunFiles(out).lock):          # as another process would hold it
        with pytest.raises(RunError, match=rf"another mlp train \(process {os.getpid()}\) is "
                                           f"running on {out}; wait for it"):
            train_tiny(out, tiny_mnist)
    assert not out.exists()
    train_tiny(out, tiny_mnist, epochs=1)


# ---------------------------------------------------------------- memory

def test_memory_is_estimated_before_anything_is_read(tmp_path):
    nowhere = DataSource(tmp_path / "none", mirrors=())
    with pytest.raises(RunError) as info:
        train_run(tmp_path / "m.npz", nowhere, flags={"hidden": (65536, 65536)})
    assert "784-65536-65536-10 network with batch 128 needs about" in str(info.value)
    assert "GiB of memory available; choose smaller layers" in str(info.value)
    assert not (tmp_path / "none").exists()


def test_the_estimate_is_near_the_real_peak():
    need = run.estimate_memory(resolve({}), 55_000, 5_000)
    assert 250 << 20 < need < 400 << 20   # `mlp train` measured 259 MB peak RSS by default
    bigger = run.estimate_memory(resolve({"hidden": (1600,), "ema": 0.9}), 55_000, 5_000)
    assert bigger > need


def test_a_run_that_cannot_fit_is_refused():
    with pytest.raises(RunError, match="needs about .* GiB, more than the"):
        run.check_memory(resolve({"hidden": (65536, 65536)}), 55_000, 5_000)
    run.check_memory(resolve({"hidden": (16,)}), 500, 100)


def test_users_repeated_images_count_beside_the_split_they_are_mixed_with():
    cfg = resolve({"hidden": (16,)})
    alone = run.estimate_memory(cfg, 55_000, 5_000)
    mixed = run.estimate_memory(cfg, 55_000, 5_000, n_mixed=100_000)
    assert mixed - alone == ((2 * 55_000 + 100_000 + 5_000) * 4 - 60_000 * 5) * 784
    with pytest.raises(RunError, match=r"\(10,000,000,000 rows of repeated --extra images\) "
                                       r"needs about .*; choose a smaller --extra-share"):
        run.check_memory(cfg, 55_000, 5_000, n_mixed=10**10)


# ---------------------------------------------------------------- what is kept

def test_training_on_all_the_data(tmp_path, tiny_mnist):
    result = train_tiny(tmp_path / "m.npz", tiny_mnist, val_size=0, epochs=2)
    assert result.trainer.state.kept_epoch == 2
    assert [r["val_accuracy"] for r in result.trainer.state.history] == [None, None]
    assert checkpoint.load(tmp_path / "m.npz").meta["epoch"] == 2
    with pytest.raises(ConfigError, match="patience needs a validation split"):
        train_tiny(tmp_path / "p.npz", tiny_mnist, val_size=0, patience=2)


@pytest.mark.parametrize("ema", [0.5, 0.99])
def test_the_saved_model_is_the_one_scored(tmp_path, tiny_mnist, ema):
    out = tmp_path / "m.npz"
    train_tiny(out, tiny_mnist, ema=ema, select_tolerance=0.02)
    rows = read_metrics(RunFiles(out).metrics)
    kept = rows[rows[-1]["kept_epoch"] - 1]
    averaged = kept["ema_val_accuracy"] >= kept["val_accuracy"]
    ckpt = checkpoint.load(out)
    assert ckpt.meta["averaged_weights"] == averaged and ckpt.meta["epoch"] == kept["epoch"]
    pixels, y = evaluation_split(ckpt.meta, "val", tiny_mnist)
    score = metrics.evaluate(ckpt.net, to_input(pixels, ckpt.input_scale), y)["accuracy"]
    assert score == (kept["ema_val_accuracy"] if averaged else kept["val_accuracy"])


# ---------------------------------------------------------------- stopping and resuming

def _state(path):
    ckpt = checkpoint.load(path, with_state=True)
    return ckpt.net.params, {**ckpt.optimizer_state, **ckpt.extra}


def _without_timing(rows):
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]


def _same_run(a: Path, b: Path) -> None:
    """The runs at ``a`` and ``b`` hold the same bits: parameters, optimiser state, weight
    average, and metrics (their timing aside)."""
    for name in (a.with_suffix(".last.npz").name, a.name):
        (pa, sa), (pb, sb) = _state(a.with_name(name)), _state(b.with_name(name))
        assert all(x.tobytes() == y.tobytes() for x, y in zip(pa, pb)), name
        assert sa.keys() == sb.keys() and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)
    assert _without_timing(read_metrics(RunFiles(a).metrics)) == _without_timing(
        read_metrics(RunFiles(b).metrics))


EVERYTHING = {"dropout": (0.3,), "input_dropout": 0.1, "epochs": 4, "augment": "elastic",
              "augment_end": 0.25,
              "max_norm": 2.0, "label_smoothing": 0.1, "weight_decay": 0.01, "ema": 0.9,
              "select_tolerance": 0.01, "mixup": 0.3}


@pytest.mark.parametrize("stop_after", [7, 16, 17])  # mid-epoch; after the epoch's last step;
def test_a_stopped_run_resumes_bit_for_bit(tmp_path, tiny_mnist, stop_after):  # at its end
    train_tiny(tmp_path / "a" / "m.npz", tiny_mnist, **EVERYTHING)
    calls = iter(range(1000))          # 16 steps an epoch, polled after each and each epoch
    ends = Ends()
    result = train_run(tmp_path / "b" / "m.npz", tiny_mnist, flags={**TINY, **EVERYTHING},
                       callbacks=[ends], should_stop=lambda: next(calls) + 1 >= stop_after)
    assert (result.ending, result.signum) == ("stopped", None)
    assert ends.events[0] == "begin" and ends.events[-1] == "stopped"
    st = result.trainer.state
    assert (st.step, st.epoch) == (min(stop_after, 16), 1 if stop_after == 17 else 0)
    assert not list((tmp_path / "b").glob("*.part")), "a temporary file was left behind"
    saved = checkpoint.load(tmp_path / "b" / "m.last.npz", with_state=True)
    assert saved.meta["train_state"]["step"] == st.step
    result = train_tiny(tmp_path / "b" / "m.npz", tiny_mnist, resume=True, epochs=4)
    assert result.ending == "finished"
    _same_run(tmp_path / "a" / "m.npz", tmp_path / "b" / "m.npz")
    assert "ema.m.0" in _state(tmp_path / "b" / "m.last.npz")[1]


def test_resume_refuses_changed_hyperparameters(tiny_run, tmp_path, tiny_mnist):
    out = copy_run(tiny_run, tmp_path)
    with pytest.raises(ConfigError, match="only epochs, patience may change, not lr"):
        train_run(out, tiny_mnist, flags={"lr": 0.3}, start="resume")
    preset = tmp_path / "p.toml"
    preset.write_text("epochs = 5\nlr = 0.7\n")
    with pytest.raises(ConfigError, match="not lr"):
        train_run(out, tiny_mnist, preset, start="resume")
    with pytest.raises(checkpoint.CheckpointError, match="none.last.npz: no such checkpoint"):
        train_run(tmp_path / "none.npz", tiny_mnist, start="resume")
    result = train_run(out, tiny_mnist, flags={"epochs": 4}, start="resume")
    assert [r["epoch"] for r in result.trainer.state.history] == [1, 2, 3, 4]
    assert result.trainer.cfg == resolve({**TINY, "epochs": 4})


def test_a_resumed_state_that_diverges_is_not_called_good(tmp_path, tiny_run, tiny_mnist):
    out = copy_run(tiny_run, tmp_path)
    last = RunFiles(out).last
    ckpt = checkpoint.load(last, with_state=True)
    for W in ckpt.net.W:
        W *= np.float32(1e20)  # finite, but the logits overflow float32
    checkpoint.save(last, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)
    with pytest.raises(TrainingDiverged) as info:
        train_tiny(out, tiny_mnist, resume=True, epochs=4)
    message = str(info.value)
    assert "the loss became" in message and "lower learning rate" in message
    assert "good" not in message and "\n" not in message


def test_a_run_that_diverges_names_its_last_good_checkpoint(tmp_path, tiny_mnist):
    class Explode(Callback):
        def on_epoch_end(self, trainer, row, kept):
            for W in trainer.net.W:
                W *= np.float32(1e20)

    ends = Ends()
    with pytest.raises(TrainingDiverged) as info:
        train_run(tmp_path / "m.npz", tiny_mnist, flags=TINY, callbacks=[Explode(), ends])
    last = RunFiles(tmp_path / "m.npz").last
    assert str(info.value).endswith(f"; the last good checkpoint is {last}")
    assert "at epoch 2, batch 1" in str(info.value)
    assert ends.events == ["begin", ("epoch", 1, None), "diverged"]
    ckpt = checkpoint.load(last, with_state=True)          # epoch 1, before the explosion
    assert ckpt.meta["epoch"] == 1 and all(np.abs(W).max() < 100 for W in ckpt.net.W)


def test_signals_stop_only_while_held():
    before = signal.getsignal(signal.SIGTERM)
    with run.StopSignals():                         # not armed: interrupts as usual
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with run.held_signals() as stop:
        with stop.holding():
            assert not stop()
        with pytest.raises(SystemExit, match="143"):  # between runs (a sweep): at once
            os.kill(os.getpid(), signal.SIGTERM)
    with run.held_signals() as stop:
        with stop.holding():                        # armed: noted
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            assert stop() and stop.signum == signal.SIGTERM  # the first one
        os.kill(os.getpid(), signal.SIGINT)         # while the stopped run ends: noted too
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_leave_then_once_held_else_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with run.held_signals(then=signal.SIG_IGN):       # never held: nothing was started
        pass
    assert all(signal.getsignal(s) is handler for s, handler in before.items())
    try:
        with run.held_signals(then=signal.SIG_IGN) as stop:
            with stop.holding():
                pass
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)           # ignored: the test goes on
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


EPOCHS = 60  # of the SIGKILLed run: enough that a few kills land before it ends, however fast


def test_a_run_killed_before_its_last_log_line_gets_it_on_resume(tmp_path, tiny_mnist):
    """Killed between saving the last epoch's state and its log line, then resumed."""
    out = tmp_path / "m.npz"
    train_tiny(out, tiny_mnist, epochs=2)
    log = RunFiles(out).metrics
    rows = read_metrics(log)
    write_metrics(log, rows[:1])
    assert train_tiny(out, tiny_mnist, resume=True).ending == "finished"
    assert read_metrics(log) == rows


def test_sigkill_at_random_points_resumes_bit_for_bit(tmp_path, tiny_mnist):
    """A training process killed with SIGKILL, again and again, then resumed, ends with the
    bits of a run never interrupted."""
    flags = json.dumps({**TINY, "epochs": EPOCHS, "augment": "elastic", "augment_end": 0.5,
                        "dropout": [0.3], "ema": 0.9})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

    def start(out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(TINY_DATA), str(tiny_mnist.folder),
                                 str(out), flags, *extra], env=env, stderr=subprocess.PIPE,
                                text=True)

    reference = start(tmp_path / "a" / "m.npz")
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err

    out = tmp_path / "b" / "m.npz"
    last = RunFiles(out).last
    chance = random.Random(os.getpid())
    kills, proc = 0, start(out)
    for _ in range(6):
        seen = last.stat().st_mtime_ns if last.exists() else None
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and (
                not last.exists() or last.stat().st_mtime_ns == seen):
            time.sleep(0.005)                   # until the process has saved an epoch more
        time.sleep(chance.uniform(0, 0.06))     # then somewhere in the next epoch
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait(timeout=30)
        kills += 1
        proc = start(out, "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert kills >= 3, "the run finished before it could be killed"
    assert checkpoint.load(last).meta["epoch"] == EPOCHS
    _same_run(tmp_path / "a" / "m.npz", out)


# ---------------------------------------------------------------- starting weights, users' images

def test_a_run_starts_from_a_trained_networks_weights_and_shape(tiny_run, tmp_path,
                                                                 tiny_mnist):
    start = checkpoint.load(tiny_run).net
    flags = {k: v for k, v in TINY.items() if k != "hidden"}      # its hidden sizes come along
    spec = run.build_spec(tmp_path / "m.npz", None, {**flags, "epochs": 1, "lr": 1e-9,
                                                     "augment": "none"},
                          data=tiny_mnist, start=run.Start(init=tiny_run))
    assert spec.init == tiny_run
    result = run.train(spec, run.Hooks(plots=False))
    assert result.trainer.cfg.hidden == (16,)
    for W, W0 in zip(result.trainer.net.W, start.W):
        assert np.abs(W - W0).max() < 1e-5                         # a step of 1e-9 from it
    meta = checkpoint.load(tmp_path / "m.npz").meta
    assert meta["init"] == {"model": str(tiny_run), "sha256": run.weights_sha256(start)}
    assert meta["extra"] == []
    with pytest.raises(RunError, match="a 784-16-10 network, but the run's is 784-8-10"):
        run.build_spec(tmp_path / "n.npz", None, {**TINY, "hidden": (8,)}, data=tiny_mnist,
                       start=run.Start(init=tiny_run))
    with pytest.raises(checkpoint.CheckpointError, match="nothing.npz"):
        run.build_spec(tmp_path / "n.npz", None, TINY, data=tiny_mnist,
                       start=run.Start(init=tmp_path / "nothing.npz"))


def _labelled_folder(folder: Path) -> Path:
    """Three drawn 1s and three drawn 7s in DIR/1/ and DIR/7/."""
    from PIL import Image, ImageDraw

    strokes = {1: [(50, 10), (50, 90)], 7: [(20, 15), (80, 15), (40, 90)]}
    for label, points in strokes.items():
        (folder / str(label)).mkdir(parents=True)
        for shift in (-8, 0, 8):
            image = Image.new("L", (100, 100), 255)
            ImageDraw.Draw(image).line([(x + shift, y) for x, y in points], fill=0, width=9)
            image.save(folder / str(label) / f"{shift}.png")
    return folder


def test_users_images_are_a_share_of_every_epoch(tmp_path, tiny_mnist):
    extra = _labelled_folder(tmp_path / "mine")
    source = dataclasses.replace(tiny_mnist, extra=(extra,))
    result = train_run(tmp_path / "m.npz", source, flags={**TINY, "extra_share": 0.25})
    repeats = -(-0.25 * 500 // (0.75 * 6))                          # ceil(share n / (1-share) m)
    assert result.trainer.n_train == 500 + 6 * repeats
    (record,) = checkpoint.load(tmp_path / "m.npz").meta["extra"]
    assert record["folder"] == str(extra) and record["count"] == 6
    result = train_run(tmp_path / "none.npz", source, flags={**TINY, "extra_share": 0.0})
    assert result.trainer.n_train == 500


def test_a_run_with_users_images_resumes_bit_for_bit_and_only_on_them(tmp_path, tiny_mnist):
    extra = _labelled_folder(tmp_path / "mine")
    source = dataclasses.replace(tiny_mnist, extra=(extra,))
    flags = {**TINY, **EVERYTHING}
    train_run(tmp_path / "a" / "m.npz", source, flags=flags)
    calls = iter(range(1000))
    result = train_run(tmp_path / "b" / "m.npz", source, flags=flags,
                       should_stop=lambda: next(calls) >= 9)
    assert result.ending == "stopped"
    result = train_run(tmp_path / "b" / "m.npz", tiny_mnist, start="resume")
    assert result.ending == "finished"                               # the folder from the run
    _same_run(tmp_path / "a" / "m.npz", tmp_path / "b" / "m.npz")
    with pytest.raises(ConfigError, match="the run's own --extra folders"):
        train_run(tmp_path / "b" / "m.npz", dataclasses.replace(tiny_mnist, extra=(tmp_path,)),
                  start="resume")
    (extra / "7" / "0.png").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="changed since the run started"):
        train_run(tmp_path / "b" / "m.npz", tiny_mnist, start="resume")


# ---------------------------------------------------------------- the run's callbacks

def test_the_curves_are_redrawn_after_each_epoch(tiny_run, tmp_path):
    history = read_metrics(RunFiles(tiny_run).metrics)
    callback = run.CurvesCallback(tmp_path / "c.png", "title")
    for epoch in (1, 2, 3):
        trainer = SimpleNamespace(state=SimpleNamespace(history=history[:epoch]))
        callback.on_epoch_end(trainer, history[epoch - 1], kept=True)
        loss = {ln.get_label(): ln for ln in callback.figure.fig.axes[0].get_lines()}["training"]
        assert list(loss.get_xdata()) == list(range(1, epoch + 1))
        assert Image.open(tmp_path / "c.png").size == (900, 600)
    assert list(loss.get_ydata()) == [r["train_loss"] for r in history]

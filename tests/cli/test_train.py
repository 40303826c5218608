"""`mlp train`: one option per setting, the summary (text and JSON), one line per error,
signals, the resume command, the progress display. Runs use real MNIST (the CLI reads the
files it is told of, with MNIST's checksums); refusals need no data at all."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import click
import numpy as np
import pytest

from mnist_mlp import checkpoint
from mnist_mlp.cli import train
from mnist_mlp.cli.train import ProgressDisplay, resume_command
from mnist_mlp.config import FIELDS, is_list, resolve
from mnist_mlp.dataset import DataSource
from mnist_mlp.files import exclusive_lock
from mnist_mlp.mnist import DEFAULT_MIRRORS, RESOURCES
from mnist_mlp.network import MLP
from mnist_mlp.runfiles import RunFiles, read_metrics
from mnist_mlp.train import Trainer, TrainingDiverged

from ..tiny_data import copy_run, synthetic_digits
from .runner import mlp, one_line

# 784-16-10 trained on 10,000 images (50,000 held out): a second or two a run.
SMALL = ["--hidden", "16", "--epochs", "2", "--val-size", "50000", "--batch-size", "64",
         "--quiet"]


def _train(real_mnist, out, *extra, expect=0):
    return mlp("train", "--data-dir", real_mnist, "--out", out, *SMALL, *extra, expect=expect)


@pytest.fixture(scope="module")
def cli_run(real_mnist, tmp_path_factory):
    """SMALL trained once through `mlp train --json`: (its --out, the JSON summary)."""
    out = tmp_path_factory.mktemp("cli-run") / "run" / "m.npz"
    result = _train(real_mnist, out, "--json")
    return out, json.loads(result.stdout)


def test_the_json_summary(cli_run):
    out, summary = cli_run
    assert summary["checkpoint"] == str(out)
    assert summary["config"]["hidden"] == [16] and summary["config"]["epochs"] == 2
    assert [row["epoch"] for row in summary["epochs"]] == [1, 2]
    for key in ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                "train_seconds"):
        assert all(isinstance(row[key], float) for row in summary["epochs"])
    best = max(summary["epochs"], key=lambda r: r["val_accuracy"])
    assert summary["kept_epoch"] == best["epoch"] and "best_epoch" not in summary
    assert summary["kept_val_accuracy"] == best["val_accuracy"]
    assert read_metrics(RunFiles(out).metrics) == summary["epochs"]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "m.curves.png", "m.last.npz", "m.lock", "m.metrics.jsonl", "m.npz"]
    assert summary["curves"] == str(out.parent / "m.curves.png")
    ckpt = checkpoint.load(out)
    assert ckpt.meta["sizes"] == [784, 16, 10] and ckpt.meta["epoch"] == best["epoch"]
    assert ckpt.meta["config"]["seed"] == 0
    assert ckpt.meta["data_sha256"] == {r.name: r.sha256 for r in RESOURCES}


def test_resume_takes_the_saved_config_and_prints_the_summary(cli_run, real_mnist, tmp_path):
    out = copy_run(cli_run[0], tmp_path)
    result = mlp("train", "--resume", "--epochs", "3", "--quiet", "--no-plots", "--data-dir",
                 real_mnist, "--out", out)
    st = checkpoint.load(RunFiles(out).last).meta["train_state"]
    assert st["epoch"] == 3 and [r["epoch"] for r in st["history"]] == [1, 2, 3]
    assert checkpoint.load(RunFiles(out).last).meta["config"]["val_size"] == 50_000
    assert result.stdout == (f"kept epoch {st['kept_epoch']}: val accuracy "
                             f"{100 * st['kept_val_accuracy']:.2f}%; saved {out}\n")


def test_config_precedence_and_errors(real_mnist, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("epochs = 1\nlr = 0.5\nhidden = [8]\nval_size = 50000\n")
    result = _train(real_mnist, tmp_path / "m.npz", "--config", preset, "--lr", "0.02",
                    "--hidden", "16,8", "--dropout", "0.5,0.1", "--input-dropout", "0.2",
                    "--json", "--no-plots")
    config = json.loads(result.stdout)["config"]
    # SMALL's flags (--epochs 2) and the others beat the file; the file's lr lost to --lr
    assert (config["epochs"], config["lr"], config["hidden"]) == (2, 0.02, [16, 8])
    assert (config["dropout"], config["input_dropout"]) == ([0.5, 0.1], 0.2)
    result = mlp("train", "--config", preset, "--data-dir", real_mnist, "--quiet", "--json",
                 "--no-plots", "--out", tmp_path / "n.npz")
    config = json.loads(result.stdout)["config"]
    assert (config["epochs"], config["lr"], config["hidden"]) == (1, 0.5, [8])

    preset.write_text("epochs = 2\nlearning_rate = 0.5\n")
    one_line(_train(real_mnist, tmp_path / "m.npz", "--config", preset, expect=1),
             "learning_rate", str(preset))
    preset.write_text("epochs = '2'\n")
    one_line(_train(real_mnist, tmp_path / "m.npz", "--config", preset, expect=1),
             "epochs must be of type int", str(preset))
    result = _train(real_mnist, tmp_path / "m.npz", "--lr", "-1", expect=2)
    assert "Invalid value for '--lr': -1.0 is not in the range 0<x<=1000000.0" in result.output
    result = _train(real_mnist, tmp_path / "m.npz", "--lr", "nan", expect=2)
    assert "lr must be in (0, 1e+06], not nan" in result.output
    result = _train(real_mnist, tmp_path / "m.npz", "--hidden", "8,x", expect=2)
    assert "comma list" in result.output
    result = _train(real_mnist, tmp_path / "m.npz", "--hidden", "16,8", "--dropout",
                    "0.5,0.1,0.2", expect=2)
    assert "one rate or one per hidden layer" in result.output


def test_resume_refuses_changed_hyperparameters_and_missing_state(cli_run, real_mnist,
                                                                   tmp_path):
    one_line(_train(real_mnist, tmp_path / "none.npz", "--resume", expect=1),
             "none.last.npz: no such checkpoint")
    out = copy_run(cli_run[0], tmp_path)
    result = _train(real_mnist, out, "--resume", "--lr", "0.3", expect=2)
    assert "only epochs, patience may change, not lr" in result.output
    preset = tmp_path / "p.toml"
    preset.write_text("epochs = 5\nlr = 0.7\n")
    result = mlp("train", "--resume", "--config", preset, "--data-dir", real_mnist, "--out",
                 out, expect=2)
    assert "not lr" in result.output


def test_a_run_is_not_replaced_without_overwrite(cli_run, real_mnist, tmp_path):
    out = copy_run(cli_run[0], tmp_path)
    one_line(_train(real_mnist, out, "--seed", "1", expect=1),
             f"{out} already holds a run of 784-16-10, epoch 2 of 2; continue it with "
             "--resume, replace it with --overwrite")


def test_divergence_stops_with_advice(cli_run, real_mnist, tmp_path):
    out = copy_run(cli_run[0], tmp_path)
    last = RunFiles(out).last
    ckpt = checkpoint.load(last, with_state=True)
    for W in ckpt.net.W:
        W *= np.float32(1e20)  # finite, but the logits overflow float32
    checkpoint.save(last, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)
    line = one_line(_train(real_mnist, out, "--resume", "--epochs", "3", expect=1),
                    "the loss became", "lower learning rate")
    assert "good" not in line                  # the saved state is not called good


def test_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    one_line(_train(tmp_path / "none", blocker / "m.npz", expect=1), "cannot write checkpoints to")
    assert not (tmp_path / "none").exists()


def test_one_process_per_run(tmp_path):
    out = tmp_path / "m.npz"
    with exclusive_lock(RunFiles(out).lock):
        one_line(_train(tmp_path / "none", out, expect=1),
                 f"another mlp train (process {os.getpid()}) is running on {out}")


@pytest.mark.parametrize("args, code, message", [
    (["--hidden", "9223372036854775808"], 2, "hidden must be in [1, 65536]"),
    (["--hidden", "3000000"], 2, "hidden must be in [1, 65536], not 3000000"),
    (["--weight-decay", "inf"], 2, "Invalid value for '--weight-decay'"),
    (["--dropout", "nan"], 2, "dropout must be in [0, 1), not nan"),
    (["--epochs", "0"], 2, "Invalid value for '--epochs'"),
    (["--warmup-epochs", "5", "--epochs", "2"], 2, "warmup_epochs (5) must be between 0 and"),
    (["--val-size", "0", "--patience", "2"], 2, "patience needs a validation split"),
    (["--hidden", "65536,65536"], 1, "784-65536-65536-10 network with batch 128 needs about"),
])
def test_bad_settings_fail_before_any_data_is_read(tmp_path, args, code, message):
    result = mlp("train", "--data-dir", tmp_path / "none", "--out", tmp_path / "m.npz", *args,
                 expect=code)
    assert message in result.output, result.output
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("text, message", [
    ("lr = -1.0\n", "lr must be in (0, 1e+06], not -1.0"),
    ("hidden = [100000]\n", "hidden must be in [1, 65536], not 100000"),
    ("optimizer = 'rmsprop'\n", "optimizer must be one of sgd, nesterov, adam, adamw"),
    ("hidden = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("optimizer = '" + "x" * 500_000 + "'\n", "not 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."),
    ("x" * 100_000 + " = 1\n", "unknown key 'xxxxxxxxxxxx"),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, text, message):
    preset = tmp_path / "p.toml"
    preset.write_text(text)
    result = mlp("train", "--config", preset, "--data-dir", tmp_path / "none", "--out",
                 tmp_path / "m.npz", expect=1)
    one_line(result, f"{preset}: ", message)
    assert len(result.output) < 400, "the message repeats a hostile value in full"


def test_every_setting_has_a_train_flag_made_from_its_field():
    options = {p.name: p for p in train.params}
    for name, fld in FIELDS.items():
        option = options[name]
        assert option.opts == ["--" + name.replace("_", "-")]
        assert option.help == fld.metadata["help"]
        if fld.metadata["choices"]:
            assert list(option.type.choices) == list(fld.metadata["choices"])
        elif fld.metadata["bounds"] and not is_list(name):
            assert isinstance(option.type, (click.IntRange, click.FloatRange))
            assert (option.type.min, option.type.max) == (fld.metadata["bounds"].low,
                                                          fld.metadata["bounds"].high)


# ---------------------------------------------------------------- stopping and resuming

def test_the_resume_command_is_quoted_and_complete(tmp_path):
    out = tmp_path / "my run; x" / "it's.npz"
    source = DataSource(tmp_path / "data dir", DEFAULT_MIRRORS)
    words = shlex.split(resume_command(out, source))
    assert words == ["mlp", "train", "--resume", "--out", str(out), "--data-dir",
                     str(tmp_path / "data dir")]
    source = DataSource(tmp_path, ("http://m/a b/", "https://n/?x=1&y"))
    assert shlex.split(resume_command(out, source))[-4:] == [
        "--mirror", "http://m/a b/", "--mirror", "https://n/?x=1&y"]


def _start(real_mnist, out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "train", "--hidden", "32", "--epochs", "40",
         "--data-dir", str(real_mnist), "--out", str(out), "--quiet", "--no-plots", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, seconds=90):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), proc.stderr.read() if proc.poll() is not None else "timed out"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_save_a_resumable_state(real_mnist, tmp_path, signum, code):
    out = tmp_path / "my run; x" / "m.npz"
    proc = _start(real_mnist, out)
    _wait_for(RunFiles(out).metrics, proc)
    proc.send_signal(signum)
    time.sleep(0.01)
    proc.send_signal(signum)            # pressed twice: still a whole state, same exit
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.startswith(f"{signal.Signals(signum).name}: stopped at epoch")
    assert "Traceback" not in err and "Aborted" not in err and err.count("\n") == 1
    ckpt = checkpoint.load(RunFiles(out).last, with_state=True)
    assert ckpt.meta["train_state"]["epoch"] >= 1 and ckpt.optimizer_state
    assert not list(out.parent.glob("*.part"))
    words = shlex.split(err.split("Resume with: ", 1)[1])
    assert words == ["mlp", "train", "--resume", "--out", str(out), "--data-dir",
                     str(real_mnist)]
    epochs = ckpt.meta["train_state"]["epoch"] + 1
    mlp(*words[1:], "--epochs", epochs, "--quiet", "--no-plots")    # as printed
    assert checkpoint.load(RunFiles(out).last).meta["epoch"] == epochs


# ---------------------------------------------------------------- the progress display

class Bar:
    """Stands in for one tqdm bar the display made, forwarding to it; notes the close."""

    def __init__(self, bar):
        self.bar, self.closed, self.updates = bar, False, 0

    def set_postfix(self, **kwargs):
        self.bar.set_postfix(**kwargs)

    def update(self, n):
        self.updates += 1
        self.bar.update(n)

    def close(self):
        self.closed = True
        self.bar.close()


class Watched(ProgressDisplay):
    def __init__(self, quiet):
        super().__init__(quiet)
        self.bars = []

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        super().on_epoch_begin(trainer, epoch, n_samples, done)
        self.bar = Bar(self.bar)
        self.bars.append(self.bar)


def _fit(display, should_stop=lambda: False, explode=False):
    images, labels = synthetic_digits(300, 1)
    X, y = images.reshape(300, -1).astype(np.float32) / 255, labels.astype(np.int64)
    cfg = resolve({"hidden": (8,), "epochs": 2, "batch_size": 100, "val_size": 50})
    trainer = Trainer(cfg, MLP(cfg.sizes), 250)
    if explode:
        for W in trainer.net.W:
            W *= np.float32(1e20)
    return trainer.fit(X[:250], y[:250], (X[250:], y[250:]), [display], should_stop)


@pytest.mark.parametrize("ending", ["finished", "stopped", "diverged"])
def test_the_progress_display_closes_its_bar_however_the_run_ends(ending, capsys):
    display = Watched(quiet=False)
    calls = iter(range(100))
    if ending == "diverged":
        with pytest.raises(TrainingDiverged):
            _fit(display, explode=True)
    else:
        assert _fit(display, lambda: ending == "stopped" and next(calls) == 4) == ending
    assert display.bars and all(bar.closed for bar in display.bars)
    assert display.bar is None
    assert len(display.bars) == {"finished": 2, "stopped": 2, "diverged": 1}[ending]
    lines = capsys.readouterr().err.splitlines()
    epochs = {"finished": 2, "stopped": 1, "diverged": 0}[ending]
    assert [line.split()[:2] for line in lines if line.startswith("epoch")] == [
        ["epoch", f"{e}/2"] for e in range(1, epochs + 1)]


def test_a_quiet_display_prints_nothing(capsys):
    display = Watched(quiet=True)
    _fit(display)
    assert capsys.readouterr().err == "" and all(bar.closed for bar in display.bars)


def test_a_fashion_run_records_its_dataset_and_resumes_on_it(real_fashion, real_mnist,
                                                              tmp_path):
    out = tmp_path / "f.npz"
    mlp("train", "--dataset", "fashion-mnist", "--config", "quick", "--epochs", "1",
        "--data-dir", real_fashion, "--out", out, "--no-plots", "-q")
    meta = checkpoint.load(out).meta
    assert meta["dataset"] == "fashion-mnist" and meta["config"]["dataset"] == "fashion-mnist"
    assert meta["class_names"][9] == "Ankle boot"
    assert meta["data_sha256"]["t10k-images-idx3-ubyte"].startswith("5b4141f0")
    one_line(mlp("train", "--resume", "--epochs", "2", "--out", out, "--data-dir", real_mnist,
                 "-q", expect=1), "MNIST's file, not Fashion-MNIST's")
    mlp("train", "--resume", "--epochs", "2", "--out", out, "--data-dir", real_fashion, "-q")
    assert checkpoint.load(out).meta["epoch"] == 2


def test_teaching_a_trained_model_users_images(real_model, real_mnist, tmp_path):
    from PIL import Image, ImageDraw

    for label, points in {1: [(50, 10), (50, 90)], 7: [(20, 15), (80, 15), (40, 90)]}.items():
        (tmp_path / "mine" / str(label)).mkdir(parents=True)
        image = Image.new("L", (100, 100), 255)
        ImageDraw.Draw(image).line(points, fill=0, width=9)
        image.save(tmp_path / "mine" / str(label) / "a.png")
    out = tmp_path / "taught.npz"
    mlp("train", "--config", "tune", "--init", real_model, "--extra", tmp_path / "mine",
        "--epochs", "1", "--data-dir", real_mnist, "--out", out, "--no-plots", "-q")
    meta = checkpoint.load(out).meta
    assert meta["config"]["hidden"] == [128] and meta["init"]["model"] == str(real_model)
    assert meta["extra"][0]["count"] == 2
    scores = json.loads(mlp("eval", "--model", out, "--data-dir", real_mnist, "--json").stdout)
    assert scores["accuracy"] > 0.95
    one_line(mlp("train", "--init", real_model, "--extra", tmp_path / "none", "--data-dir",
                 real_mnist, "--out", tmp_path / "x.npz", "-q", expect=1),
             "--extra", "not a folder of labelled images")

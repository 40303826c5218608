"""`mlp plot`: a run's pictures written and named, several runs compared; every bad log or
picture path one line, exit 1."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from mnist_mlp.runfiles import RunFiles

from ..tiny_data import copy_run
from .runner import mlp, one_line


def test_one_run_and_several(tiny_run, tmp_path):
    out = copy_run(tiny_run, tmp_path / "run")
    files = RunFiles(out)
    result = mlp("plot", out)
    assert result.stdout == f"weights: {files.weights}\ncurves: {files.curves}\n"
    assert Image.open(files.weights).format == "PNG"
    other = tmp_path / "other.metrics.jsonl"
    other.write_text(files.metrics.read_text())
    result = mlp("plot", out, other, "--curves", tmp_path / "cmp.png")
    assert result.stdout == f"curves: {tmp_path / 'cmp.png'}\n"
    assert Image.open(tmp_path / "cmp.png").size == (1000, 450)


def _row(epoch, **change):
    return {"epoch": epoch, "lr": 0.1, "train_loss": 0.5, "train_accuracy": 0.9,
            "val_loss": 0.4, "val_accuracy": 0.91, "ema_val_loss": None,
            "ema_val_accuracy": None, "train_seconds": 1.5, "kept_epoch": epoch, **change}


@pytest.mark.parametrize("text, message", [
    ("", "empty; the run has not finished an epoch yet"),
    ('{"epoch": 1, "lr": 0.1, "train_loss"', "line 1 is not JSON (truncated?)"),
    ("not json\n", "line 1 is not JSON"),
    ('{"epoch": 2}\n', "line 1 is not epoch 1"),
    ('{"epoch": 1, "lr": "fast"}\n', "line 1 is not epoch 1"),
    (json.dumps(_row(1)).replace('"lr": 0.1', '"lr": 1' + "0" * 400) + "\n",
     "line 1 is not epoch 1"),
    (json.dumps(_row(1, lr=1e308)) + "\n", "line 1 is not epoch 1"),
    (json.dumps({**_row(1), "epoch": True}) + "\n", "line 1 is not epoch 1"),
    (json.dumps(_row(1, val_accuracy=7.0)) + "\n", "line 1 is not epoch 1"),
])
def test_bad_logs_are_one_line(tmp_path, text, message):
    log = tmp_path / "bad.metrics.jsonl"
    log.write_text(text)
    line = one_line(mlp("plot", log, expect=1), message, str(log))
    assert len(line) < 300
    assert not list(tmp_path.glob("*.png"))


def test_a_checkpoint_without_its_log_still_shows_its_weights(tiny_run, tmp_path):
    alone = tmp_path / "alone.npz"
    alone.write_bytes(tiny_run.read_bytes())
    result = mlp("plot", alone)
    assert result.stderr == (f"no metrics log beside {alone} (looked for "
                             f"{tmp_path / 'alone.metrics.jsonl'}); drew the weights only\n")
    assert result.stdout == f"weights: {tmp_path / 'alone.weights.png'}\n"
    assert not (tmp_path / "alone.curves.png").exists()


def test_unwritable_pictures_and_unknown_runs_are_one_line(tiny_run, tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    log = RunFiles(tiny_run).metrics
    for args, message in (([tiny_run, "--weights", tmp_path / "fifo.png"], "is a FIFO"),
                          ([log, "--curves", tiny_run / "under-a-file.png"], "under-a-file"),
                          ([log, "--curves", tmp_path / "c.txt"], "cannot write a .txt file"),
                          ([log, "--curves", "/dev/stdout"], "a stream of this process"),
                          ([tmp_path / "notes.txt"], "a RUN is a checkpoint"),
                          ([tmp_path / "none.npz"], "no such checkpoint")):
        one_line(mlp("plot", *args, expect=1), message)
    assert not list(tmp_path.glob("*.part")) and not list(tiny_run.parent.glob("*.part"))

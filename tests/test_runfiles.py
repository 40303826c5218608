"""A run's files: their names, and the metrics log written and read back, checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mnist_mlp.runfiles import MAX_LOG_BYTES, RunError, RunFiles, read_metrics, write_metrics


def test_a_runs_files_are_named_from_the_kept_model():
    files = RunFiles(Path("ck/m.npz"))
    assert [p.name for p in files.outputs] == ["m.npz", "m.last.npz", "m.metrics.jsonl",
                                               "m.curves.png"]
    assert (files.weights.name, files.lock.name) == ("m.weights.png", "m.lock")
    assert all(p.parent == Path("ck") for p in (*files.outputs, files.weights, files.lock))


@pytest.mark.parametrize("name", ["m.npz", "m.last.npz", "m.metrics.jsonl", "m.curves.png",
                                  "m.weights.png"])
def test_any_file_of_a_run_names_the_run(name):
    assert RunFiles.of(Path("ck") / name) == RunFiles(Path("ck/m.npz"))


def _row(epoch, **change):
    return {"epoch": epoch, "lr": 0.1, "train_loss": 0.5, "train_accuracy": 0.9,
            "val_loss": 0.4, "val_accuracy": 0.91, "ema_val_loss": None,
            "ema_val_accuracy": None, "train_seconds": 1.5, "kept_epoch": epoch, **change}


def test_the_log_round_trips(tmp_path):
    history = [_row(1), _row(2, val_accuracy=None, val_loss=None, kept_epoch=1)]
    log = tmp_path / "m.metrics.jsonl"
    write_metrics(log, history)
    assert read_metrics(log) == history
    assert [json.loads(line) for line in log.read_text().splitlines()] == history
    write_metrics(log, history[:1])                   # rewritten whole, never appended
    assert read_metrics(log) == history[:1]
    assert [p.name for p in tmp_path.iterdir()] == ["m.metrics.jsonl"]


HUGE = "1" + "0" * 400


@pytest.mark.parametrize("text, message", [
    ("", "empty; the run has not finished an epoch yet"),
    ('{"epoch": 1, "lr": 0.1, "train_loss"', "line 1 is not JSON (truncated?)"),
    ("not json\n", "line 1 is not JSON"),
    ("[" * 100_000 + "\n", "line 1 is not JSON"),
    ('{"epoch": 2}\n', "line 1 is not epoch 1"),
    ('{"epoch": 1, "lr": "fast"}\n', "line 1 is not epoch 1"),
    (json.dumps(_row(1)).replace('"lr": 0.1', f'"lr": {HUGE}') + "\n", "line 1 is not epoch 1"),
    (json.dumps(_row(1, lr=1e308)) + "\n", "line 1 is not epoch 1"),
    (json.dumps({**_row(1), "epoch": True}) + "\n", "line 1 is not epoch 1"),
    (json.dumps(_row(1, val_accuracy=7.0)) + "\n", "line 1 is not epoch 1"),
    (json.dumps(_row(1)) + "\n" + json.dumps(_row(2, kept_epoch=3)) + "\n",
     "line 2 is not epoch 2"),
])
def test_bad_logs_are_one_line_run_errors(tmp_path, text, message):
    log = tmp_path / "bad.metrics.jsonl"
    log.write_text(text)
    with pytest.raises(RunError) as info:
        read_metrics(log)
    line = str(info.value)
    assert message in line and str(log) in line and "\n" not in line and len(line) < 200


def test_logs_that_are_not_regular_text_files(tmp_path):
    with pytest.raises(RunError, match="no such metrics log"):
        read_metrics(tmp_path / "none.metrics.jsonl")
    os.mkfifo(tmp_path / "fifo.metrics.jsonl")
    with pytest.raises(RunError, match="is a FIFO, not a regular file"):
        read_metrics(tmp_path / "fifo.metrics.jsonl")
    (tmp_path / "bin.metrics.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RunError, match="not a text file"):
        read_metrics(tmp_path / "bin.metrics.jsonl")
    big = tmp_path / "big.metrics.jsonl"
    with big.open("wb") as f:
        f.truncate(MAX_LOG_BYTES + 1)                  # sparse: no disk used
    with pytest.raises(RunError, match="larger than"):
        read_metrics(big)

"""A run on disk: one process per --out, no silent overwrite, clean stops on SIGINT and
SIGTERM, stale parts cleaned, memory checked before anything is allocated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_mlp import checkpoint, run
from mnist_mlp.cli import main
from mnist_mlp.config import resolve

TINY = ["--hidden", "16", "--epochs", "2", "--val-size", "100", "--batch-size", "32", "--quiet"]


def _train(tiny_mnist, out, *extra, expect=0):
    result = CliRunner().invoke(main, ["train", "--data-dir", str(tiny_mnist), "--out", str(out),
                                       *TINY, *extra])
    assert result.exit_code == expect, result.output
    return result


def test_a_run_is_not_silently_replaced(tiny_mnist, tmp_path):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out)
    first = out.read_bytes()
    result = _train(tiny_mnist, out, "--seed", "1", expect=1)
    assert (f"{out} already holds a run of 784-16-10, epoch 2 of 2; continue it with --resume, "
            "replace it with --overwrite") in result.output
    assert out.read_bytes() == first
    _train(tiny_mnist, out, "--seed", "1", "--overwrite")
    assert out.read_bytes() != first
    assert checkpoint.load(out).meta["config"]["seed"] == 1


def test_stale_parts_are_cleaned_by_the_next_run(tiny_mnist, tmp_path):
    out = tmp_path / "m.npz"
    stale = [tmp_path / "m.npz.dead1.part", tmp_path / "m.last.npz.dead2.part",
             tmp_path / "m.metrics.jsonl.dead3.part"]
    for p in stale:
        p.write_bytes(b"left by a killed run")
    _train(tiny_mnist, out)
    assert not any(p.exists() for p in stale)


def test_outputs_that_are_not_regular_files_are_refused_before_training(tiny_mnist, tmp_path):
    os.mkfifo(tmp_path / "m.metrics.jsonl")
    result = _train(tiny_mnist, tmp_path / "m.npz", expect=1)
    assert "m.metrics.jsonl: is a FIFO, not a regular file; refusing to replace it" in \
        result.output
    assert not (tmp_path / "m.npz").exists()


def test_symlinked_outputs_are_written_through(tiny_mnist, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "m.npz").symlink_to(tmp_path / "store" / "best.npz")
    _train(tiny_mnist, tmp_path / "m.npz")
    assert (tmp_path / "m.npz").is_symlink()
    assert checkpoint.load(tmp_path / "store" / "best.npz").net.sizes == [784, 16, 10]


def test_memory_is_estimated_before_anything_is_allocated(tiny_mnist, tmp_path, monkeypatch):
    result = _train(tiny_mnist, tmp_path / "m.npz", "--hidden", "65536,65536", expect=1)
    assert "784-65536-65536-10 network with batch 32 needs about" in result.output
    assert "GiB of memory available" in result.output
    monkeypatch.setattr(run, "available_memory", lambda: 1 << 20)
    result = _train(tiny_mnist, tmp_path / "m.npz", expect=1)
    assert "MiB, more than the 1 MiB of memory available" in result.output


def test_the_estimate_is_near_the_real_peak():
    cfg = resolve({})
    need = run.estimate_memory(cfg, 55_000, 5_000)
    assert 250 << 20 < need < 400 << 20   # `mlp train` measured 259 MB peak RSS by default


def test_training_on_all_the_data(tiny_mnist, tmp_path):
    result = _train(tiny_mnist, tmp_path / "m.npz", "--val-size", "0", "--json")
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] == 2
    assert [r["val_accuracy"] for r in summary["epochs"]] == [None, None]
    assert checkpoint.load(tmp_path / "m.npz").meta["epoch"] == 2
    result = CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "m.npz"), "--data-dir",
                                       str(tiny_mnist), "--split", "val"])
    assert result.exit_code == 1 and "no validation split" in result.output
    result = _train(tiny_mnist, tmp_path / "p.npz", "--val-size", "0", "--patience", "2",
                    expect=2)
    assert "patience needs a validation split" in result.output


@pytest.mark.parametrize("ema", ["0.5", "0.99"])
def test_the_saved_model_is_the_one_scored(tiny_mnist, tmp_path, ema):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out, "--ema", ema, "--epochs", "3", "--select-tolerance", "0.02")
    rows = run.read_metrics(run.RunFiles(out).metrics)
    kept = rows[rows[-1]["kept_epoch"] - 1]
    averaged = kept["ema_val_accuracy"] >= kept["val_accuracy"]
    assert checkpoint.load(out).meta["averaged_weights"] == averaged
    result = CliRunner().invoke(main, ["eval", "--model", str(out), "--data-dir",
                                       str(tiny_mnist), "--split", "val", "--json"])
    score = kept["ema_val_accuracy"] if averaged else kept["val_accuracy"]
    assert json.loads(result.stdout)["accuracy"] == score


def test_hostile_weight_average_state_is_one_line(tiny_mnist, tmp_path):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out, "--epochs", "1", "--ema", "0.9")
    last = out.with_name("m.last.npz")
    ckpt = checkpoint.load(last, with_state=True)
    ckpt.extra["ema.m.0"] = ckpt.extra["ema.m.0"].T.copy()
    checkpoint.save(last, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)
    result = _train(tiny_mnist, out, "--resume", "--epochs", "2", expect=1)
    assert "saved weight average: weight average state m.0 is float32 (784, 16)" in result.output
    assert result.output.count("\n") == 1


def _rewrite_state(path, **change):
    ckpt = checkpoint.load(path, with_state=True)
    ckpt.meta["train_state"].update(change)
    checkpoint.save(path, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)


@pytest.mark.parametrize("change, message", [
    ({"epoch": -3}, "epoch -3 is not a count"),
    ({"rng_state": {"bit_generator": "MT19937"}}, "rng_state is not a generator state"),
    ({"step": 10**30}, "step 10000"),
    ({"history": "x"}, "history is not one row per finished epoch"),
])
def test_hostile_resume_states_are_one_line(tiny_mnist, tmp_path, change, message):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out, "--epochs", "1")
    _rewrite_state(out.with_name("m.last.npz"), **change)
    result = _train(tiny_mnist, out, "--resume", "--epochs", "2", expect=1)
    assert "m.last.npz: not a resumable checkpoint" in result.output and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_hostile_optimiser_state_is_one_line(tiny_mnist, tmp_path):
    out = tmp_path / "m.npz"
    _train(tiny_mnist, out, "--epochs", "1")
    last = out.with_name("m.last.npz")
    ckpt = checkpoint.load(last, with_state=True)
    ckpt.optimizer_state["step.0"][0, 0] = np.inf
    checkpoint.save(last, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)
    result = _train(tiny_mnist, out, "--resume", "--epochs", "2", expect=1)
    assert "step.0 holds NaN or infinity" in result.output
    assert result.output.count("\n") == 1
    ckpt.optimizer_state["step.0"][0, 0] = 0
    ckpt.optimizer_state["lr_prev"] = np.array(-1.0)
    checkpoint.save(last, ckpt.net, ckpt.meta, ckpt.optimizer_state, ckpt.extra)
    result = _train(tiny_mnist, out, "--resume", "--epochs", "2", expect=1)
    assert "optimiser state lr_prev -1.0 is negative" in result.output
    assert result.output.count("\n") == 1


# ---------------------------------------------------------------- real processes

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
    out = tmp_path / "m.npz"
    proc = _start(real_mnist, out)
    _wait_for(tmp_path / "m.metrics.jsonl", proc)
    proc.send_signal(signum)
    time.sleep(0.01)
    proc.send_signal(signum)            # pressed twice: still a whole state, same exit
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"{signal.Signals(signum).name}: stopped at epoch" in err
    assert "Resume with: mlp train --resume --out" in err and "Traceback" not in err
    assert "Aborted" not in err
    ckpt = checkpoint.load(tmp_path / "m.last.npz", with_state=True)
    assert ckpt.meta["train_state"]["epoch"] >= 1 and ckpt.optimizer_state
    assert not list(tmp_path.glob("*.part"))
    result = CliRunner().invoke(main, ["train", "--resume", "--epochs",
                                       str(ckpt.meta["train_state"]["epoch"] + 1),
                                       "--data-dir", str(real_mnist), "--out", str(out),
                                       "--quiet", "--no-plots"])
    assert result.exit_code == 0, result.output


def test_one_process_per_run(real_mnist, tmp_path):
    out = tmp_path / "m.npz"
    first = _start(real_mnist, out)
    try:
        _wait_for(tmp_path / "m.lock", first)
        time.sleep(0.5)
        second = _start(real_mnist, out, "--overwrite")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"another mlp train (process {first.pid}) is running on {out}" in err
        assert err.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL

"""Pictures: what is drawn equals the run's numbers; bad logs and paths are one line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_mlp import checkpoint, plots
from mnist_mlp.cli import main
from mnist_mlp.run import RunFiles

TINY = ["--hidden", "16", "--epochs", "4", "--val-size", "100", "--batch-size", "32",
        "--quiet"]


@pytest.fixture
def tiny_run(tiny_mnist, tmp_path):
    out = tmp_path / "run" / "m.npz"
    result = CliRunner().invoke(main, ["train", "--data-dir", str(tiny_mnist), "--out",
                                       str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_curves_show_the_log(tiny_run):
    history = plots.read_metrics(RunFiles(tiny_run).metrics)
    fig = plots.curves_figure(history, "title")
    loss, error, lr = fig.axes
    epochs = [r["epoch"] for r in history]
    lines = _lines(loss)
    assert list(lines["training"].get_xdata()) == epochs
    assert list(lines["training"].get_ydata()) == [r["train_loss"] for r in history]
    assert list(lines["validation"].get_ydata()) == [r["val_loss"] for r in history]
    assert list(_lines(error)["validation"].get_ydata()) == pytest.approx(
        [max(1 - r["val_accuracy"], 1e-5) for r in history])   # floored for the log scale
    assert loss.get_yscale() == error.get_yscale() == "log"
    best = plots.best_epoch(history)
    assert best == checkpoint.load(tiny_run).meta["epoch"]
    kept = next(line for label, line in _lines(error).items() if label.startswith("kept"))
    assert list(kept.get_xdata()) == [best]
    assert list(lr.get_lines()[0].get_ydata()) == [r["lr"] for r in history]
    png = RunFiles(tiny_run).curves
    assert Image.open(png).size == (900, 600)


def test_the_averaged_weights_get_their_own_curve(tiny_run):
    history = plots.read_metrics(RunFiles(tiny_run).metrics)
    averaged = [{**r, "ema_val_loss": r["val_loss"] / 2, "ema_val_accuracy": 0.999}
                for r in history]
    def legend(fig):
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]

    assert legend(plots.curves_figure(history, "")) == ["training", "validation"]
    fig = plots.curves_figure(averaged, "")
    line = _lines(fig.axes[0])["validation, averaged weights"]
    assert list(line.get_ydata()) == [r["val_loss"] / 2 for r in history]
    assert legend(fig) == ["training", "validation", "validation, averaged weights"]


def test_best_epoch_is_the_kept_one_the_log_records():
    rows = [{"epoch": e, "val_accuracy": v} for e, v in ((1, 0.9), (2, 0.95), (3, 0.95))]
    assert plots.best_epoch(rows) == 2            # logs without the record: the first best
    assert plots.best_epoch([*rows[:2], {**rows[2], "kept_epoch": 3}]) == 3
    assert plots.best_epoch([{"epoch": 1, "val_accuracy": None},
                             {"epoch": 2, "val_accuracy": None}]) == 2


def test_weight_tiles_are_the_strongest_units_rows():
    W0 = np.random.default_rng(0).normal(size=(100, 784)).astype(np.float32)
    W0[[7, 42]] *= 10
    fig = plots.weights_figure(W0, "w")
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    units = plots.strongest_units(W0)
    assert len(images) == 64 and list(units[:2]) in ([7, 42], [42, 7])
    for image, unit in zip(images, units):
        np.testing.assert_array_equal(image.get_array(), W0[unit].reshape(28, 28))
        low, high = image.get_clim()
        assert low == -high == -np.abs(W0[unit]).max()


def test_confusion_cells_are_the_counts():
    confusion = np.diag(np.full(10, 90)) + np.eye(10, k=1, dtype=int) * 3
    fig = plots.confusion_figure(confusion, 0.967)
    (ax,) = [a for a in fig.axes if a.get_title()]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
             for t in ax.texts}
    assert texts == {(i, j): int(confusion[i, j]) for i in range(10) for j in range(10)
                     if confusion[i, j]}
    assert "96.70%" in ax.get_title()


def test_mlp_plot_one_run_and_several(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["plot", str(tiny_run)])
    assert result.exit_code == 0, result.output
    weights = tiny_run.with_name("m.weights.png")
    assert f"weights: {weights}" in result.output and Image.open(weights).format == "PNG"
    other = tmp_path / "other.metrics.jsonl"
    other.write_text(RunFiles(tiny_run).metrics.read_text())
    out = tmp_path / "cmp.png"
    result = CliRunner().invoke(main, ["plot", str(tiny_run), str(other), "--curves", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (1000, 450)


def test_compare_figure_has_a_line_per_run(tiny_run):
    history = plots.read_metrics(RunFiles(tiny_run).metrics)
    fig = plots.compare_figure({"sgd": history, "adam": history[:2]})
    for ax in fig.axes:
        assert sorted(_lines(ax)) == ["adam", "sgd"]
        assert len(_lines(ax)["adam"].get_xdata()) == 2


@pytest.mark.parametrize("text, message", [
    ("", "empty; the run has not finished an epoch yet"),
    ('{"epoch": 1, "lr": 0.1, "train_loss"', "line 1 is not JSON (truncated?)"),
    ("not json\n", "line 1 is not JSON"),
    ('{"epoch": 2}\n', "line 1 is not epoch 1"),
    ('{"epoch": 1, "lr": "fast"}\n', "line 1 is not epoch 1"),
])
def test_bad_logs_are_one_line(tmp_path, text, message):
    log = tmp_path / "bad.metrics.jsonl"
    log.write_text(text)
    result = CliRunner().invoke(main, ["plot", str(log)])
    assert result.exit_code == 1 and message in result.output
    assert result.output.count("\n") == 1 and not list(tmp_path.glob("*.png"))


def test_a_checkpoint_without_its_log_still_shows_its_weights(tiny_run, tmp_path):
    alone = tmp_path / "alone.npz"
    alone.write_bytes(tiny_run.read_bytes())
    result = CliRunner().invoke(main, ["plot", str(alone)])
    assert result.exit_code == 0
    assert f"no metrics log beside {alone}" in result.stderr
    assert (tmp_path / "alone.weights.png").exists()
    assert not (tmp_path / "alone.curves.png").exists()


def test_unwritable_pictures_are_one_line(tiny_run, tiny_mnist, tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    for args in (["plot", str(tiny_run), "--weights", str(tmp_path / "fifo.png")],
                 ["plot", str(tiny_run), "--curves", str(tiny_run / "under-a-file.png")],
                 ["eval", "--model", str(tiny_run), "--data-dir", str(tiny_mnist),
                  "--confusion", str(tmp_path / "fifo.png")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output
    assert not list(tmp_path.glob("*.part"))


def test_eval_confusion_picture(tiny_run, tiny_mnist, tmp_path):
    out = tmp_path / "confusion.png"
    result = CliRunner().invoke(main, ["eval", "--model", str(tiny_run), "--data-dir",
                                       str(tiny_mnist), "--confusion", str(out), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["n"] == 200 and Image.open(out).format == "PNG"

"""Pictures: what is drawn equals the run's numbers; bad logs and paths are one-line
PlotErrors."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mnist_mlp import checkpoint, plots
from mnist_mlp.runfiles import RunFiles, read_metrics

from .tiny_data import copy_run


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_curves_show_the_log(tiny_run):
    history = read_metrics(RunFiles(tiny_run).metrics)
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
    best = plots.logged_kept_epoch(history)
    assert best == checkpoint.load(tiny_run).meta["epoch"] == history[-1]["kept_epoch"]
    kept = next(line for label, line in _lines(error).items() if label.startswith("kept"))
    assert list(kept.get_xdata()) == [best]
    assert list(lr.get_lines()[0].get_ydata()) == [r["lr"] for r in history]
    png = RunFiles(tiny_run).curves
    assert Image.open(png).size == (900, 600)


def test_the_averaged_weights_get_their_own_curve(tiny_run):
    history = read_metrics(RunFiles(tiny_run).metrics)
    averaged = [{**r, "ema_val_loss": r["val_loss"] / 2, "ema_val_accuracy": 0.999}
                for r in history]
    def legend(fig):
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]

    assert legend(plots.curves_figure(history, "")) == ["training", "validation"]
    fig = plots.curves_figure(averaged, "")
    line = _lines(fig.axes[0])["validation, averaged weights"]
    assert list(line.get_ydata()) == [r["val_loss"] / 2 for r in history]
    assert legend(fig) == ["training", "validation", "validation, averaged weights"]


def test_the_kept_epoch_is_the_one_the_log_records():
    rows = [{"epoch": e, "val_accuracy": v} for e, v in ((1, 0.9), (2, 0.95), (3, 0.95))]
    assert plots.logged_kept_epoch(rows) == 2     # logs without the record: the first best
    assert plots.logged_kept_epoch([*rows[:2], {**rows[2], "kept_epoch": 3}]) == 3
    assert plots.logged_kept_epoch([{"epoch": 1, "val_accuracy": None},
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


def test_one_run_is_drawn_beside_it_and_several_compared(tiny_run, tmp_path):
    out = copy_run(tiny_run, tmp_path / "run")
    notes = []
    written = plots.draw_runs([out], note=notes.append)
    files = RunFiles(out)
    assert written == [("weights", files.weights), ("curves", files.curves)] and notes == []
    assert Image.open(files.weights).format == "PNG"
    assert Image.open(files.curves).size == (900, 600)
    other = tmp_path / "other.metrics.jsonl"
    other.write_text(files.metrics.read_text())
    written = plots.draw_runs([files.metrics, other], curves=tmp_path / "cmp.svg")
    assert written == [("curves", tmp_path / "cmp.svg")]
    assert (tmp_path / "cmp.svg").read_text().lstrip().startswith("<?xml")
    plots.draw_runs([out, other], curves=tmp_path / "cmp.png")
    assert Image.open(tmp_path / "cmp.png").size == (1000, 450)


def test_compare_figure_has_a_line_per_run(tiny_run):
    history = read_metrics(RunFiles(tiny_run).metrics)
    fig = plots.compare_figure({"sgd": history, "adam": history[:2]})
    for ax in fig.axes:
        assert sorted(_lines(ax)) == ["adam", "sgd"]
        assert len(_lines(ax)["adam"].get_xdata()) == 2


@pytest.mark.parametrize("text, message", [
    ("", "empty; the run has not finished an epoch yet"),
    ('{"epoch": 1, "lr": 0.1, "train_loss"', "line 1 is not JSON (truncated?)"),
    ('{"epoch": 2}\n', "line 1 is not epoch 1"),
])
def test_bad_logs_are_plot_errors(tmp_path, text, message):
    log = tmp_path / "bad.metrics.jsonl"
    log.write_text(text)
    with pytest.raises(plots.PlotError) as info:
        plots.draw_runs([log])
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.glob("*.png"))
    with pytest.raises(plots.PlotError, match="a RUN is a checkpoint"):
        plots.draw_runs([tmp_path / "bad.txt"])


def test_a_checkpoint_without_its_log_still_shows_its_weights(tiny_run, tmp_path):
    alone = tmp_path / "alone.npz"
    alone.write_bytes(tiny_run.read_bytes())
    notes = []
    assert plots.draw_runs([alone], note=notes.append) == [("weights",
                                                            tmp_path / "alone.weights.png")]
    assert notes == [f"no metrics log beside {alone} (looked for "
                     f"{tmp_path / 'alone.metrics.jsonl'}); drew the weights only"]
    assert not (tmp_path / "alone.curves.png").exists()


def test_unwritable_pictures_are_plot_errors(tiny_run, tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    log = RunFiles(tiny_run).metrics                     # curves only: quicker to draw
    for run, kwargs, message in (
            (tiny_run, {"weights": tmp_path / "fifo.png"}, "is a FIFO"),
            (log, {"curves": tiny_run / "under-a-file.png"}, "under-a-file.png: "),
            (log, {"curves": tmp_path / "c.txt"}, "cannot write a .txt file")):
        with pytest.raises(plots.PlotError, match=message) as info:
            plots.draw_runs([run], **kwargs)
        assert "\n" not in str(info.value)
    assert not list(tmp_path.glob("*.part")) and not list(tiny_run.parent.glob("*.part"))


def _sweep_row(number, seed, score, state="complete"):
    return SimpleNamespace(number=number, state=state, score=score, params={"seed": seed})


def test_a_sweep_setting_of_many_choices_is_ticked_by_position(tmp_path):
    """1,000 seeds: the trials sit at their seed's place in the list, under at most 20
    ticks labelled with the seeds there (a tick per choice took minutes and gigabytes)."""
    from mnist_mlp.sweep.space import Dimension

    seeds = tuple(range(5000, 6000))
    search = {"seed": Dimension("seed", choices=seeds)}
    rows = [_sweep_row(0, 5007, 0.91), _sweep_row(1, 5990, 0.93),
            _sweep_row(2, 5500, 0.80, state="pruned")]
    fig = plots.sweep_figure(rows, search, {})
    _, seed_ax = fig.axes
    assert [list(line.get_xdata()) for line in seed_ax.get_lines()] == [[7, 990], [500]]
    fig.canvas.draw()
    low, high = seed_ax.get_xlim()
    shown = [(t.get_position()[0], t.get_text()) for t in seed_ax.get_xticklabels()
             if low <= t.get_position()[0] <= high]
    assert 2 <= len(shown) <= 20
    assert (low, high) == (-0.5, 999.5)
    assert all(label == str(seeds[int(loc)]) for loc, label in shown)
    assert seed_ax.get_xlabel() == "seed (choice number, of 1,000)"
    plots.save_figure(fig, tmp_path / "sweep.png")


def test_a_few_choices_get_a_tick_each_with_long_labels_cut():
    from mnist_mlp.sweep.space import Dimension

    choices = ((16,), (8, 8), tuple([1024] * 6))
    search = {"hidden": Dimension("hidden", choices=choices)}
    rows = [SimpleNamespace(number=0, state="complete", score=0.9,
                            params={"hidden": "1024,1024,1024,1024,1024,1024"})]
    fig = plots.sweep_figure(rows, search, {})
    hidden_ax = fig.axes[1]
    assert [t.get_text() for t in hidden_ax.get_xticklabels()] == [
        "16", "8,8", "1024,1024,1024,…"]
    assert list(hidden_ax.get_lines()[0].get_xdata()) == [2]

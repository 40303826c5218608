"""Pictures: training curves, runs compared, first-layer weights, confusion, a sweep's trials.

Each picture is a function returning a matplotlib ``Figure`` (no pyplot, no
display: the Agg canvas), so tests can read back what was drawn; callers save
it with ``save_figure``, atomically. matplotlib is imported only here, and this
module only by the commands that draw.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from .files import atomic_writer, format_for
from .mnist import IMAGE_SIDE
from .records import kept_epoch, run_title, val_score
from .runfiles import RunError, RunFiles, read_metrics

# Log axes ticked at 1, 2 and 5 times powers of ten, with plain labels and no minor
# ticks: matplotlib's default (mathtext labels, nine minor ticks a decade) takes most
# of the drawing time, and the curves are redrawn every epoch.
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")
PERCENT = FuncFormatter(lambda v, _: f"{100 * v:g}%")


def _log_axis(ax, formatter: FuncFormatter) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(formatter)


WEIGHT_TILES = 64          # units shown in the weights picture, an 8 x 8 grid
MAX_TICKS = 20             # a sweep setting's choices beyond this (or what fits) ticked by place
MAX_LABEL = 16             # characters of a choice's tick label
DPI = 100


class PlotError(Exception):
    """A run that cannot be drawn, or a picture that cannot be saved; names the file."""


# ---------------------------------------------------------------- reading

def logged_kept_epoch(history: Sequence[Mapping[str, Any]]) -> int:
    """The epoch the run kept, as its log records it (logs without the record: the first
    epoch of the highest validation score, or the last epoch without validation)."""
    return history[-1].get("kept_epoch") or kept_epoch(history)


# ---------------------------------------------------------------- figures

def _series(history, key):
    """Epochs and values of ``key`` (error rates for accuracies), skipping missing values."""
    rows = [r for r in history if r.get(key) is not None]
    values = [r[key] for r in rows]
    if key.endswith("accuracy"):
        values = [max(1 - v, 1e-5) for v in values]           # error rate, log scale
    return [r["epoch"] for r in rows], values


class CurvesFigure:
    """Loss and error rate (log scales) per epoch, train and validation; the kept epoch
    marked; the learning rate in a small panel.

    Built once and updated with each epoch's history: axes, ticks and text are
    made once, which is most of the drawing time of a picture redrawn every epoch.
    """

    SPLITS = (("train", "training"), ("val", "validation"),
              ("ema_val", "validation, averaged weights"))

    def __init__(self, title: str):
        # Fixed margins: a layout engine would double the drawing time.
        self.fig = Figure(figsize=(9, 6), dpi=DPI)
        grid = self.fig.add_gridspec(2, 2, height_ratios=(3, 1), left=0.08, right=0.98,
                                     bottom=0.08, top=0.88, wspace=0.22, hspace=0.4)
        self.loss, self.error = self.fig.add_subplot(grid[0, 0]), self.fig.add_subplot(grid[0, 1])
        self.lr = self.fig.add_subplot(grid[1, :])
        self.lines = {}
        for ax, key, name in ((self.loss, "loss", "loss (cross-entropy)"),
                              (self.error, "accuracy", "error rate (1 - accuracy)")):
            for split, label in self.SPLITS:
                (self.lines[f"{split}_{key}"],) = ax.plot([], [], label=label)
            ax.set(xlabel="epoch", title=name)
            _log_axis(ax, PERCENT if key == "accuracy" else PLAIN)
        self.marks = [ax.axvline(1, color="0.6", linestyle=":", linewidth=1)
                      for ax in (self.loss, self.error)]
        (self.kept,) = self.error.plot([], [], "*", color="C3", markersize=12)
        (self.lines["lr"],) = self.lr.plot([], [], color="C2")
        self.lr.set(xlabel="epoch", ylabel="learning rate")
        for ax in (self.loss, self.error, self.lr):
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.fig.suptitle(title)

    def update(self, history: Sequence[Mapping[str, Any]]) -> Figure:
        """The figure, drawn for ``history`` (the metrics log's rows)."""
        for key, line in self.lines.items():
            epochs, values = _series(history, key)
            line.set_data(epochs, values)
            line.set_marker("." if len(values) < 40 else "None")
        kept = logged_kept_epoch(history)
        for mark in self.marks:
            mark.set_xdata([kept, kept])
        score = val_score(next(r for r in history if r["epoch"] == kept))
        if score is None:
            self.kept.set_data([], [])
            self.kept.set_label("_kept")            # underscore: not in the legend
        else:
            self.kept.set_data([kept], [max(1 - score, 1e-5)])
            self.kept.set_label(f"kept: epoch {kept}, {100 * score:.2f}% val")
        last = history[-1]["epoch"]
        for ax in (self.loss, self.error, self.lr):
            ax.relim()
            ax.autoscale_view(scalex=False)
            ax.set_xlim(0.5, last + 0.5)
        for ax in (self.loss, self.error):
            handles = [h for h in ax.get_lines() if len(h.get_xdata()) and
                       not h.get_label().startswith("_")]
            ax.legend(handles=handles, loc="upper right", fontsize="small")
        return self.fig


def curves_figure(history: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """The training curves of ``history`` (see ``CurvesFigure``)."""
    return CurvesFigure(title).update(history)


def compare_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Validation loss and error rate of several runs, overlaid, one colour a run."""
    fig = Figure(figsize=(10, 4.5), dpi=DPI, layout="constrained")
    loss, error = fig.subplots(1, 2)
    for name, history in runs.items():
        for ax, key in ((loss, "val_loss"), (error, "val_accuracy")):
            epochs, values = _series(history, key)
            if not values:  # no validation split: the training curve stands in
                epochs, values = _series(history, key.replace("val_", "train_"))
            ax.plot(epochs, values, label=name)
    loss.set(xlabel="epoch", title="validation loss")
    error.set(xlabel="epoch", title="validation error rate")
    for ax, formatter in ((loss, PLAIN), (error, PERCENT)):
        _log_axis(ax, formatter)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{len(runs)} runs compared")
    return fig


def strongest_units(W0: np.ndarray, n: int = WEIGHT_TILES) -> np.ndarray:
    """Indices of the ``n`` hidden units with the largest incoming weight norms, largest first.

    W0 (hidden, 784): the first layer's weights, one row per unit.
    """
    norms = np.linalg.norm(W0, axis=1)                     # (hidden,)
    return np.argsort(-norms, kind="stable")[:n]


def weights_figure(W0: np.ndarray, title: str) -> Figure:
    """Each strong unit's 784 incoming weights as a 28x28 tile, red positive, blue negative."""
    units = strongest_units(W0)
    cols = math.ceil(math.sqrt(len(units)))
    rows = math.ceil(len(units) / cols)
    fig = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, unit in zip(axes.flat, units):
        tile = W0[unit].reshape(IMAGE_SIDE, IMAGE_SIDE)
        limit = float(np.abs(tile).max()) or 1.0           # symmetric around 0
        ax.imshow(tile, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(str(unit), fontsize=6, pad=1)
    fig.suptitle(title, fontsize=9)
    return fig


def confusion_figure(confusion: np.ndarray, accuracy: float,
                     class_names: Sequence[str] = tuple("0123456789")) -> Figure:
    """The confusion matrix (rows: true class) coloured by row share, counts in the cells;
    the axes labelled with the class names (digits: "digit")."""
    confusion = np.asarray(confusion)
    k = len(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(6.5, 5.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    # Square-root colour: the rare mistakes (0.1% of a row) still show against the diagonal.
    image = ax.imshow(np.sqrt(shares), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    noun = "digit" if list(class_names) == list("0123456789") else "class"
    ax.set(xlabel=f"predicted {noun}", ylabel=f"true {noun}",
           title=f"confusion matrix: {100 * accuracy:.2f}% correct of {confusion.sum():,}")
    ax.set_xticks(range(k), class_names, rotation=0 if noun == "digit" else 45, ha="right"
                  if noun == "class" else "center")
    ax.set_yticks(range(k), class_names)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = [0, 0.01, 0.05, 0.2, 0.5, 1]
    bar.set_ticks(np.sqrt(ticks), labels=[f"{t:.0%}" for t in ticks])
    bar.set_label(f"share of the true {noun}'s row")
    return fig


FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` in the format its extension names (``FIGURE_FORMATS``), atomically (a
    reader sees the old picture or the new one).

    Raises:
        OSError: an extension matplotlib cannot write here, an unwritable path, or a
            target that is not a regular file.
    """
    fmt = format_for(path, FIGURE_FORMATS)
    with atomic_writer(Path(path)) as f:
        fig.savefig(f, format=fmt)


# ---------------------------------------------------------------- mlp plot

def _run_files(run: Path) -> tuple[Path | None, RunFiles]:
    """A RUN argument (a checkpoint, its .last.npz, or a metrics log) as (checkpoint or
    None, the run's files)."""
    if run.name.endswith(".metrics.jsonl"):
        return None, RunFiles.of(run)
    if run.name.endswith(".npz"):
        return run, RunFiles.of(run)
    raise PlotError(f"{run}: a RUN is a checkpoint (NAME.npz) or a metrics log "
                    "(NAME.metrics.jsonl)")


def _history(log: Path) -> list[dict[str, Any]]:
    try:
        return read_metrics(log)
    except RunError as exc:
        raise PlotError(str(exc)) from None


def draw_runs(runs: Sequence[Path], curves: Path | None = None, weights: Path | None = None,
              note=lambda line: None) -> list[tuple[str, Path]]:
    """Draw one run's curves and weights, or several runs' curves compared; save them.

    Args:
        runs: checkpoints or metrics logs.
        curves, weights: where to save; default beside the (first) run.
        note: receives a line about anything left out (a checkpoint without a log).

    Returns:
        (kind, path) of each picture written.

    Raises:
        PlotError: an unreadable log or checkpoint, or an unwritable picture.
    """
    from .checkpoint import CheckpointError, load

    parts = [_run_files(Path(r)) for r in runs]
    figures: list[tuple[str, Path, Figure]] = []
    if len(parts) == 1:
        ckpt_path, files = parts[0]
        stem, log = files.kept.stem, files.metrics
        title = stem
        if ckpt_path is not None:
            try:
                ckpt = load(ckpt_path)
            except CheckpointError as exc:
                raise PlotError(str(exc)) from None
            title = run_title({"preset": stem, **ckpt.meta})
            figures.append(("weights", weights or files.weights,
                            weights_figure(ckpt.net.W[0], f"{stem}: first-layer weights of "
                                           f"the {WEIGHT_TILES} strongest of "
                                           f"{ckpt.net.W[0].shape[0]} hidden units")))
        if ckpt_path is not None and not log.exists():
            note(f"no metrics log beside {ckpt_path} (looked for {log}); drew the weights only")
        else:
            figures.append(("curves", curves or files.curves,
                            curves_figure(_history(log), title)))
    else:
        histories = {}
        for _, files in parts:
            label = files.kept.stem
            while label in histories:
                label += "'"
            histories[label] = _history(files.metrics)
        figures.append(("curves", curves or Path("runs.curves.png"), compare_figure(histories)))
    written = []
    for kind, path, fig in figures:
        try:
            save_figure(fig, path)
        except OSError as exc:
            raise PlotError(f"{path}: {exc.strerror or exc}") from None
        written.append((kind, path))
    return written


def sweep_figure(rows: Sequence[Any], search: Mapping[str, Any],
                 weights: Mapping[str, float]) -> Figure:
    """A matplotlib Figure: validation accuracy per trial (completed trials filled, those
    stopped early hollow at their best epoch, the best so far as a step line), and below,
    each searched setting against the score, titled with its importance when known.

    Args:
        rows: a sweep's trials (``sweep.results.TrialRow``: number, state, score, params).
        search: its searched settings by name (``sweep.space.Dimension``: choices, label, log).
        weights: each setting's share of importance, for those known.
    """
    scored = sorted((r for r in rows if r.score is not None), key=lambda r: r.number)
    groups = {"completed": [r for r in scored if r.state == "complete"],
              "stopped early (best epoch)": [r for r in scored if r.state != "complete"]}
    styles = {"completed": {"color": "C0"},
              "stopped early (best epoch)": {"color": "C1", "markerfacecolor": "none"}}
    n = max(1, len(search))
    # Fixed margins: a layout engine would double the drawing time.
    fig = Figure(figsize=(max(8, 3 * n), 7), dpi=100)
    grid = fig.add_gridspec(2, n, left=0.07, right=0.98, bottom=0.08, top=0.94, hspace=0.35,
                            wspace=0.3)
    top = fig.add_subplot(grid[0, :])
    for label, group in groups.items():
        top.plot([r.number for r in group], [100 * r.score for r in group], "o", label=label,
                 **styles[label])
    done = groups["completed"]
    so_far = list(itertools.accumulate((100 * r.score for r in done), max))
    top.step([r.number for r in done], so_far, where="post", color="C2", label="best so far")
    top.set(xlabel="trial", ylabel="validation accuracy (%)",
            title=f"{len(rows)} trials, {len(done)} completed")
    top.grid(True, alpha=0.3)
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.legend(fontsize="small", loc="best")
    for i, (name, dim) in enumerate(search.items()):
        ax = fig.add_subplot(grid[1, i])
        labels = [str(dim.label(c)) for c in dim.choices]
        where = {label: k for k, label in enumerate(labels)}
        for label, group in groups.items():
            xs = [where[str(r.params[name])] if labels else r.params[name]
                  for r in group if name in r.params]
            ax.plot(xs, [100 * r.score for r in group if name in r.params], "o", alpha=0.8,
                    **styles[label])
        xlabel, fit = name, _ticks_that_fit(ax, labels)
        if len(labels) > fit:
            _index_axis(ax.xaxis, labels, fit)
            xlabel = f"{name} (choice number, of {len(labels):,})"
        elif labels:
            ax.set_xticks(range(len(labels)), [_short(t) for t in labels], fontsize="small")
        elif dim.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(PLAIN)
        share = f" ({100 * weights[name]:.0f}% of importance)" if name in weights else ""
        ax.set(xlabel=xlabel, title=f"{name}{share}")
        ax.grid(True, alpha=0.3)
    return fig


def _short(label: str) -> str:
    """A tick label of at most ``MAX_LABEL`` characters."""
    return label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 1] + "…"


def _ticks_that_fit(ax: Any, labels: Sequence[str]) -> int:
    """How many of these labels fit side by side under ``ax`` (at most ``MAX_TICKS``):
    its width over the longest label's, at about 5 points a character."""
    if not labels:
        return 0
    width = ax.get_position().width * ax.figure.get_figwidth() * 72        # points
    longest = max(len(_short(t)) for t in labels)
    return max(2, min(MAX_TICKS, int(width // (5 * longest + 10))))


def _index_axis(axis: Any, labels: Sequence[str], ticks: int) -> None:
    """A categorical axis of many choices drawn at their positions in the list (0, 1, ...),
    with at most ``ticks`` ticks, each labelled with its choice."""
    axis.set_major_locator(MaxNLocator(nbins=ticks - 1, integer=True))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(
        lambda v, _: _short(labels[int(v)]) if v == int(v) and 0 <= v < len(labels) else ""))
    axis.set_tick_params(labelsize="small")
    axis.axes.set_xlim(-0.5, len(labels) - 0.5)

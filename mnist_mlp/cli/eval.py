"""``mlp eval``: a model's scores on the test set, on its own run's splits, or on a folder of
users' labelled images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..dataset import DataSource
from ..mnist import Dataset
from .common import (
    CONTEXT,
    data_options,
    dataset_option,
    ensure_data,
    fail,
    load_models,
    model_dataset,
    model_option,
    output_error,
    picture_path,
    threads_option,
)


def format_report(result: dict[str, Any]) -> str:
    """The scores of ``metrics.evaluate`` (with ``class_names``) as a plain-text report."""
    names = result["class_names"]
    width = max(5, *map(len, names))
    noun = "digit" if names == [str(d) for d in range(10)] else "class"
    lines = [f"{'committee ' if 'members' in result else ''}accuracy "
             f"{100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  n {result['n']}"]
    lines += [f"  member {m['model']}: {100 * m['accuracy']:.2f}%"
              for m in result.get("members", [])]
    lines += ["", f"{noun:>{width}}  precision  recall     f1  support"]
    for name, s in zip(names, result["per_class"]):
        lines.append(f"{name:>{width}}  {s['precision']:>9.4f}  {s['recall']:>6.4f}  "
                     f"{s['f1']:>5.4f}  {s['support']:>7}")
    lines += ["", f"confusion (rows: true {noun}, columns: predicted)",
              " " * width + "".join(f"{j:>6}" for j in range(10))]
    for name, row in zip(names, result["confusion"]):
        lines.append(f"{name:>{width}}" + "".join(f"{v:>6}" for v in row))
    if noun == "class":
        lines.append("columns: " + ", ".join(f"{j} {n}" for j, n in enumerate(names)))
    return "\n".join(lines)


@click.command("eval", context_settings=CONTEXT)
@model_option
@dataset_option
@data_options
@click.option("--split", type=click.Choice(["test", "train", "val"]), default="test",
              help="train and val are split as in the checkpoint's training run.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Score on users' labelled images instead: DIR/<class>/*.png (class 0-9, "
                   "or a class name), each prepared as `mlp predict` prepares it.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--errors", type=click.Path(dir_okay=False, path_type=Path),
              callback=picture_path("grid"), metavar="FILE.png",
              help="Also save a grid of up to 100 misclassified digits.")
@click.option("--confusion", type=click.Path(dir_okay=False, path_type=Path),
              callback=picture_path("figure"),
              metavar="FILE.png", help="Also save the confusion matrix as a heatmap.")
@threads_option
@click.option("-q", "--quiet", is_flag=True, help="No download progress bar.")
def eval_(models: tuple[Path, ...], dataset: Dataset | None, source: DataSource, split: str,
          images: Path | None, as_json: bool,
          errors: Path | None, confusion: Path | None, quiet: bool) -> None:
    """Score a checkpoint on its dataset: accuracy, loss, per-class scores, confusion matrix."""
    from .. import metrics
    from ..dataset import to_input
    from ..mnist import DataError
    from ..resume import evaluation_split
    from ..runfiles import RunError

    given = click.get_current_context().get_parameter_source("split")
    if images is not None and given is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter("a split is of the dataset's files; --images scores its "
                                 "folder: give one of them", param_hint="--split")
    ckpt = load_models(models)
    dataset = model_dataset(models, ckpt.meta, dataset)
    if images is not None:
        pixels, y = _labelled(images, dataset)                     # (n, 28, 28) uint8
    else:
        source = source.with_dataset(dataset)
        ensure_data(source, quiet)
    try:
        if images is None:
            pixels, y = evaluation_split(ckpt.meta, split, source)
        X = to_input(pixels, ckpt.input_scale)                     # (n, 784)
        result = {**metrics.evaluate(ckpt.net, X, y), "class_names": list(dataset.class_names)}
    except DataError as exc:
        raise fail(exc) from None
    except (RunError, FloatingPointError) as exc:
        raise fail(f"{', '.join(map(str, models))}: {exc}") from None
    if errors is not None:
        from ..gallery import save_errors

        try:
            save_errors(errors, pixels, y, ckpt.net.predict(X))
        except OSError as exc:
            raise output_error(errors, exc) from None
    if confusion is not None:
        from ..plots import confusion_figure, save_figure

        try:
            save_figure(confusion_figure(result["confusion"], result["accuracy"],
                                         dataset.class_names), confusion)
        except OSError as exc:
            raise output_error(confusion, exc) from None
    if "members" in result:
        result["members"] = [{"model": name, "accuracy": accuracy}
                             for name, accuracy in result["members"].items()]
    click.echo(json.dumps(result) if as_json else format_report(result))


def _labelled(folder: Path, dataset: Dataset):
    """Pixels uint8 (n, 28, 28) and labels (n,) of a labelled folder; a line on stderr for
    each file skipped."""
    from ..labelled import LabelledFolderError, read_labelled

    try:
        found = read_labelled(folder, dataset)
    except LabelledFolderError as exc:
        raise fail(exc) from None
    for line in found.skipped:
        click.echo(f"skipped {line}", err=True)
    return found.pixels, found.labels

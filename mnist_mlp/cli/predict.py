"""``mlp predict``: users' images classified, one line (or JSON object) each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (
    CONTEXT,
    fail,
    load_models,
    model_option,
    output_error,
    picture_path,
    threads_option,
)

MAX_EXPLAINED = 100  # images drawn by --explain, as eval's --errors draws at most 100


@click.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_option
@click.option("--top-k", type=click.IntRange(1, 10), default=3,
              help="How many likeliest classes to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per image.")
@threads_option
@click.option("--show-input", type=click.Path(dir_okay=False, path_type=Path),
              callback=picture_path("grid"),
              metavar="FILE.png", help="Save the 28x28 inputs the model saw, side by side.")
@click.option("--explain", type=click.Path(dir_okay=False, path_type=Path),
              callback=picture_path("grid"),
              metavar="FILE.png", help="Save each input (the first 100) beside why it was "
              "read so: the gradient of the read class's log-probability per pixel (orange "
              "toward it, blue away).")
def predict(images: tuple[Path, ...], models: tuple[Path, ...], top_k: int, as_json: bool,
            show_input: Path | None, explain: Path | None) -> None:
    """Classify images: photos, scans, drawings; any size, any common format.

    IMAGES are files or folders (their image files, sorted by name). Each image
    is prepared as the model's dataset's were: for MNIST, polarity, background and
    noise handled, the digit fitted to 20x20 and centred by its centre of mass in
    28x28; for Fashion-MNIST, the garment trimmed, its long side made 28, centred,
    negated.
    """
    from .. import imaging
    from ..classify import Prediction, classify

    ckpt = load_models(models)
    paths = imaging.expand_paths(list(images))
    if not paths:
        raise fail(f"no image files ({', '.join(imaging.IMAGE_SUFFIXES)}) in "
                    f"{', '.join(map(str, images))}")
    try:
        results = classify(ckpt, paths)
    except (FloatingPointError, ValueError) as exc:
        raise fail(f"{', '.join(map(str, models))}: {exc}") from None
    good = [r for r in results if isinstance(r, Prediction)]
    for r in results:
        if not isinstance(r, Prediction):
            click.echo(f"Error: {r}", err=True)
        elif not as_json:
            top = r.top(top_k)
            others = ", ".join(f"{r.class_names[d]} {100 * p:.1f}%" for d, p in top[1:])
            click.echo(f"{r.source}: {r.label} ({100 * r.confidence:.1f}%)"
                       + (f"  then {others}" if others else ""))
    if as_json:
        click.echo(json.dumps([{"path": r.source, "digit": r.digit, "label": r.label,
                                "confidence": r.confidence, "top": r.top(top_k)}
                               for r in good]))
    if show_input is not None and good:
        import numpy as np

        from ..gallery import save_grid

        try:
            save_grid(show_input, np.stack([r.pixels for r in good]),
                      [f"{r.label[:10]} {Path(r.source).name[:10]}" for r in good])
        except OSError as exc:
            raise output_error(show_input, exc) from None
    if explain is not None and good:
        _save_explanations(explain, ckpt.net, good)
    if len(good) < len(results):
        sys.exit(1)


def _save_explanations(path: Path, model, good) -> None:
    """The --explain picture: each prepared input beside its saliency map."""
    import numpy as np

    from ..explain import saliency
    from ..gallery import save_explanations

    good = good[:MAX_EXPLAINED]
    pixels = np.stack([r.pixels for r in good])                   # (n, 28, 28)
    _, maps = saliency(model, pixels, np.array([r.digit for r in good]))
    try:
        save_explanations(path, pixels, maps,
                          [f"{r.label[:10]} {Path(r.source).name[:10]}" for r in good])
    except OSError as exc:
        raise output_error(path, exc) from None

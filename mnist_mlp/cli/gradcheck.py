"""``mlp gradcheck``: the engine's backprop against finite differences, equation by equation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import FIELDS, ConfigError, check_value
from ..network import MAX_LAYERS
from .common import CONTEXT, data_dir_option, dataset_option, fail, model_dataset

if TYPE_CHECKING:
    from ..gradcheck import Report

DEFAULT_HIDDEN = FIELDS["hidden"].default   # the default preset's network: 784-800-10


def _parse_hidden(ctx, param, value: str | None) -> tuple[int, ...] | None:
    """--hidden 32,16 -> (32, 16), each width and the depth within the engine's bounds."""
    if value is None:
        return None
    try:
        hidden = tuple(int(v) for v in value.split(","))
        check_value("hidden", hidden)
    except ValueError as exc:
        raise click.BadParameter(str(exc) if isinstance(exc, ConfigError) else
                                 f"{value!r} is not a comma list of widths, e.g. 32,16"
                                 ) from None
    if len(hidden) >= MAX_LAYERS:
        raise click.BadParameter(f"at most {MAX_LAYERS - 1} hidden layers, not {len(hidden)}")
    return hidden


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _number(x: float) -> str:
    return f"{x:.4e}" if math.isfinite(x) else "-"


def _failures(report: Report) -> str:
    """What failed: arrays whose gradients disagree, and arrays with nothing compared."""
    disagree = [c.name for c in report.failed if c.checked]
    unchecked = [c.name for c in report.failed if not c.checked]
    return "; ".join(
        ([f"{', '.join(disagree)} disagree with their finite differences"] if disagree else [])
        + ([f"{', '.join(unchecked)} not checked: every coordinate tried was at a ReLU kink "
            "(try --seed or --samples)"] if unchecked else []))


def format_report(report: Report, about: str) -> str:
    """A ``gradcheck.Report`` as a table: per array a row of figures, then its equations
    (the note's per sample, and batched); a verdict line last."""
    from ..gradcheck import MARGIN, RANDOM, TOP

    threshold = report.threshold
    lines = [f"gradcheck of {'-'.join(map(str, report.sizes))} ({about}): mean loss "
             f"{report.loss:.4f}, float64, eps {report.eps:.0e}",
             f"error = |a - n| / max(|a| + |n|, {report.floor:.1e}), a = backprop, n = centred "
             f"finite difference; threshold {threshold:.0e}",
             f"(the floor: {MARGIN} x {report.resolution:.1e}, the finite difference's "
             f"resolution, / the threshold)",
             f"up to {TOP + RANDOM} coordinates per array ({TOP} largest gradients, {RANDOM} "
             "at random); kinks: left out, a ReLU crossed within eps",
             "", f"{'array':<6} {'shape':<11} {'checked':>7} {'kinks':>5}  {'error':<8} "
                 f"{'at':<11} {'a':>11} {'n':>11}"]
    for c in report.checks:
        at = "-" if c.index is None else "[" + ", ".join(map(str, c.index)) + "]"
        shape = "(" + ", ".join(map(str, c.shape)) + (",)" if len(c.shape) == 1 else ")")
        lines.append(f"{c.name:<6} {shape:<11} {c.checked:>7} {c.skipped:>5}  {c.error:<8.1e} "
                     f"{at:<11} {_number(c.analytic):>11} {_number(c.numeric):>11}"
                     + ("" if c.passed else "  FAILED" if c.checked else "  UNCHECKED"))
        lines.append(f"{'':<6} {c.equation}   (batched: {c.batched})")
    lines.append("")
    lines.append(f"passed: every gradient matches its finite differences (largest error "
                 f"{max(c.error for c in report.checks):.1e} < {threshold:.0e})"
                 if report.passed else "FAILED: " + _failures(report))
    return "\n".join(lines)


def _as_json(report: Report, source: str, inputs: str) -> dict[str, Any]:
    """A ``gradcheck.Report`` for --json; errors and values that are not finite are null."""
    return {"passed": report.passed, "sizes": report.sizes, "model": source, "inputs": inputs,
            "samples": report.n, "loss": report.loss, "eps": report.eps,
            "resolution": report.resolution, "floor": report.floor,
            "threshold": report.threshold,
            "checks": [{"name": c.name, "shape": list(c.shape), "equation": c.equation,
                        "batched": c.batched, "error": _finite(c.error),
                        "index": None if c.index is None else list(c.index),
                        "analytic": _finite(c.analytic), "numeric": _finite(c.numeric),
                        "checked": c.checked, "skipped": c.skipped,
                        "threshold": c.threshold, "passed": c.passed}
                       for c in report.checks]}


def _check_work(sizes: list[int], samples: int, explain: bool, network_option: str) -> None:
    """Refuse a check whose finite differences would take more than ``MAX_WORK``, saying
    how many samples would fit (or that the network is too large to check at all)."""
    from .. import gradcheck as gc

    work = gc.work_needed(sizes, samples, explain)
    if work <= gc.MAX_WORK:
        return
    shape = "-".join(map(str, sizes))
    fits = next((k for k in range(samples - 1, 0, -1)
                 if gc.work_needed(sizes, k, explain) <= gc.MAX_WORK), 0)
    limit = f"{gc.MAX_WORK:.0e} (minutes)"
    if fits:
        raise click.BadParameter(f"a {shape} network on {samples} samples takes about "
                                 f"{work:.1e} multiply-adds of finite differences, more than "
                                 f"the {limit} a check may take; {fits} samples fit",
                                 param_hint="--samples")
    raise click.BadParameter(f"a {shape} network takes about {work:.1e} multiply-adds of "
                             f"finite differences even on one sample, more than the {limit} "
                             "a check may take; check a smaller one", param_hint=network_option)


@click.command(context_settings=CONTEXT)
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="A trained checkpoint to check. Default: a fresh network (--hidden).")
@click.option("--hidden", callback=_parse_hidden, metavar="INT[,...]",
              help="Hidden widths of a fresh network to check, e.g. 32,16. Default: "
                   f"{','.join(map(str, DEFAULT_HIDDEN))}, the default preset's.")
@click.option("--samples", type=click.IntRange(1, 1000), default=8, metavar="N",
              help="Test images the mean loss is taken over.")
@click.option("--seed", type=click.IntRange(0), default=0, metavar="S",
              help="Seeds the test images drawn, the coordinates checked at random and a fresh "
                   "network's weights.")
@click.option("--explain", is_flag=True,
              help="Also check dL/dx, the gradient to the input pixels.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@data_dir_option
@dataset_option
def gradcheck(model: Path | None, hidden: tuple[int, ...] | None, samples: int, seed: int,
              explain: bool, as_json: bool, source, dataset) -> None:
    """Check backprop: every W and b gradient against centred finite differences.

    On N test images of the model's dataset (MNIST's digits by default), in
    float64, the engine's gradients of the mean loss are compared with
    (L(w + eps) - L(w - eps)) / 2 eps at up to 50 coordinates of each array (its
    10 largest gradients and 40 at random), from the output layer down to the
    first: the largest relative error, where it is, and the note's equation that
    produced it. Exit 0 when every error is below 1e-06, 1 otherwise. Without the
    dataset's files in --data-dir, random inputs. The error, the kinks left out:
    docs/backprop.md.
    """
    import numpy as np

    from .. import gradcheck as gc
    from ..checkpoint import CheckpointError, load
    from ..dataset import to_input
    from ..memory import available_memory, show_size
    from ..mnist import MNIST, N_CLASSES, N_PIXELS, DataError, DatasetNotFound
    from ..network import MLP
    from ..threads import limit_threads

    if model is not None and hidden is not None:
        raise click.BadParameter("give --model or --hidden, not both", param_hint="--hidden")
    rng = np.random.default_rng(seed)
    if model is not None:
        try:
            ckpt = load(model)
        except CheckpointError as exc:
            raise fail(exc) from None
        net, dataset = ckpt.net, model_dataset((model,), ckpt.meta, dataset)
        _check_work(net.sizes, samples, explain, "--model")
        about = str(model)
    else:
        sizes = [N_PIXELS, *(hidden or DEFAULT_HIDDEN), N_CLASSES]
        need, have = gc.memory_needed(sizes, samples), available_memory()
        if need > have:
            raise click.BadParameter(f"a {'-'.join(map(str, sizes))} network needs about "
                                     f"{show_size(need)}, more than the {show_size(have)} "
                                     "available", param_hint="--hidden")
        _check_work(sizes, samples, explain, "--hidden")
        net, dataset = MLP(sizes, seed=seed), dataset or MNIST
        about = f"fresh, seed {seed}"
    source = source.with_dataset(dataset)
    try:
        pixels, labels = source.load("test", flat=False)            # (10000, 28, 28) uint8
        rows = rng.choice(len(pixels), min(samples, len(pixels)), replace=False)
        X, y = to_input(pixels[rows], net.input_scale), labels[rows]   # (n, 784)
        inputs = f"{dataset.name}-test"
    except DatasetNotFound:
        click.echo(f"no {dataset.title} test files in {source.folder}: checking on {samples} "
                   "random inputs in [0, 1] instead", err=True)
        X, y = rng.random((samples, N_PIXELS)), rng.integers(0, N_CLASSES, samples)
        inputs = "random"
    except DataError as exc:
        raise fail(exc) from None
    try:
        with limit_threads(1):   # products of a few rows: a second BLAS thread only waits
            report = gc.check_gradients(net, X, y, explain=explain, seed=seed)
    except FloatingPointError as exc:
        raise fail(f"{about}: {exc}") from None
    if as_json:
        click.echo(json.dumps(_as_json(report, str(model) if model else "fresh", inputs)))
    else:
        shown = ("random inputs" if inputs == "random"
                 else f"{dataset.title} test {dataset.subject}s")
        click.echo(format_report(report, f"{about}, on {report.n} {shown}"))
    if not report.passed:
        raise SystemExit(1)

"""``mlp export``: a trained network, or a committee, as an ONNX model."""

from __future__ import annotations

from pathlib import Path

import click

from .common import CONTEXT, fail, model_option, output_error

MISSING_EXTRA = "mlp export needs the onnx extra: pip install 'mnist-mlp[onnx]'"


@click.command(context_settings=CONTEXT)
@model_option
@click.argument("out", metavar="OUT.onnx", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT.onnx if it exists.")
def export(models: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Save the model as ONNX, checked against ONNX Runtime before it is written.

    The graph takes `pixels`, float32 (N, 784): 28x28 images row by row, 0 for
    background to 255 for full ink, as in MNIST's files; it returns `logits` and
    `probabilities`, float32 (N, 10). Several --model: one graph averaging the
    members' probabilities. Opset 13, IR 7: ONNX Runtime 1.6 and later, and
    onnxruntime-web, load it. See docs/export.md.
    """
    from .. import export as onnx_export
    from ..checkpoint import CheckpointError, load

    try:
        members = {str(path): load(path) for path in models}
    except CheckpointError as exc:
        raise fail(exc) from None
    try:
        size, diff = onnx_export.write(members, out, overwrite)
    except onnx_export.OnnxMissing:
        raise fail(MISSING_EXTRA) from None
    except onnx_export.ExportError as exc:
        raise fail(exc) from None
    except FileExistsError:
        raise fail(f"{out}: already exists; --overwrite replaces it") from None
    except OSError as exc:
        raise output_error(out, exc) from None
    kind = ("network " + "-".join(map(str, next(iter(members.values())).net.sizes))
            if len(members) == 1 else f"committee of {len(members)}")
    click.echo(f"saved {out} ({size / 1024:,.0f} KiB): {kind}, opset {onnx_export.OPSET}, "
               f"IR {onnx_export.IR_VERSION}; ONNX Runtime's probabilities match NumPy's "
               f"within {diff:.1e}")

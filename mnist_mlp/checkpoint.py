"""Checkpoints: ``.npz`` files that describe themselves.

Arrays ``W.0 .. W.{L-1}``, ``b.0 ..``, optional ``opt.<name>`` (optimiser state)
and ``extra.<name>``, plus ``meta``: a JSON string with the format version,
layer sizes, activation, input scaling and whatever the trainer adds (config,
epoch, metrics, data checksums). Files are written atomically and read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_writer
from .network import MLP

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint file that is missing, damaged or not one of ours."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds."""

    net: MLP
    meta: dict[str, Any]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def input_scale(self) -> np.float32:
        """The divisor that mapped 0-255 pixels to the training inputs (255: X in [0, 1])."""
        return np.float32(self.meta.get("input_scale", 255.0))


def save(path: Path, net: MLP, meta: dict[str, Any],
         optimizer_state: dict[str, np.ndarray] | None = None,
         extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a checkpoint atomically: ``path`` holds the old file or the whole new one."""
    arrays = {f"W.{l}": W for l, W in enumerate(net.W)}
    arrays.update({f"b.{l}": b for l, b in enumerate(net.b)})
    arrays.update({f"opt.{k}": v for k, v in (optimizer_state or {}).items()})
    arrays.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    header = {"format_version": FORMAT_VERSION, "sizes": net.sizes,
              "activation": net.activation, "dtype": str(net.dtype), **meta}
    arrays["meta"] = np.array(json.dumps(header))
    with atomic_writer(Path(path)) as f:
        np.savez(f, **arrays)


def load(path: Path) -> Checkpoint:
    """Read and validate a checkpoint.

    Raises:
        CheckpointError: missing, unreadable, not an mnist-mlp checkpoint, an
            unknown format version, or arrays that disagree with the metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train one with `mlp train`")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable .npz checkpoint (not a complete zip "
                              "archive; truncated, or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = str(exc).split(". ")[0] or type(exc).__name__
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({reason})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        version = meta["format_version"]
        sizes = [int(s) for s in meta["sizes"]]
    except (KeyError, ValueError, TypeError):
        raise CheckpointError(f"{path}: missing or unreadable metadata; not an mnist-mlp "
                              "checkpoint") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version}, this mnist-mlp reads "
                              f"format {FORMAT_VERSION}")
    if meta.get("activation") != MLP.activation:
        raise CheckpointError(f"{path}: unknown activation {meta.get('activation')!r}")
    if len(sizes) < 2 or min(sizes) < 1:
        raise CheckpointError(f"{path}: layer sizes {sizes} do not describe a network")
    shapes = {"W": [(o, i) for i, o in zip(sizes[:-1], sizes[1:])], "b": [(o,) for o in sizes[1:]]}
    params: dict[str, list[np.ndarray]] = {"W": [], "b": []}
    for name, expected in shapes.items():
        for l, shape in enumerate(expected):
            a = arrays.pop(f"{name}.{l}", None)
            if a is None or a.shape != shape or a.dtype.kind != "f":
                found = "missing" if a is None else f"{a.dtype} {a.shape}"
                raise CheckpointError(f"{path}: {name}.{l} is {found}, the metadata calls for "
                                      f"float {shape}")
            params[name].append(a.astype(np.float32, copy=False))
    net = MLP.from_params(params["W"], params["b"])
    leftover = [k for k in arrays if not k.startswith(("opt.", "extra."))]
    if leftover:
        raise CheckpointError(f"{path}: unexpected arrays {leftover} for sizes {sizes}")
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    extra = {k[6:]: v for k, v in arrays.items() if k.startswith("extra.")}
    return Checkpoint(net, meta, opt, extra)

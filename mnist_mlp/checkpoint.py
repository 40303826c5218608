"""Checkpoints: ``.npz`` files that describe themselves.

Arrays ``W.0 .. W.{L-1}``, ``b.0 ..``, optional ``opt.<name>`` (optimiser state)
and ``extra.<name>``, plus ``meta``: a JSON string with the format version,
layer sizes, activation, input scaling and whatever the trainer adds (config,
epoch, metrics, data checksums). Files are written atomically.

Loading trusts nothing: the file must be a regular file and a zip archive; the
metadata is read first (bounded) and checked (784 inputs, 10 outputs, sane
widths, a positive input scale); each array's header is checked against the
shape the metadata calls for *before* its data is read, and then only that
many bytes are read; weights must be finite; arrays of Python objects
(pickles) are refused. Optimiser state and extras are read only for a resume.
"""

from __future__ import annotations

import json
import math
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_writer, open_regular
from .memory import available_memory, show_size
from .mnist import N_CLASSES, N_PIXELS
from .network import MAX_LAYERS, MAX_WIDTH, MLP, Committee, Model

FORMAT_VERSION = 1
MAX_META_BYTES = 1 << 20      # the metadata is a few KB
MAX_NPY_HEADER = 4096          # .npy headers are 128 bytes or so
MAX_STATE_ELEMENTS = 1 << 28   # no optimiser or resume array is larger than this
MAX_INPUT_SCALE = 65535        # X = pixels / input_scale; 255 for 8-bit pixels in [0, 1]


# What zipfile and zlib raise on damaged archives (bad headers, CRC, deflate data).
DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
          RuntimeError, struct.error, UnicodeDecodeError)


class CheckpointError(Exception):
    """A checkpoint file that is missing, damaged or not one of ours."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds."""

    net: Model  # an MLP, or a Committee from ``load_committee``
    meta: dict[str, Any]
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def input_scale(self) -> float:
        """The divisor that maps 0-255 pixels to the network's inputs (255: X in [0, 1])."""
        return self.net.input_scale


def save(path: Path, net: MLP, meta: dict[str, Any],
         optimizer_state: dict[str, np.ndarray] | None = None,
         extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a checkpoint atomically: ``path`` holds the old file or the whole new one.

    Sizes, activation, input scale and format are added to ``meta`` here.
    """
    arrays = {f"W.{l}": W for l, W in enumerate(net.W)}
    arrays.update({f"b.{l}": b for l, b in enumerate(net.b)})
    arrays.update({f"opt.{k}": v for k, v in (optimizer_state or {}).items()})
    arrays.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    header = {"format_version": FORMAT_VERSION, "sizes": net.sizes,
              "activation": net.activation, "dtype": str(net.dtype), **meta,
              "input_scale": net.input_scale}
    arrays["meta"] = np.array(json.dumps(header))
    with atomic_writer(Path(path)) as f:
        np.savez(f, **arrays)


class _Archive:
    """The members of an open .npz, read one at a time within stated bounds."""

    def __init__(self, zf: zipfile.ZipFile, path: Path):
        self.zf, self.path = zf, path
        self.members = {n[:-4]: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy")}

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}")

    def read(self, name: str, shape: tuple[int, ...] | None, kinds: str,
             max_elements: int) -> np.ndarray:
        """Member ``name`` as an array, its header checked before its data is read.

        Args:
            shape: the exact shape required, or None for any of at most ``max_elements``.
            kinds: allowed dtype kinds ("f" float, "iu" integer, "U" text).
        """
        info = self.members.get(name)
        if info is None:
            raise self.fail(f"{name} is missing")
        with self.zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                found, fortran, dtype = read_header(f, max_header_size=MAX_NPY_HEADER)
            except (ValueError, OSError, EOFError, SyntaxError, TypeError,
                    tokenize.TokenError) as exc:               # numpy tokenizes the header
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise self.fail(f"{name} is not a readable array ({reason})") from None
            if dtype.hasobject:
                raise self.fail(f"{name} holds Python objects (a pickle); refused")
            count = math.prod(found)
            if dtype.kind not in kinds or (shape is not None and found != shape) or (
                    count > max_elements):
                want = f"{shape}" if shape is not None else f"at most {max_elements:,} values"
                raise self.fail(f"{name} is {dtype} {found}, the metadata calls for "
                                f"{'/'.join(kinds)} {want}")
            nbytes = count * dtype.itemsize
            if info.file_size > nbytes + MAX_NPY_HEADER:
                raise self.fail(f"{name} declares {info.file_size:,} bytes for {nbytes:,}")
            raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise self.fail(f"{name} is cut short")
        order = "F" if fortran else "C"
        return np.frombuffer(raw, dtype=dtype).reshape(found, order=order).copy()


def load(path: Path, *, with_state: bool = False) -> Checkpoint:
    """Read and validate a checkpoint.

    Args:
        with_state: also read the optimiser state and extras (for a resume).

    Raises:
        CheckpointError: missing, not a regular file, unreadable, not an
            mnist-mlp checkpoint, an unknown format version, metadata that does
            not describe a 784-...-10 network, or arrays that disagree with it.
    """
    path = Path(path)
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint; train one with `mlp train`") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror or exc}") from None
    with f:
        try:
            zf = zipfile.ZipFile(f)
        except DAMAGE:
            raise CheckpointError(f"{path}: not a readable .npz checkpoint (not a complete zip "
                                  "archive; truncated, or another kind of file)") from None
        with zf:
            try:
                return _read(_Archive(zf, path), with_state)
            except DAMAGE as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CheckpointError(f"{path}: a damaged .npz checkpoint ({reason})") from None


def load_committee(paths: list[Path]) -> Checkpoint:
    """One checkpoint, or several whose networks vote (their probabilities averaged).

    Members are named by their paths (a path given twice is one member); each
    keeps its own input scale. The metadata is the first member's, with
    ``members`` naming them all.

    Raises:
        CheckpointError: a member cannot be loaded, or members of different datasets.
    """
    if len(paths) == 1:
        return load(paths[0])
    members = {str(p): load(p) for p in paths}
    datasets = {m.meta.get("dataset", "mnist") for m in members.values()}
    if len(datasets) > 1:
        raise CheckpointError(f"{', '.join(members)}: members trained on different datasets "
                              f"({', '.join(sorted(map(str, datasets)))}) cannot vote together")
    meta = {**next(iter(members.values())).meta, "members": list(members)}
    return Checkpoint(Committee({name: m.net for name, m in members.items()}), meta)


def load_memory(sizes: list[int]) -> int:
    """Bytes loading and running a network of ``sizes`` takes at its peak, roughly: each
    matrix as stored (float64 at worst) and as float32, and a chunk of activations."""
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    return params * (8 + 4) + MLP.predict_chunk * max(sizes) * 4 * 2


def _read(archive: _Archive, with_state: bool) -> Checkpoint:
    if "meta" not in archive.members:
        raise archive.fail("missing or unreadable metadata; not an mnist-mlp checkpoint")
    text = archive.read("meta", (), "U", MAX_META_BYTES // 4)
    meta = _parse_meta(archive, str(text))
    sizes = meta["sizes"]
    need, have = load_memory(sizes), available_memory()
    if need > have:
        raise archive.fail(f"a {'-'.join(map(str, sizes))} network needs about "
                           f"{show_size(need)} to load and run, more than the "
                           f"{show_size(have)} of memory available")
    params: dict[str, list[np.ndarray]] = {"W": [], "b": []}
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for name, shape in (("W", (n_out, n_in)), ("b", (n_out,))):
            a = archive.read(f"{name}.{l}", shape, "f", math.prod(shape))
            if not np.isfinite(a).all():
                raise archive.fail(f"{name}.{l} holds NaN or infinite values")
            params[name].append(a.astype(np.float32, copy=False))
    net = MLP.from_params(params["W"], params["b"], meta["input_scale"])
    expected = {"meta"} | {f"{n}.{l}" for n in "Wb" for l in range(len(sizes) - 1)}
    leftover = [k for k in archive.members
                if k not in expected and not k.startswith(("opt.", "extra."))]
    if leftover:
        raise archive.fail(f"unexpected arrays {leftover} for sizes {sizes}")
    opt, extra = {}, {}
    if with_state:
        for k in archive.members:
            if k.startswith("opt."):
                opt[k[4:]] = archive.read(k, None, "fiu", MAX_STATE_ELEMENTS)
            elif k.startswith("extra."):
                extra[k[6:]] = archive.read(k, None, "fiu", MAX_STATE_ELEMENTS)
    return Checkpoint(net, meta, opt, extra)


def _parse_meta(archive: _Archive, text: str) -> dict[str, Any]:
    """The metadata JSON, checked to describe a network this package can run."""
    try:
        meta = json.loads(text)
    except RecursionError:
        raise archive.fail("metadata nested too deeply; not an mnist-mlp checkpoint") from None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise archive.fail("missing or unreadable metadata; not an mnist-mlp checkpoint")
    if meta["format_version"] != FORMAT_VERSION:
        raise archive.fail(f"checkpoint format {meta['format_version']!r}, this mnist-mlp reads "
                           f"format {FORMAT_VERSION}")
    if meta.get("activation") != MLP.activation:
        raise archive.fail(f"unknown activation {meta.get('activation')!r}")
    sizes = meta.get("sizes")
    if not (isinstance(sizes, list) and 2 <= len(sizes) <= MAX_LAYERS + 1
            and all(type(s) is int and 1 <= s <= MAX_WIDTH for s in sizes)
            and sizes[0] == N_PIXELS and sizes[-1] == N_CLASSES):
        raise archive.fail(f"layer sizes {str(sizes)[:80]} are not a network for MNIST "
                           f"({N_PIXELS} inputs, hidden widths of 1-{MAX_WIDTH}, "
                           f"{N_CLASSES} outputs)")
    scale = meta.get("input_scale")
    if type(scale) not in (int, float) or not 1 <= scale <= MAX_INPUT_SCALE:
        raise archive.fail(f"input_scale {str(scale)[:20]} is not a pixel divisor in "
                           f"[1, {MAX_INPUT_SCALE}]")
    return meta

"""Checkpoints: ``.npz`` files that describe themselves.

Arrays ``W.0 .. W.{L-1}``, ``b.0 ..``, optional ``opt.<name>`` (optimiser state)
and ``extra.<name>``, plus ``meta``: a JSON string with the format version,
layer sizes, activation, input scaling and whatever the trainer adds (config,
epoch, metrics, data checksums). Files are written atomically.

Loading trusts nothing: the file must be a regular file and a zip archive; the
metadata is read first (at most MAX_META_BYTES) and checked (784 inputs, 10
outputs, sane widths, a positive input scale); every array's size in bytes, as
the zip directory and its .npy header declare it, is bounded and its header
checked against the shape the metadata calls for *before* its data is read, and
then only that many bytes are read; weights must be finite floats; arrays of
Python objects (pickles) are refused. Optimiser state and extras are read only
for a resume, and only after every one of their names (STATE_ARRAYS) and
shapes has been checked against the network and their total against the memory
available.
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
from typing import Any, NamedTuple

import numpy as np

from .files import atomic_writer, open_regular
from .memory import available_memory, show_size
from .mnist import N_CLASSES, N_PIXELS, common_dataset, dataset_of
from .network import MAX_LAYERS, MAX_WIDTH, MLP, Committee, Model

FORMAT_VERSION = 1
MAX_META_BYTES = 1 << 20      # the metadata is a few KB
MAX_NPY_HEADER = 4096          # .npy headers are 128 bytes or so
MAX_ITEMSIZE = 8               # float64 at most: weights and state are float32 or 64
MAX_ORDER = 1 << 24            # the longest sample order a resumable state may hold
MAX_INPUT_SCALE = 65535        # X = pixels / input_scale; 255 for 8-bit pixels in [0, 1]

# The arrays a resumable state may hold beside the weights: name -> (dtype kinds, what).
# "scalar": shape (); "param": one array per parameter, NAME.0 .. NAME.{2L-1}, shaped as
# the network's W.0 .. W.{L-1}, b.0 .. b.{L-1}; "order": a sample order (n,). The names
# are those optim's state_dict() (under "opt.") and run's resumable state (under "extra.")
# write; a checkpoint holding any other is refused before its state is read.
STATE_ARRAYS = {
    "opt.t": ("iu", "scalar"),
    "opt.velocity": ("f", "param"), "opt.m": ("f", "param"), "opt.v": ("f", "param"),
    "extra.ema.t": ("iu", "scalar"), "extra.ema.m": ("f", "param"),
    "extra.order": ("iu", "order"),
}


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


class _Header(NamedTuple):
    """What a member's .npy header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _Archive:
    """The members of an open .npz, read one at a time within stated bounds."""

    def __init__(self, zf: zipfile.ZipFile, path: Path):
        self.zf, self.path = zf, path
        self.members = {n[:-4]: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy")}

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}")

    def header(self, name: str, kinds: str, max_bytes: int,
               shape: tuple[int, ...] | None = None) -> _Header:
        """Member ``name``'s header, checked; no data is read.

        Args:
            kinds: allowed dtype kinds ("f" float, "iu" integer, "U" text).
            max_bytes: the most its data may take (itemsize x count), and, with a
                header's worth more, the most the zip directory may declare for it.
            shape: the exact shape required, or None for any.
        """
        info = self.members.get(name)
        if info is None:
            raise self.fail(f"{name} is missing")
        if info.file_size > max_bytes + MAX_NPY_HEADER:
            raise self.fail(f"{name} declares {info.file_size:,} bytes, more than the "
                            f"{max_bytes:,} it may hold")
        with self.zf.open(info) as f:
            found = self._parse_header(name, f)
        if found.dtype.hasobject:
            raise self.fail(f"{name} holds Python objects (a pickle); refused")
        if found.dtype.kind not in kinds or (shape is not None and found.shape != shape):
            want = f"{shape}" if shape is not None else "an array"
            raise self.fail(f"{name} is {found.dtype} {found.shape}, the metadata calls for "
                            f"{'/'.join(kinds)} {want}")
        if found.nbytes > max_bytes:
            raise self.fail(f"{name} is {found.dtype} {found.shape}: {found.nbytes:,} bytes, "
                            f"more than the {max_bytes:,} it may hold")
        if info.file_size > found.nbytes + MAX_NPY_HEADER:
            raise self.fail(f"{name} declares {info.file_size:,} bytes for {found.nbytes:,}")
        return found

    def read(self, name: str, kinds: str, max_bytes: int,
             shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Member ``name`` as an array: ``header``'s checks, then only its bytes read."""
        found = self.header(name, kinds, max_bytes, shape)
        with self.zf.open(self.members[name]) as f:
            self._parse_header(name, f)
            raw = f.read(found.nbytes)
        if len(raw) != found.nbytes:
            raise self.fail(f"{name} is cut short")
        order = "F" if found.fortran else "C"
        return np.frombuffer(raw, dtype=found.dtype).reshape(found.shape, order=order).copy()

    def _parse_header(self, name: str, f) -> _Header:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f, max_header_size=MAX_NPY_HEADER)
        except (ValueError, OSError, EOFError, SyntaxError, TypeError,
                tokenize.TokenError) as exc:               # numpy tokenizes the header
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self.fail(f"{name} is not a readable array ({reason})") from None
        return _Header(shape, dtype, fortran)


def load(path: Path, *, with_state: bool = False) -> Checkpoint:
    """Read and validate a checkpoint.

    Args:
        with_state: also read the optimiser state and extras (for a resume).

    Raises:
        CheckpointError: missing, not a regular file, unreadable, not an
            mnist-mlp checkpoint, an unknown format version, metadata that does
            not describe a 784-...-10 network of a known dataset, or arrays that
            disagree with it.
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
    try:
        common_dataset(m.meta for m in members.values())
    except ValueError as exc:
        raise CheckpointError(f"{', '.join(members)}: {exc}") from None
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
    text = archive.read("meta", "U", MAX_META_BYTES, ())
    meta = _parse_meta(archive, str(text))
    sizes = meta["sizes"]
    weights = {f"{name}.{l}": shape for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
               for name, shape in (("W", (n_out, n_in)), ("b", (n_out,)))}
    leftover = [k for k in archive.members if k != "meta" and k not in weights
                and not k.startswith(("opt.", "extra."))]
    if leftover:
        raise archive.fail(f"unexpected arrays {leftover} for sizes {sizes}")
    state = _state_headers(archive, sizes) if with_state else {}
    need = load_memory(sizes) + sum(h.nbytes for h in state.values())
    have = available_memory()
    if need > have:
        raise archive.fail(f"a {'-'.join(map(str, sizes))} network"
                           f"{' and its saved state' if state else ''} needs about "
                           f"{show_size(need)} to load and run, more than the "
                           f"{show_size(have)} of memory available")
    params: dict[str, list[np.ndarray]] = {"W": [], "b": []}
    for name, shape in weights.items():
        a = archive.read(name, "f", math.prod(shape) * MAX_ITEMSIZE, shape)
        if not np.isfinite(a).all():
            raise archive.fail(f"{name} holds NaN or infinite values")
        params[name[0]].append(a.astype(np.float32, copy=False))
    net = MLP.from_params(params["W"], params["b"], meta["input_scale"])
    arrays = {k: archive.read(k, h.dtype.kind, h.nbytes, h.shape) for k, h in state.items()}
    opt = {k[4:]: a for k, a in arrays.items() if k.startswith("opt.")}
    extra = {k[6:]: a for k, a in arrays.items() if k.startswith("extra.")}
    return Checkpoint(net, meta, opt, extra)


def _state_shapes(sizes: list[int]) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    """The arrays a resumable state of a ``sizes`` network may hold: name -> (dtype kinds,
    exact shape, or None for a sample order of at most MAX_ORDER), from STATE_ARRAYS."""
    params = [(o, i) for i, o in zip(sizes[:-1], sizes[1:])] + [(o,) for o in sizes[1:]]
    shapes = {}
    for name, (kinds, what) in STATE_ARRAYS.items():
        if what == "param":
            shapes.update({f"{name}.{i}": (kinds, shape) for i, shape in enumerate(params)})
        else:
            shapes[name] = (kinds, () if what == "scalar" else None)
    return shapes


def _state_headers(archive: _Archive, sizes: list[int]) -> dict[str, _Header]:
    """The optimiser state's and extras' headers, every name and shape checked against
    the network before any of their data is read."""
    allowed = _state_shapes(sizes)
    names = [k for k in archive.members if k.startswith(("opt.", "extra."))]
    unknown = [k for k in names if k not in allowed]
    if unknown:
        raise archive.fail(f"unexpected saved state {unknown[:5]} for sizes {sizes}")
    headers = {}
    for k in names:
        kinds, shape = allowed[k]
        if shape is None:                                       # a sample order (n,)
            header = archive.header(k, kinds, MAX_ORDER * MAX_ITEMSIZE)
            if len(header.shape) != 1:
                raise archive.fail(f"{k} is {header.dtype} {header.shape}, not a sample order")
        else:
            header = archive.header(k, kinds, math.prod(shape) * MAX_ITEMSIZE, shape)
        headers[k] = header
    return headers


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
    try:
        dataset_of(meta)
    except ValueError as exc:
        raise archive.fail(str(exc)) from None
    return meta

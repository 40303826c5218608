"""ONNX export: a trained network, or a committee of them, as one ONNX graph.

The graph's contract (also in the model's metadata and docs/export.md):

- input ``pixels``: float32 (N, 784), N dynamic: 28x28 images row by row with
  MNIST's values, 0 background to 255 full ink (exactly the IDX file's bytes);
  each network's ``input_scale`` is applied inside the graph (Div);
- outputs ``logits`` and ``probabilities``: float32 (N, 10), digits 0-9 in order.

One network: Div by its input scale, Gemm (transB=1, as W is (out, in)) and Relu
per hidden layer, a last Gemm to the logits, Softmax along axis 1. A committee:
each member's softmax on pixels / its own input scale, their mean (Sum, then Div
by the count) as the probabilities, and the log of the mean (floored at
``network.PROBABILITY_FLOOR``, as ``network.Committee.logits``) as the logits: what
``mlp eval`` scores.

Opset 13 with IR version 7, so that every ONNX Runtime from 1.6 (2020) on, and
onnxruntime-web, loads it: opset 13 is the first whose Softmax works along one
axis; IR 7 is the version ONNX 1.8 wrote for opset 13. The graph uses only
Div, Gemm, Relu, Softmax, Sum, Clip and Log, which every onnxruntime-web backend
(wasm, WebGL, WebGPU) implements at opset 13.

``write`` (what ``mlp export`` calls) builds, checks, verifies and writes the
model in bounded memory: its need (``export_memory``) is checked before any
graph is built, and no two of the graph, its bytes and ONNX Runtime's copy are
held at once.

``onnx`` (and ``onnxruntime``, for ``verify``) are imported inside the functions
that use them: without the ``onnx`` extra this module imports, and using it
raises ``OnnxMissing``.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import package_version
from .checkpoint import Checkpoint
from .dataset import to_input
from .files import atomic_path, write_target
from .memory import available_memory, show_size
from .mnist import N_CLASSES, N_PIXELS, Dataset, common_dataset
from .network import MLP, PROBABILITY_FLOOR, Committee, Model
from .records import val_score

if TYPE_CHECKING:
    import onnx

OPSET = 13            # Softmax along one axis; ONNX Runtime >= 1.6 implements it
IR_VERSION = 7        # what ONNX 1.8 (opset 13) wrote; every ONNX Runtime >= 1.3 reads it
BATCH = "N"           # the dynamic batch dimension's name
INPUT = "pixels"
OUTPUTS = ("logits", "probabilities")
MAX_PROTO_BYTES = (2 << 30) - (1 << 20)   # protobuf's 2 GB limit, less room for the graph
VERIFY_TOLERANCE = 1e-5      # the largest |ONNX Runtime - NumPy| allowed in a probability
VERIFY_IMAGES = 256          # random images verify compares on
EXPORT_OVERHEAD = 64 << 20   # ONNX Runtime's and the checker's own allocations, roughly
EXTRA_HINT = "pip install 'mnist-mlp[onnx]'"

INPUT_CONVENTION = {
    "name": INPUT, "dtype": "float32", "shape": [BATCH, N_PIXELS],
    "layout": "each row a 28x28 image, row by row (pixel 28 * row + column)",
    "values": "0 = background, 255 = full ink: the bytes of MNIST's IDX files, as float32",
}
OUTPUT_CONVENTION = {
    "logits": {"dtype": "float32", "shape": [BATCH, N_CLASSES],
               "meaning": "the last layer's outputs; for a committee, log of the mean "
                          "probabilities"},
    "probabilities": {"dtype": "float32", "shape": [BATCH, N_CLASSES],
                      "meaning": "softmax of the logits; for a committee, the mean of the "
                                 "members' softmax outputs"},
    "classes": "digits 0-9, in order",
}

Models = Checkpoint | Mapping[str, Checkpoint]


class OnnxMissing(ImportError):
    """The ``onnx`` extra (onnx, onnxruntime) is not installed."""


class ExportError(Exception):
    """A model that cannot be exported, or an export that ONNX Runtime disagrees with."""


def _onnx():
    try:
        import onnx
        from onnx import checker, helper  # noqa: F401  (submodules used below)
    except ImportError:
        raise OnnxMissing(f"ONNX export needs the onnx package: {EXTRA_HINT}") from None
    return onnx


def _members(models: Models) -> dict[str | None, Checkpoint]:
    """The checkpoints by name (None for one unnamed checkpoint), each of one network."""
    members = {None: models} if isinstance(models, Checkpoint) else dict(models)
    if not members:
        raise ExportError("nothing to export: no checkpoint given")
    if not all(isinstance(c.net, MLP) for c in members.values()):
        raise ExportError("give a committee as its members' checkpoints by name, not as a "
                          "loaded committee")
    n_bytes = _weight_bytes(members)
    if n_bytes > MAX_PROTO_BYTES:
        raise ExportError(f"{n_bytes / 2**30:.1f} GB of float32 weights: more than an ONNX file "
                          "holds (2 GB)")
    return members


def _dataset(members: dict[str | None, Checkpoint]) -> Dataset:
    """The dataset every member was trained on.

    Raises:
        ExportError: an unknown dataset, or members of different ones.
    """
    try:
        return common_dataset(c.meta for c in members.values())
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def network(models: Models) -> Model:
    """What the exported graph computes, in NumPy: the network, or the committee.

    Its inputs are X = pixels / its ``input_scale``.
    """
    members = _members(models)
    if len(members) == 1:
        return next(iter(members.values())).net
    return Committee({name: c.net for name, c in members.items()})


def metadata(models: Models) -> dict[str, str]:
    """The model's metadata_props: strings, JSON where structured.

    Keys: ``model`` ("network" or "committee"), ``dataset`` and ``class_names`` (JSON, the
    label of each output column), ``members`` (a JSON list, one object per network: its
    name when it has one, sizes, input_scale, preset, epoch, kept_val_accuracy and the
    package_version that trained it), ``input`` and ``outputs`` (the conventions, JSON),
    ``package_version`` (of the exporter).
    """
    members = _members(models)
    dataset = _dataset(members)
    described = []
    for name, c in members.items():
        metrics = c.meta.get("metrics")
        described.append({
            **({} if name is None else {"name": name}),
            "sizes": c.net.sizes, "input_scale": c.input_scale, "preset": c.meta.get("preset"),
            "epoch": c.meta.get("epoch"),
            "kept_val_accuracy": val_score(metrics) if isinstance(metrics, dict) else None,
            "package_version": c.meta.get("package_version")})
    return {
        "model": "network" if len(members) == 1 else "committee",
        "dataset": dataset.name,
        "class_names": json.dumps(list(dataset.class_names)),
        "members": json.dumps(described),
        "input": json.dumps(INPUT_CONVENTION),
        "outputs": json.dumps(OUTPUT_CONVENTION),
        "package_version": package_version(),
    }


def export_memory(models: Models) -> int:
    """Bytes an export takes at its peak beside the loaded checkpoints, roughly.

    The weights as float32 three times over: the graph's copy of them with its
    serialised bytes and one tensor's bytes on their way into the graph (``to_onnx``:
    the checker's parse of those bytes instead), then ONNX Runtime's parse and
    its own tensors while ``write`` checks the file; and the activations of
    ``verify``'s images.
    """
    members = _members(models)
    widest = max(max(c.net.sizes) for c in members.values())
    return 3 * _weight_bytes(members) + VERIFY_IMAGES * widest * 4 * 4 + EXPORT_OVERHEAD


def check_memory(models: Models, available: int | None = None) -> None:
    """Refuse, before any graph is built, an export that would not fit in memory.

    Args:
        available: the bytes it may take; default ``memory.available_memory()``.

    Raises:
        ExportError: ``export_memory`` is more than ``available``.
    """
    need = export_memory(models)
    have = available_memory() if available is None else available
    if need > have:
        raise ExportError(f"exporting {_weight_bytes(_members(models)) / 2**30:.2f} GiB of "
                          f"weights takes about {show_size(need)} of memory beside the "
                          f"model, more than the {show_size(have)} available")


def to_onnx(models: Models, available: int | None = None) -> onnx.ModelProto:
    """The ONNX model of one checkpoint, or of several voting as a committee.

    A committee averages its members' probabilities, each member seeing the
    pixels divided by its own input scale: the rule ``mlp eval`` scores it by.
    The model passes ``onnx.checker.check_model(full_check=True)``.

    Args:
        models: a checkpoint of one network, or the checkpoints of a committee's
            members by name (each from ``checkpoint.load``; one entry: one network).
        available: the bytes it may take (``check_memory``).

    Raises:
        OnnxMissing: the onnx package is not installed.
        ExportError: no models, a loaded committee, weights too large for one
            ONNX file, or more memory needed than is available.
    """
    onnx = _onnx()
    check_memory(models, available)
    with _memory_errors():
        model = _graph(_members(models))
        onnx.checker.check_model(model, full_check=True)
    return model


def write(models: Models, path: Path, overwrite: bool = False,
          available: int | None = None) -> tuple[int, float]:
    """Build, check and verify the ONNX model of ``models`` and write it atomically.

    The model is serialised into a ``*.part`` file beside ``path`` and the graph
    dropped before the checker and ONNX Runtime read that file back, so that
    no two of the graph, its bytes and ONNX Runtime's copy are held at once;
    ``path`` is replaced only when ``verify`` passes.

    Args:
        models: as ``to_onnx``'s.
        available: the bytes it may take (``check_memory``).

    Returns:
        The file's size in bytes and ``verify``'s largest probability difference.

    Raises:
        OnnxMissing: onnx or onnxruntime is not installed.
        ExportError: as ``to_onnx`` and ``verify``.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: ``path`` is a folder, FIFO, device or socket, a stream
            (``/dev/stdout``), a symlink to nothing, or its folder is not writable.
    """
    onnx = _onnx()
    path = Path(path)
    write_target(path)            # a folder, FIFO, device, stream, dangling symlink: refused
    if path.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists", str(path))
    check_memory(models, available)
    with atomic_path(path) as part, _memory_errors():
        part.write_bytes(_graph(_members(models)).SerializeToString())
        onnx.checker.check_model(part, full_check=True)
        diff = verify(part, models)
        return part.stat().st_size, diff


@contextmanager
def _memory_errors() -> Iterator[None]:
    """Running out of memory while building, serialising or checking a graph as ExportError
    (protobuf reports a failed allocation as an EncodeError)."""
    from google.protobuf.message import EncodeError

    try:
        yield
    except (MemoryError, EncodeError) as exc:
        raise ExportError(f"not enough memory to build the ONNX model "
                          f"({type(exc).__name__}); free some, or export a smaller "
                          "network") from None


def _weight_bytes(members: Mapping[str | None, Checkpoint]) -> int:
    return sum(p.size * 4 for c in members.values() for p in c.net.params)


def _graph(members: dict[str | None, Checkpoint]) -> onnx.ModelProto:
    """The model, unchecked; each weight copied once, straight into the model's graph."""
    from onnx import TensorProto, helper

    single = len(members) == 1
    constants, nodes, member_probs = {}, [], []

    def constant(value, name: str) -> str:
        constants[name] = value
        return name

    for m, c in enumerate(members.values()):
        prefix = "" if single else f"member{m}."
        A = f"{prefix}X"                                             # (N, 784)
        nodes.append(helper.make_node(                              # X = pixels / input_scale
            "Div", [INPUT, constant(c.input_scale, f"{prefix}input_scale")], [A]))
        last = len(c.net.W) - 1
        for l, (W, b) in enumerate(zip(c.net.W, c.net.b)):
            Z = "logits" if single and l == last else f"{prefix}Z{l}"
            nodes.append(helper.make_node(                          # Z = A Wᵀ + b  (N, out)
                "Gemm", [A, constant(W, f"{prefix}W{l}"), constant(b, f"{prefix}b{l}")], [Z],
                transB=1))
            if l < last:
                A = f"{prefix}A{l}"
                nodes.append(helper.make_node("Relu", [Z], [A]))     # A = ReLU(Z)
        member_probs.append("probabilities" if single else f"{prefix}probabilities")
        nodes.append(helper.make_node("Softmax", [Z], [member_probs[-1]], axis=1))
    if not single:
        nodes += [helper.make_node("Sum", member_probs, ["probability_sum"]),
                  helper.make_node("Div", ["probability_sum", constant(len(members), "count")],
                                   ["probabilities"]),
                  helper.make_node("Clip", ["probabilities",
                                            constant(PROBABILITY_FLOOR, "floor")], ["floored"]),
                  helper.make_node("Log", ["floored"], ["logits"])]
    kind = "one network" if single else f"a committee of {len(members)} networks"
    graph = helper.make_graph(
        nodes, "mnist_mlp", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT,
                                                           [BATCH, N_PIXELS])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, N_CLASSES])
         for name in OUTPUTS],
        doc_string=f"MNIST digit classifier, {kind}: pixels (N, 784), 0-255 -> logits, "
                   "probabilities (N, 10)")
    props = metadata(members)
    model = helper.make_model(graph, ir_version=IR_VERSION, producer_name="mnist-mlp",
                              producer_version=props["package_version"],
                              opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string="A multilayer perceptron trained on MNIST by "
                                         "mnist-mlp; see the metadata for its contract.")
    helper.set_model_props(model, props)
    for name, value in constants.items():     # TensorProto's documented fields, as from_array
        tensor = model.graph.initializer.add()  # fills them, without its copies
        array = np.asarray(value, dtype="<f4")
        tensor.name, tensor.data_type = name, TensorProto.FLOAT
        tensor.dims.extend(array.shape)
        data = array.tobytes()
        np.empty(len(data), np.uint8)         # protobuf's copy: a MemoryError here if it cannot
        tensor.raw_data = data                # be had, where protobuf would crash the process
    return model


def session(model: onnx.ModelProto | bytes | Path, threads: int = 1):
    """An ONNX Runtime CPU session for ``model`` (a ModelProto, its bytes, or a file).

    Raises:
        OnnxMissing: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxMissing(f"checking the export needs onnxruntime: {EXTRA_HINT}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    if not isinstance(model, (bytes, str, Path)):
        model = model.SerializeToString()
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def verify(model: onnx.ModelProto | bytes | Path, models: Models,
           pixels: np.ndarray | None = None, tolerance: float = VERIFY_TOLERANCE) -> float:
    """Run ``model`` (or its bytes, or its file) in ONNX Runtime and in NumPy; the
    largest probability difference.

    Args:
        pixels: images (n, 784) with values 0-255; default 256 random images
            (seed 0) whose pixels are ink with probability 0.2.
        tolerance: the largest difference allowed.

    Raises:
        OnnxMissing: onnxruntime is not installed.
        ExportError: the difference exceeds ``tolerance``, or NumPy's network overflows.
    """
    if pixels is None:
        rng = np.random.default_rng(0)
        pixels = np.where(rng.random((VERIFY_IMAGES, N_PIXELS)) < 0.2,
                          rng.integers(0, 256, (VERIFY_IMAGES, N_PIXELS)), 0)
    pixels = np.asarray(pixels, dtype=np.float32).reshape(-1, N_PIXELS)      # (n, 784)
    onnx_probs = session(model).run(["probabilities"], {INPUT: pixels})[0]   # (n, 10)
    net = network(models)
    try:
        numpy_probs = net.predict_proba(to_input(pixels, net.input_scale))   # (n, 10)
    except FloatingPointError as exc:
        raise ExportError(f"cannot check the export against NumPy: {exc}") from None
    diff = float(np.max(np.abs(onnx_probs - numpy_probs)))
    if not diff <= tolerance:                                            # NaN fails too
        raise ExportError(f"ONNX Runtime's probabilities differ from NumPy's by {diff:.3g} "
                          f"(at most {tolerance:g} allowed)")
    return diff

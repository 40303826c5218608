"""Shared fixtures: synthetic IDX files, a tiny learnable MNIST stand-in, real MNIST."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from mnist_mlp import data

@pytest.fixture(autouse=True)
def _signal_handlers():
    """Each test leaves SIGINT and SIGTERM as it found them: `mlp train` stopped by a signal
    ignores further ones until its process exits, and these tests run it in-process."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


REAL_MNIST = Path(os.environ.get("MLP_TEST_MNIST")
                  or Path(__file__).resolve().parents[2] / "shared" / "mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000080<ndim>, big-endian sizes, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 'digits': class k is a bright bar in row band k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k:4 + 2 * k, 4:24] = 255
    return images, labels


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch) -> Path:
    """A data folder of small synthetic IDX files that the resource table accepts.

    600 training and 200 test samples; ``data.RESOURCES`` is patched to their
    checksums, so everything downstream runs the real verification code.
    """
    folder = tmp_path / "tiny"
    folder.mkdir()
    payloads = {}
    for split, n, seed in (("train", 600, 1), ("test", 200, 2)):
        images, labels = synthetic_digits(n, seed)
        prefix = "train" if split == "train" else "t10k"
        payloads[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        payloads[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    counts = {"train": 600, "test": 200}
    resources = tuple(
        data.Resource(r.name, hashlib.sha256(payloads[r.name]).hexdigest(), r.split, r.kind,
                      counts[r.split])
        for r in data.RESOURCES)
    monkeypatch.setattr(data, "RESOURCES", resources)
    for name, payload in payloads.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
    return folder


def _real_mnist() -> Path:
    if not all((REAL_MNIST / f"{r.gz_name}").is_file() for r in data.RESOURCES):
        pytest.skip(f"real MNIST not found in {REAL_MNIST} (set MLP_TEST_MNIST to a folder of "
                    "the four .gz files)")
    return REAL_MNIST


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    return _real_mnist()


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    """The `quick` preset (784-128-10, 3 epochs, ~97% test) trained once per session on real
    MNIST, through the library's run: its checkpoint, with the metrics log beside it."""
    from mnist_mlp import run

    folder = _real_mnist()
    out = tmp_path_factory.mktemp("real-model") / "quick.npz"
    run.train(out, config="quick", data_dir=folder, progress=False, plots=False)
    return out

"""A tiny learnable MNIST stand-in, handed down as a ``DataSource``, and the one tiny run config.

Run as a script, it trains (or resumes) a run on such data in its own process:

    python tests/tiny_data.py DATA_FOLDER OUT FLAGS_JSON [--resume]

Only absolute imports here, so that it runs as a script as well as it imports.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp.dataset import DataSource
from mnist_mlp.mnist import RESOURCES, Resource

N_TRAIN, N_TEST = 600, 200
# The one tiny run: 784-16-10 on 500 samples, validated on the last 100 of the 600.
TINY = {"hidden": (16,), "epochs": 3, "val_size": 100, "batch_size": 32}


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


def tiny_payloads() -> dict[str, bytes]:
    """MNIST file name -> the IDX payload of its tiny stand-in (600 train, 200 test)."""
    payloads = {}
    for prefix, n, seed in (("train", N_TRAIN, 1), ("t10k", N_TEST, 2)):
        images, labels = synthetic_digits(n, seed)
        payloads[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        payloads[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    return payloads


def trusting(payloads: dict[str, bytes], resources: tuple[Resource, ...] = RESOURCES
             ) -> tuple[Resource, ...]:
    """``resources`` with the named files' checksums and counts those of ``payloads``."""
    def count(payload: bytes) -> int:
        return struct.unpack(">I", payload[4:8])[0]

    return tuple(dataclasses.replace(r, sha256=hashlib.sha256(payloads[r.name]).hexdigest(),
                                     count=count(payloads[r.name])) if r.name in payloads else r
                 for r in resources)


def tiny_source(folder: Path, write: bool = True) -> DataSource:
    """A DataSource of the tiny files in ``folder`` (written there unless ``write`` is
    False), no mirrors, and a resource table that expects exactly those files."""
    payloads = tiny_payloads()
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        for name, payload in payloads.items():
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
    return DataSource(folder, mirrors=(), resources=trusting(payloads))


def train_run(out: Path, source: DataSource, config: str | Path | None = None,
              flags: dict[str, Any] | None = None, start: str = "new", **hooks: Any):
    """A run at ``out`` on ``source`` built as ``mlp train`` builds it (``run.build_spec``)
    and run whole, with ``hooks`` (``run.Hooks``' fields; no progress, no plots unless
    given)."""
    from mnist_mlp import run

    spec = run.build_spec(out, config, flags, data=source, start=run.Start(start))
    return run.train(spec, run.Hooks(**{"progress": False, "plots": False, **hooks}))


def train_tiny(out: Path, source: DataSource, *, resume: bool = False, **flags: Any):
    """A new run of the TINY config on ``source`` (``flags`` override it; an earlier run
    at ``out`` is replaced), or the run at ``out`` resumed (``flags`` are the epochs or
    patience given); no plots."""
    if resume:
        return train_run(out, source, flags=flags, start="resume")
    return train_run(out, source, flags={**TINY, **flags}, start="overwrite")


def copy_run(out: Path, folder: Path) -> Path:
    """A copy of the run at ``out`` (its checkpoints and log) in ``folder``; the copy's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in out.parent.glob(out.stem + ".*"):
        if not path.name.endswith(".lock"):
            shutil.copy2(path, folder / path.name)
    return folder / out.name


def main(argv: list[str]) -> None:
    folder, out, flags = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    resume = "--resume" in argv[3:]
    flags = {k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}
    train_run(out, tiny_source(folder, write=False), flags={} if resume else flags,
              start="resume" if resume else "new")


if __name__ == "__main__":
    main(sys.argv[1:])

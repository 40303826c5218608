"""A dataset as arrays: IDX parsing, the train/val/test splits, pixels to network inputs.

``DataSource`` says which dataset (MNIST or Fashion-MNIST) and where it comes from (a
folder, mirrors, a download deadline, a system package's copy); it is built once, from
options and the environment, and handed down as one value.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .download import DOWNLOAD_DEADLINE_S, ensure_mnist, find_file, read_payload
from .labelled import LabelledImages, read_labelled
from .mnist import (
    IMAGE_SIDE,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNIST,
    N_CLASSES,
    N_PIXELS,
    PIXEL_SCALE,
    CorruptFile,
    Dataset,
    DatasetNotFound,
    Resource,
    redo_hint,
)

DATA_DIR_ENV = "MLP_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class DataSource:
    """Where a dataset comes from: a folder, the mirrors to fill it from, a deadline per
    file, and the table of files expected there (the dataset's own unless given)."""

    folder: Path = DEFAULT_DATA_DIR
    mirrors: tuple[str, ...] = MNIST.mirrors
    deadline_s: float = DOWNLOAD_DEADLINE_S
    resources: tuple[Resource, ...] = field(default=(), repr=False)
    dataset: Dataset = field(default=MNIST, repr=False)
    extra: tuple[Path, ...] = ()  # users' labelled folders mixed into training

    def __post_init__(self):
        if not self.resources:
            object.__setattr__(self, "resources", self.dataset.resources)

    @classmethod
    def from_env(cls, folder: Path | None = None, mirrors: tuple[str, ...] = (),
                 deadline_s: float = DOWNLOAD_DEADLINE_S, dataset: Dataset = MNIST
                 ) -> "DataSource":
        """The options given, else ``$MLP_DATA_DIR`` (with the dataset's sub-folder:
        ``data/fashion-mnist``) and the dataset's mirrors variable (``$MLP_MNIST_MIRRORS``,
        comma-separated), else ``./data`` and the public mirrors."""
        env_mirrors = tuple(m.strip() for m in os.environ.get(dataset.mirrors_env, "")
                            .split(",") if m.strip())
        base = Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
        return cls(Path(folder or base / dataset.folder),
                   tuple(mirrors) or env_mirrors or dataset.mirrors, deadline_s, (), dataset)

    def with_dataset(self, dataset: Dataset) -> "DataSource":
        """This source for ``dataset``: a folder and mirrors that are ``from_env``'s defaults
        for the current dataset become ``dataset``'s defaults; ones given stay."""
        if dataset == self.dataset:
            return self
        was, now = DataSource.from_env(dataset=self.dataset), DataSource.from_env(dataset=dataset)
        return DataSource(now.folder if self.folder == was.folder else self.folder,
                          now.mirrors if self.mirrors == was.mirrors else self.mirrors,
                          self.deadline_s, (), dataset, self.extra)

    def load_extra(self, should_stop: Callable[[], bool] = lambda: False
                   ) -> list[LabelledImages]:
        """The ``extra`` folders' images, prepared for this dataset's networks.

        Raises:
            LabelledFolderError: a folder with no usable image, or too many.
            labelled.ReadStopped: ``should_stop`` (asked before each file) said so.
        """
        return [read_labelled(folder, self.dataset, should_stop) for folder in self.extra]

    @property
    def n_train(self) -> int:
        """Samples in the official training set."""
        return next(r.count for r in self.resources if r.split == "train")

    def checksums(self) -> dict[str, str]:
        """File name -> SHA-256 of each payload, for checkpoint metadata."""
        return {r.name: r.sha256 for r in self.resources}

    def ensure(self, progress: bool = True, verify: bool = True
               ) -> list[tuple[Resource, str]]:
        """``download.ensure_mnist`` on this source: (resource, "present" | "downloaded");
        a file the folder lacks but the dataset's installed copy holds is "present" there."""
        return ensure_mnist(self.folder, self.mirrors, self.resources, progress=progress,
                            verify=verify, deadline_s=self.deadline_s,
                            elsewhere=self.dataset.installed)

    def summary(self, report: list[tuple[Resource, str]]) -> str | None:
        """The line telling what ``ensure`` downloaded, or None when it fetched nothing."""
        fetched = [r.gz_name for r, status in report if status == "downloaded"]
        return (f"downloaded and verified {', '.join(fetched)} into {self.folder}"
                if fetched else None)

    def path(self, resource: Resource) -> Path | None:
        """Where ``resource`` sits: in the folder, else in the dataset's installed copy."""
        return next((path for folder in (self.folder, *self.dataset.installed)
                     if (path := find_file(folder, resource)) is not None), None)

    def payload(self, resource: Resource) -> tuple[bytes, Path]:
        """The verified IDX payload of ``resource`` and the file it came from.

        Raises:
            DatasetNotFound: nowhere to be found (the message says how to get it).
            CorruptFile: damaged, or not the dataset's file.
        """
        path = self.path(resource)
        if path is None:
            raise DatasetNotFound(
                f"{self.dataset.title} file {resource.gz_name} not found in {self.folder}. Run "
                f"{self.download_command}, or copy the {self.dataset.title} files there.")
        return read_payload(path, resource), path

    @property
    def download_command(self) -> str:
        """The command that fetches this dataset into this folder, quoted for a message."""
        option = "" if self.dataset is MNIST else f" --dataset {self.dataset.name}"
        return f"`mlp download{option} --data-dir {self.folder}`"

    def load(self, split: Split = "train", *, flat: bool = True, val_size: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
        """One split, read from the folder (no download; see ``ensure``).

        The validation split is the *last* ``val_size`` samples of the official
        training set (indices 60000 - val_size .. 59999); with ``val_size`` > 0 the
        "train" split is the samples before them. The test split is the official
        10,000 test images.

        Args:
            split: "train", "val" or "test".
            flat: True for X float32 (n, 784) in [0, 1]; False for uint8 pixels (n, 28, 28).
            val_size: samples held out of "train" for "val".

        Returns:
            X as asked, y int64 (n,).

        Raises:
            DatasetNotFound, CorruptFile: with a message that says what to do.
            ValueError: bad split or val_size.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
        if split == "val" and val_size == 0:
            raise ValueError("there is no validation split: the model was trained with "
                             "val_size 0")
        if split == "test":
            return _to_arrays(*self._read("test"), flat)
        X, y, X_val, y_val = self.load_train_val(val_size, flat=flat)
        return (X_val, y_val) if split == "val" else (X, y)

    def load_train_val(self, val_size: int = 5000, *, flat: bool = True
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The training files, read once, as the "train" and "val" splits of ``load``.

        Returns:
            X, y, X_val, y_val; X_val and y_val are empty when val_size is 0.
        """
        images, labels = self._read("train")
        if not 0 <= val_size < len(images):
            raise ValueError(f"val_size {val_size} leaves no training samples of "
                             f"{len(images)}")
        cut = len(images) - val_size
        return (*_to_arrays(images[:cut], labels[:cut], flat),
                *_to_arrays(images[cut:], labels[cut:], flat))

    def _read(self, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """Verified, parsed and cross-checked images uint8 (n, 28, 28) and labels uint8 (n,)."""
        images_res, labels_res = (r for r in self.resources if r.split == split)
        images_payload, images_path = self.payload(images_res)
        labels_payload, labels_path = self.payload(labels_res)
        images = parse_idx(images_payload, IMAGES_MAGIC, images_path)  # (n, 28, 28) uint8
        labels = parse_idx(labels_payload, LABELS_MAGIC, labels_path)  # (n,) uint8
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise CorruptFile(f"{images_path}: images of {images.shape[1:]} pixels, not "
                              f"28x28; {redo_hint(images_path)}")
        if images.shape[0] != labels.shape[0]:
            raise CorruptFile(f"{images_path} has {images.shape[0]} images but {labels_path} "
                              f"has {labels.shape[0]} labels; {redo_hint(labels_path)}")
        if labels.size and labels.max() >= N_CLASSES:
            raise CorruptFile(f"{labels_path}: label {labels.max()} outside 0-9; "
                              f"{redo_hint(labels_path)}")
        return images, labels


def parse_idx(payload: bytes, expected_magic: int, source: Path | str = "<bytes>") -> np.ndarray:
    """Parse one IDX file of unsigned bytes.

    Args:
        payload: the decompressed file.
        expected_magic: ``IMAGES_MAGIC`` or ``LABELS_MAGIC``.
        source: the file name, for error messages.

    Returns:
        uint8 array shaped by the header: (n, rows, cols) or (n,).

    Raises:
        CorruptFile: wrong magic, or a payload length that disagrees with the header.
    """
    ndim = expected_magic & 0xFF
    header_len = 4 + 4 * ndim
    magic = struct.unpack(">I", payload[:4])[0] if len(payload) >= 4 else None
    if magic is not None and magic != expected_magic:
        raise CorruptFile(f"{source}: wrong magic number 0x{magic:08x}, expected "
                          f"0x{expected_magic:08x}; {redo_hint(source)}")
    if len(payload) < header_len:
        raise CorruptFile(f"{source}: too short for an IDX header ({len(payload)} bytes); "
                          f"{redo_hint(source)}")
    shape = struct.unpack(f">{ndim}I", payload[4:header_len])
    expected_len = header_len + math.prod(shape)  # Python ints: no overflow
    if len(payload) != expected_len:
        raise CorruptFile(f"{source}: {len(payload)} bytes but the header {shape} calls for "
                          f"{expected_len}; {redo_hint(source)}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header_len).reshape(shape)


def to_input(pixels: np.ndarray, scale: float = PIXEL_SCALE) -> np.ndarray:
    """Pixels (n, 28, 28) or (n, 784), white ink on black -> network input X float32 (n, 784).

    X = pixels / scale: the one place pixels become inputs, for training data,
    users' images and the server alike (``scale`` comes from the checkpoint).
    """
    X = pixels.reshape(len(pixels), N_PIXELS).astype(np.float32)  # (n, 784)
    X /= np.float32(scale)
    return X


def extra_repeats(n: int, m: int, share: float) -> int:
    """How many times each of m extra images is repeated to make ``share`` of n + r m."""
    return math.ceil(share * n / ((1 - share) * m)) if m and share else 0


def mix_in(X: np.ndarray, y: np.ndarray, extra: np.ndarray, extra_y: np.ndarray,
           share: float) -> tuple[np.ndarray, np.ndarray]:
    """The training split with users' images added as ``share`` of it: each extra image
    repeated r = ceil(share n / ((1 - share) m)) times, so that m images count among n.

    Args:
        X, y: the training split (n, 784), (n,).
        extra, extra_y: the users' images as inputs (m, 784) and their labels (m,).
        share: in [0, 1); 0 or no images leaves the split as it is.

    Returns:
        X and y with the repeated images after them: (n + r m, 784), (n + r m,), made in
        place (beside X, no third copy of the repeats).
    """
    n, m = len(X), len(extra)
    repeats = extra_repeats(n, m, share)
    if not repeats:
        return X, y
    X_all = np.empty((n + repeats * m, X.shape[1]), X.dtype)
    y_all = np.empty(n + repeats * m, y.dtype)
    X_all[:n], y_all[:n] = X, y
    X_all[n:].reshape(repeats, m, -1)[:] = extra       # (r, m, 784) <- (m, 784), broadcast
    y_all[n:].reshape(repeats, m)[:] = extra_y
    return X_all, y_all


def _to_arrays(images: np.ndarray, labels: np.ndarray, flat: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    y = labels.astype(np.int64)  # (n,)
    if not flat:
        return images.copy(), y  # (n, 28, 28) uint8, writable
    return to_input(images), y

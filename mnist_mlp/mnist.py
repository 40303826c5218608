"""MNIST itself: its shape, its four files and their checksums, and its errors.

The one module every other imports for ``IMAGE_SIDE`` and friends; it does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IMAGE_SIDE = 28                       # MNIST digits are 28x28 pixels
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE    # 784: the network's input width
N_CLASSES = 10                        # digits 0-9: the network's output width
PIXEL_SCALE = 255.0                   # X = pixels / PIXEL_SCALE, so X lies in [0, 1]

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension


@dataclass(frozen=True)
class Resource:
    """One MNIST file: its canonical name, sample count and the SHA-256 of its IDX payload."""

    name: str  # e.g. "train-images-idx3-ubyte"
    sha256: str
    split: Literal["train", "test"]
    kind: Literal["images", "labels"]
    count: int  # samples in the file

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"

    @property
    def magic(self) -> int:
        return IMAGES_MAGIC if self.kind == "images" else LABELS_MAGIC

    @property
    def size(self) -> int:
        """Bytes of the IDX payload: header, then one byte per pixel or label."""
        if self.kind == "images":
            return 16 + self.count * N_PIXELS
        return 8 + self.count

    def candidates(self, folder: Path) -> list[Path]:
        """Where this file may sit in ``folder``: gzipped or not, either naming style."""
        dotted = self.name.replace("-idx", ".idx")  # train-images.idx3-ubyte
        names = (self.gz_name, self.name, dotted + ".gz", dotted)
        return [folder / name for name in names]


RESOURCES = (
    Resource("train-images-idx3-ubyte",
             "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", "train", "images",
             60_000),
    Resource("train-labels-idx1-ubyte",
             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", "train", "labels",
             60_000),
    Resource("t10k-images-idx3-ubyte",
             "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", "test", "images",
             10_000),
    Resource("t10k-labels-idx1-ubyte",
             "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", "test", "labels",
             10_000),
)



def checksums(resources: tuple[Resource, ...] = RESOURCES) -> dict[str, str]:
    """File name -> SHA-256 of each MNIST payload, for checkpoint metadata."""
    return {r.name: r.sha256 for r in resources}


class DataError(Exception):
    """Base class for every data problem a user can fix; the message says how."""


class DatasetNotFound(DataError):
    pass


class CorruptFile(DataError):
    pass


class DownloadError(DataError):
    pass



def redo_hint(path: Path | str) -> str:
    """What to do about a damaged file: delete it and download again."""
    return f"delete {Path(str(path)).name} and run `mlp download`"

"""The datasets: their shape, their four files and checksums, class names, and their errors.

MNIST and Fashion-MNIST share one layout (28x28 grey images, 10 classes, 60,000 training
and 10,000 test samples in four IDX files of the same names); a ``Dataset`` holds what
differs. The one module every other imports for ``IMAGE_SIDE`` and friends; it does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    dataset: str = "MNIST"  # the title of the dataset it belongs to, for messages

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

# Fashion-MNIST's payloads (the IDX bytes inside the gzip files): Debian's package and the
# official downloads compress them differently, so only the payload is checked.
FASHION_RESOURCES = tuple(Resource(name, sha256, split, kind, count, "Fashion-MNIST") for
                          name, sha256, split, kind, count in (
    ("train-images-idx3-ubyte",
     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", "train", "images", 60_000),
    ("train-labels-idx1-ubyte",
     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", "train", "labels", 60_000),
    ("t10k-images-idx3-ubyte",
     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", "test", "images", 10_000),
    ("t10k-labels-idx1-ubyte",
     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", "test", "labels", 10_000),
))

Subject = Literal["digit", "garment"]


@dataclass(frozen=True)
class Dataset:
    """One dataset of MNIST's layout: where its files come from and what its classes are."""

    name: str                        # the --dataset value, recorded in checkpoints
    title: str                       # for messages
    resources: tuple[Resource, ...]  # its four files
    mirrors: tuple[str, ...]         # public mirrors, tried in turn
    class_names: tuple[str, ...]     # N_CLASSES names, by label
    subject: Subject                 # how users' photos are prepared: as a digit or a garment
    default_preset: str              # what `mlp train --dataset NAME` starts from
    folder: str = ""                 # its sub-folder of the data folder ("" for the folder)
    installed: tuple[Path, ...] = ()  # read-only copies a system package installs, used in place

    @property
    def mirrors_env(self) -> str:
        """The environment variable whose comma-separated URLs replace ``mirrors``."""
        return mirrors_env(self.title)


def mirrors_env(title: str) -> str:
    """``MLP_MNIST_MIRRORS``, ``MLP_FASHION_MNIST_MIRRORS``: a dataset's mirrors variable."""
    return f"MLP_{title.upper().replace('-', '_')}_MIRRORS"


MNIST = Dataset(
    "mnist", "MNIST", RESOURCES, DEFAULT_MIRRORS,
    tuple(str(d) for d in range(N_CLASSES)), "digit", "default")

FASHION_MNIST = Dataset(
    "fashion-mnist", "Fashion-MNIST", FASHION_RESOURCES,
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
     "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
     "Ankle boot"),
    "garment", "fashion-default", "fashion-mnist", (Path("/usr/share/datasets/fashion-mnist"),))

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST)}


def find_dataset(name: str) -> Dataset:
    """The dataset called ``name``.

    Raises:
        ValueError: no such dataset; the message lists them.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"no dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def payload_owner(sha256: str) -> str | None:
    """The title of the dataset one of whose files has this payload SHA-256, if any."""
    return next((d.title for d in DATASETS.values()
                 for r in d.resources if r.sha256 == sha256), None)


def dataset_of(meta: dict) -> Dataset:
    """The dataset a checkpoint's metadata names (MNIST when it names none).

    Raises:
        ValueError: a dataset this version does not know.
    """
    name = meta.get("dataset", MNIST.name)
    if not isinstance(name, str):
        raise ValueError(f"its dataset {str(name)[:40]!r} is not a name")
    return find_dataset(name)


def common_dataset(metas: Iterable[dict]) -> Dataset:
    """The dataset every one of ``metas`` (a committee's members) names.

    Raises:
        ValueError: a dataset this version does not know, or members of different ones.
    """
    datasets = {dataset_of(meta) for meta in metas}
    if len(datasets) > 1:
        raise ValueError(f"members trained on different datasets "
                         f"({', '.join(sorted(d.name for d in datasets))}) cannot vote together")
    return datasets.pop()


def checksums(resources: tuple[Resource, ...] = RESOURCES) -> dict[str, str]:
    """File name -> SHA-256 of each payload (MNIST's by default), for checkpoint metadata."""
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

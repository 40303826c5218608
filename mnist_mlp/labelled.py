"""Users' labelled images: a folder of class sub-folders, as torchvision's ImageFolder reads.

``DIR/<class>/*.png`` (any image suffix ``mlp predict`` reads), ``<class>`` a class index
(``0``-``9``) or, for Fashion-MNIST, a class name (``Sneaker``; ``T-shirt-top`` for
``T-shirt/top``, any case). Each image is prepared exactly as ``mlp predict`` prepares it for
the dataset. A file that cannot be used is skipped with a line that names it; the folder as
a whole is bounded in images and bytes, each image by the decoding bounds of ``imaging``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import read_bounded
from .imaging import IMAGE_SUFFIXES, PREPARATIONS, ImageError, describe
from .mnist import Dataset

MAX_IMAGES = 20_000          # images in one labelled folder
MAX_FILE_BYTES = 50 << 20    # one image file
MAX_FOLDER_BYTES = 1 << 30   # all of a folder's image files


class LabelledFolderError(Exception):
    """A folder that holds no usable labelled images, or too many; the message says why."""


class ReadStopped(Exception):
    """The read was stopped (its ``should_stop`` said so) before every image was read: no
    fault of the folder's."""


@dataclass(frozen=True)
class LabelledImages:
    """The usable images of a labelled folder, prepared, and what was skipped."""

    folder: Path
    pixels: np.ndarray            # uint8 (n, 28, 28): prepared as predict prepares them
    labels: np.ndarray            # int64 (n,)
    paths: tuple[str, ...]        # (n,) the files, in the order read
    skipped: tuple[str, ...]      # one line per file that could not be used
    sha256: str                   # of every class, file name and file content read

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of it: the folder (absolute, so that a run resumes from
        anywhere), the images used, their hash."""
        return {"folder": str(self.folder.absolute()), "count": len(self.labels),
                "sha256": self.sha256}


def is_image_file(path: Path) -> bool:
    """A file a class sub-folder's images are read from: an image suffix, not hidden."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def folder_name(class_name: str) -> str:
    """A class's sub-folder name: its name with "/" (not allowed in a name) made "-"."""
    return class_name.replace("/", "-")


def class_of(name: str, dataset: Dataset) -> int | None:
    """The label a sub-folder named ``name`` holds: a class index (ASCII digits), or a
    class's folder name (any case); None for neither."""
    if name.isascii() and name.isdigit() and int(name) < len(dataset.class_names):
        return int(name)
    names = [folder_name(c).lower() for c in dataset.class_names]
    return names.index(name.lower()) if name.lower() in names else None


def _image_files(folder: Path, dataset: Dataset, skipped: list[str], stray: list[str]
                 ) -> list[tuple[int, Path]]:
    """(label, file) of every image file under a class sub-folder, sorted by class then name;
    a class folder that cannot be listed is added to ``skipped``, and a visible sub-folder
    that names no class to ``stray``.

    Raises:
        LabelledFolderError: not a folder, no class sub-folders, or more than MAX_IMAGES.
    """
    examples = "0/, 1/, ... 9/" if dataset.subject == "digit" else "0/ or Sneaker/, ..."
    try:
        subs = sorted(sub for sub in folder.iterdir() if sub.is_dir())
    except OSError as exc:
        raise LabelledFolderError(f"{folder}: not a folder of labelled images "
                                  f"({exc.strerror or exc})") from None
    labelled = [(class_of(sub.name, dataset), sub) for sub in subs]
    classes = sorted((label, sub) for label, sub in labelled if label is not None)
    stray.extend(f"{sub}: names no class ({examples})" for label, sub in labelled
                 if label is None and not sub.name.startswith("."))
    if not classes:
        raise LabelledFolderError(f"{folder}: no class sub-folders ({examples}) holding "
                                  "images, as in DIR/3/my-three.png")
    files = []
    for label, sub in classes:
        try:
            names = sorted(sub.iterdir())
        except OSError as exc:
            skipped.append(f"{sub}: {exc.strerror or exc}")
            continue
        for path in names:
            if is_image_file(path):
                files.append((label, path))
                if len(files) > MAX_IMAGES:
                    raise LabelledFolderError(f"{folder}: more than {MAX_IMAGES:,} images; "
                                              "split it")
    if not files:
        raise LabelledFolderError(f"{folder}: its class sub-folders hold no image files "
                                  f"({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_labelled(folder: Path, dataset: Dataset,
                  should_stop: Callable[[], bool] = lambda: False) -> LabelledImages:
    """Every usable image of ``folder``, prepared for ``dataset``'s networks; ``should_stop``
    is asked before each file.

    Raises:
        LabelledFolderError: not a folder, no class sub-folders, too many images or bytes,
            or no image that could be used (the first reason given).
        ReadStopped: ``should_stop`` said so.
    """
    prepare = PREPARATIONS[dataset.subject]
    digest, total = hashlib.sha256(), 0
    pixels, labels, paths, skipped, stray = [], [], [], [], []
    files = _image_files(folder, dataset, skipped, stray)
    for done, (label, path) in enumerate(files):
        if should_stop():
            raise ReadStopped(f"{folder}: stopped while reading its images "
                              f"({done:,} of {len(files):,} read)")
        try:
            content = read_bounded(path, MAX_FILE_BYTES)
            total += len(content)
            if total > MAX_FOLDER_BYTES:
                raise LabelledFolderError(f"{folder}: more than {MAX_FOLDER_BYTES >> 20} MB "
                                          "of images; split it")
            prepared = prepare(content)                              # uint8 (28, 28)
        except ImageError as exc:                    # it names "the image": name the file
            skipped.append(f"{path}: {str(exc).removeprefix(describe(content) + ': ')}")
            continue
        except OSError as exc:
            skipped.append(f"{path}: {exc.strerror or exc}")
            continue
        digest.update(f"{label}/".encode() + os.fsencode(path.name) + b"\0"
                      + hashlib.sha256(content).digest())
        pixels.append(prepared)
        labels.append(label)
        paths.append(str(path))
    if not pixels:
        raise LabelledFolderError(f"{folder}: no usable image ({skipped[0]})")
    return LabelledImages(folder, np.stack(pixels), np.array(labels, dtype=np.int64),
                          tuple(paths), (*stray, *skipped), digest.hexdigest())

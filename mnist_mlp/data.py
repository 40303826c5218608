"""MNIST on disk: the resource table, verified downloads, IDX parsing, splits.

The four files are checked by the SHA-256 of their *decompressed* IDX payload,
so a mirror that recompresses the gzip container still verifies. Downloads are
streamed to a ``*.part`` file in the data folder and renamed into place only
after the checksum holds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from .atomic import atomic_writer, write_bytes_atomic

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DATA_DIR_ENV = "MLP_DATA_DIR"
MIRRORS_ENV = "MLP_MNIST_MIRRORS"
STAMP_NAME = ".mnist-verified.json"

IMAGES_MAGIC = 0x00000803  # uint8 data, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8 data, 1 dimension
PIXEL_SCALE = 255.0  # X = pixels / PIXEL_SCALE, so X lies in [0, 1]
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30


@dataclass(frozen=True)
class Resource:
    """One MNIST file: its canonical name and the SHA-256 of its IDX payload."""

    name: str  # e.g. "train-images-idx3-ubyte"
    sha256: str
    split: Literal["train", "test"]
    kind: Literal["images", "labels"]

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"

    def candidates(self, folder: Path) -> list[Path]:
        """Where this file may sit in ``folder``: gzipped or not, either naming style."""
        dotted = self.name.replace("-idx", ".idx")  # train-images.idx3-ubyte
        names = (self.gz_name, self.name, dotted + ".gz", dotted)
        return [folder / name for name in names]


RESOURCES = (
    Resource("train-images-idx3-ubyte",
             "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", "train", "images"),
    Resource("train-labels-idx1-ubyte",
             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", "train", "labels"),
    Resource("t10k-images-idx3-ubyte",
             "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", "test", "images"),
    Resource("t10k-labels-idx1-ubyte",
             "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", "test", "labels"),
)


class DataError(Exception):
    """Base class for every data problem a user can fix; the message says how."""


class DatasetNotFound(DataError):
    pass


class CorruptFile(DataError):
    pass


class DownloadError(DataError):
    pass


def default_data_dir() -> Path:
    """``$MLP_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def default_mirrors() -> tuple[str, ...]:
    """``$MLP_MNIST_MIRRORS`` (comma-separated) if set, else the public mirrors."""
    env = os.environ.get(MIRRORS_ENV, "")
    mirrors = tuple(m.strip() for m in env.split(",") if m.strip())
    return mirrors or DEFAULT_MIRRORS


# ---------------------------------------------------------------- reading files

def read_payload(path: Path) -> bytes:
    """The IDX bytes of ``path``, decompressed when it is gzip.

    Raises:
        CorruptFile: the gzip stream is truncated or damaged.
    """
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFile(f"{path}: damaged gzip data ({exc}); {_redo_hint(path)}") from None


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
                          f"0x{expected_magic:08x}; {_redo_hint(source)}")
    if len(payload) < header_len:
        raise CorruptFile(f"{source}: too short for an IDX header ({len(payload)} bytes); "
                          f"{_redo_hint(source)}")
    shape = struct.unpack(f">{ndim}I", payload[4:header_len])
    expected_len = header_len + int(np.prod(shape, dtype=np.int64))
    if len(payload) != expected_len:
        raise CorruptFile(f"{source}: {len(payload)} bytes but the header {shape} calls for "
                          f"{expected_len}; {_redo_hint(source)}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header_len).reshape(shape)


def _redo_hint(path: Path | str) -> str:
    return f"delete {Path(path).name} and run `mlp download`"


# ---------------------------------------------------------------- verification

def _stamp_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _read_stamps(folder: Path) -> dict[str, dict[str, str]]:
    try:
        stamps = json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _write_stamp(path: Path, sha256: str) -> None:
    """Record that ``path`` verified; best effort (a read-only folder just rehashes)."""
    folder = path.parent
    stamps = _read_stamps(folder)
    stamps[path.name] = {"key": _stamp_key(path), "sha256": sha256}
    try:
        write_bytes_atomic(folder / STAMP_NAME, json.dumps(stamps, indent=1).encode())
    except OSError:
        pass


def _is_stamped(path: Path, resource: Resource) -> bool:
    entry = _read_stamps(path.parent).get(path.name)
    return (isinstance(entry, dict) and entry.get("sha256") == resource.sha256
            and entry.get("key") == _stamp_key(path))


def verify_file(path: Path, resource: Resource) -> bytes:
    """Check ``path`` against ``resource``'s SHA-256 and return its IDX payload.

    Raises:
        CorruptFile: damaged gzip, or a checksum that does not match.
    """
    payload = read_payload(path)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != resource.sha256:
        raise CorruptFile(f"{path}: SHA-256 {digest[:12]}... does not match MNIST's "
                          f"{resource.sha256[:12]}...; {_redo_hint(path)}")
    _write_stamp(path, digest)
    return payload


def find_file(folder: Path, resource: Resource) -> Path | None:
    """The first existing candidate file for ``resource`` in ``folder``."""
    return next((p for p in resource.candidates(folder) if p.is_file()), None)


def _load_payload(folder: Path, resource: Resource) -> tuple[bytes, Path]:
    path = find_file(folder, resource)
    if path is None:
        raise DatasetNotFound(
            f"MNIST file {resource.gz_name} not found in {folder}. Run `mlp download "
            f"--data-dir {folder}`, or copy the MNIST files there.")
    if _is_stamped(path, resource):
        return read_payload(path), path
    return verify_file(path, resource), path


# ---------------------------------------------------------------- download

def _session(retries: int):
    """A requests session that retries transient failures with exponential backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, connect=retries, read=retries, backoff_factor=0.5,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",),
                  raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _fetch(session, url: str, out: BinaryIO, progress: bool) -> str:
    """Stream ``url`` into ``out`` with a byte progress bar on stderr.

    Returns:
        the SHA-256 of the gzip payload, decompressed on the fly.

    Raises:
        CorruptFile: the body is not a complete gzip stream.
    """
    from tqdm import tqdm

    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip container
    digest = hashlib.sha256()
    with session.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp:
        resp.raise_for_status()
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=url.rsplit("/", 1)[-1], leave=False,
                  disable=not progress or None) as bar:  # None: off when stderr is no terminal
            try:
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    digest.update(inflate.decompress(chunk))
                    bar.update(len(chunk))
            except zlib.error as exc:
                raise CorruptFile(f"{url}: not gzip data ({exc})") from None
    if not inflate.eof:
        raise CorruptFile(f"{url}: the gzip stream ends early")
    return digest.hexdigest()


def _describe(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def download_resource(resource: Resource, folder: Path, mirrors: tuple[str, ...],
                      progress: bool = True, retries: int = 3) -> Path:
    """Download one file, trying ``mirrors`` in order, and return its verified path.

    The bytes go to ``<name>.gz.<random>.part`` in ``folder`` and are renamed to
    ``<name>.gz`` only after the decompressed payload's SHA-256 holds; a file
    that fails is deleted and the next mirror tried.

    Raises:
        DownloadError: no mirror gave a file that verifies; the message names each.
    """
    import requests

    final = folder / resource.gz_name
    failures = []
    with _session(retries) as session:
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + resource.gz_name
            try:
                with atomic_writer(final) as out:
                    digest = _fetch(session, url, out, progress)
                    if digest != resource.sha256:
                        raise CorruptFile(f"{url}: payload SHA-256 {digest[:12]}... is not MNIST's")
                _write_stamp(final, digest)
                return final
            except requests.RequestException as exc:
                failures.append(f"{url}: {_describe(exc)}")
            except CorruptFile as exc:
                failures.append(str(exc))
            except OSError as exc:  # the folder, not the mirror: no point trying others
                raise DownloadError(f"cannot write {final}: {exc.strerror or exc}") from None
    raise DownloadError(
        f"could not download {resource.gz_name} ({'; '.join(failures)}). Copy the MNIST files "
        f"into {folder}, or give a working mirror with --mirror URL or {MIRRORS_ENV}.")


def ensure_mnist(folder: Path, mirrors: tuple[str, ...] | None = None, progress: bool = True,
                 ) -> list[tuple[Resource, str]]:
    """Make all four files present and verified in ``folder``, downloading what is missing.

    Returns:
        (resource, status) pairs, status one of "present" or "downloaded".

    Raises:
        DownloadError: a missing file could not be downloaded.
        CorruptFile: a file already there is damaged (it is left for the user to delete).
    """
    mirrors = mirrors or default_mirrors()
    report = []
    for resource in RESOURCES:
        path = find_file(folder, resource)
        if path is not None:
            if not _is_stamped(path, resource):
                verify_file(path, resource)
            report.append((resource, "present"))
        else:
            download_resource(resource, folder, mirrors, progress)
            report.append((resource, "downloaded"))
    return report


def checksums() -> dict[str, str]:
    """File name -> SHA-256 of each MNIST payload, for checkpoint metadata."""
    return {r.name: r.sha256 for r in RESOURCES}


# ---------------------------------------------------------------- loading

Split = Literal["train", "val", "test"]


def load_mnist(split: Split = "train", data_dir: Path | None = None, *, flat: bool = True,
               val_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST from ``data_dir`` (no download; see ``ensure_mnist``).

    The validation split is the *last* ``val_size`` samples of the official
    training set (indices 60000 - val_size .. 59999); with ``val_size`` > 0 the
    "train" split is the samples before them. The test split is the official
    10,000 test images.

    Args:
        split: "train", "val" or "test".
        data_dir: folder holding the files; default ``default_data_dir()``.
        flat: True for X float32 (n, 784) in [0, 1]; False for uint8 (n, 28, 28).
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
        raise ValueError("the 'val' split needs val_size > 0")
    if split == "test":
        return _to_arrays(*_read_split(data_dir, "test"), flat)
    X, y, X_val, y_val = load_train_val(data_dir, val_size, flat=flat)
    return (X_val, y_val) if split == "val" else (X, y)


def load_train_val(data_dir: Path | None = None, val_size: int = 5000, *, flat: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training files, read once, as the "train" and "val" splits of ``load_mnist``.

    Returns:
        X, y, X_val, y_val; X_val and y_val are empty when val_size is 0.
    """
    images, labels = _read_split(data_dir, "train")
    if not 0 <= val_size < len(images):
        raise ValueError(f"val_size {val_size} leaves no training samples of {len(images)}")
    cut = len(images) - val_size
    return (*_to_arrays(images[:cut], labels[:cut], flat),
            *_to_arrays(images[cut:], labels[cut:], flat))


def _read_split(data_dir: Path | None, split: Literal["train", "test"]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Verified, parsed and cross-checked images uint8 (n, 28, 28) and labels uint8 (n,)."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    images_res, labels_res = (r for r in RESOURCES if r.split == split)
    images_payload, images_path = _load_payload(folder, images_res)
    labels_payload, labels_path = _load_payload(folder, labels_res)
    images = parse_idx(images_payload, IMAGES_MAGIC, images_path)  # (n, 28, 28) uint8
    labels = parse_idx(labels_payload, LABELS_MAGIC, labels_path)  # (n,) uint8
    if images.shape[0] != labels.shape[0]:
        raise CorruptFile(f"{images_path} has {images.shape[0]} images but {labels_path} has "
                          f"{labels.shape[0]} labels; {_redo_hint(labels_path)}")
    if labels.size and labels.max() > 9:
        raise CorruptFile(f"{labels_path}: label {labels.max()} outside 0-9; "
                          f"{_redo_hint(labels_path)}")
    return images, labels


def _to_arrays(images: np.ndarray, labels: np.ndarray, flat: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    y = labels.astype(np.int64)  # (n,)
    if not flat:
        return images.copy(), y  # (n, 28, 28) uint8, writable
    n, rows, cols = images.shape
    X = images.reshape(n, rows * cols).astype(np.float32)  # (n, 784)
    X /= np.float32(PIXEL_SCALE)
    return X, y



"""MNIST as arrays: IDX parsing, the splits, pixels to inputs, and the DataSource value."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_mlp.dataset import DATA_DIR_ENV, DataSource, mix_in, parse_idx, to_input
from mnist_mlp.download import DOWNLOAD_DEADLINE_S, MIRRORS_ENV
from mnist_mlp.mnist import (
    DEFAULT_MIRRORS,
    FASHION_MNIST,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MNIST,
    RESOURCES,
    CorruptFile,
    Dataset,
    DatasetNotFound,
)

from .mirrors import Mirror
from .tiny_data import idx_bytes, synthetic_digits, trusting

# ---------------------------------------------------------------- parsing


def test_parse_idx_reads_header_and_data():
    images, labels = synthetic_digits(5, seed=0)
    parsed = parse_idx(idx_bytes(images), IMAGES_MAGIC)
    assert parsed.shape == (5, 28, 28) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, images)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), LABELS_MAGIC), labels)


@pytest.mark.parametrize("payload, message", [
    (idx_bytes(np.zeros((3, 28, 28)))[:-1], r"header \(3, 28, 28\) calls for"),
    (idx_bytes(np.zeros((3, 28, 28))) + b"\0", r"header \(3, 28, 28\) calls for"),
    (idx_bytes(np.zeros(3)), "wrong magic number 0x00000801, expected 0x00000803"),
    (b"\0\0\x08", "too short for an IDX header"),
])
def test_parse_idx_rejects_malformed(payload, message):
    with pytest.raises(CorruptFile, match=message):
        parse_idx(payload, IMAGES_MAGIC, "x-images")


def _with_magic(payload: bytes, magic: int) -> bytes:
    return struct.pack(">I", magic) + payload[4:]


@pytest.mark.parametrize("expected, magic", [
    (IMAGES_MAGIC, 0x00000D03),           # float32 data, 3 dimensions: the low byte agrees
    (IMAGES_MAGIC, 0x00000903),           # int8
    (IMAGES_MAGIC, 0x01000803),           # the leading two bytes must be zero
    (IMAGES_MAGIC, 0x00010803),
    (LABELS_MAGIC, 0x00000C01),           # int32 labels
    (LABELS_MAGIC, 0xFF000801),
])
def test_every_byte_of_the_magic_is_checked(expected, magic):
    data = np.zeros((3, 28, 28)) if expected == IMAGES_MAGIC else np.zeros(3)
    payload = _with_magic(idx_bytes(data), magic)
    assert len(payload) == len(idx_bytes(data))       # only the magic differs
    with pytest.raises(CorruptFile, match=f"wrong magic number 0x{magic:08x}, expected "
                                          f"0x{expected:08x}"):
        parse_idx(payload, expected, "x")


@pytest.mark.parametrize("shape", [(2**31, 2**31, 4), (2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_overflowing_idx_headers_are_corrupt_files(shape):
    header = struct.pack(">I", IMAGES_MAGIC) + struct.pack(">3I", *shape)
    with pytest.raises(CorruptFile, match="calls for"):
        parse_idx(header + b"\0" * 64, IMAGES_MAGIC, "x")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(payload=st.binary(max_size=200), magic=st.sampled_from([IMAGES_MAGIC, LABELS_MAGIC]))
def test_fuzzed_idx_raises_only_corrupt_file(payload, magic):
    try:
        parsed = parse_idx(payload, magic, "fuzz")
    except CorruptFile:
        return
    assert parsed.dtype == np.uint8 and parsed.ndim == (magic & 0xFF)


def test_to_input_divides_by_the_scale():
    pixels = np.zeros((2, 28, 28), np.uint8)
    pixels[:, 0, :3] = [0, 51, 255]
    X = to_input(pixels)
    assert X.dtype == np.float32 and X.shape == (2, 784)
    np.testing.assert_array_equal(X[:, :3], np.float32([[0, 0.2, 1]] * 2))
    assert not X[:, 3:].any()
    np.testing.assert_array_equal(to_input(pixels.reshape(2, 784), 1.0)[1, :3], [0, 51, 255])
    assert pixels.dtype == np.uint8 and pixels.max() == 255         # the input is not changed


# ---------------------------------------------------------------- loading

def _restyle(folder: Path, style: str) -> None:
    """Rewrite the .gz files in ``folder`` as raw ('raw'), or in the dotted naming style."""
    for gz in list(folder.glob("*.gz")):
        base = gz.name.removesuffix(".gz")
        if style == "raw":
            (folder / base).write_bytes(gzip.decompress(gz.read_bytes()))
            gz.unlink()
        elif style == "dotted":
            gz.rename(folder / (base.replace("-idx", ".idx") + ".gz"))


@pytest.mark.parametrize("style", ["gz", "raw", "dotted"])
def test_load_any_storage_style(tiny_mnist, style):
    expected_images, expected_labels = synthetic_digits(600, seed=1)
    _restyle(tiny_mnist.folder, style)
    X, y = tiny_mnist.load("train")
    assert X.shape == (600, 784) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() == 1.0
    np.testing.assert_array_equal(np.rint(X * 255).astype(np.uint8).reshape(-1, 28, 28),
                                  expected_images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, expected_labels)
    images, _ = tiny_mnist.load("test", flat=False)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    images[0, 0, 0] = 1                                    # writable: a copy


def test_validation_split_is_the_last_samples(tiny_mnist):
    X_all, y_all = tiny_mnist.load("train")
    X_tr, y_tr = tiny_mnist.load("train", val_size=100)
    X_val, y_val = tiny_mnist.load("val", val_size=100)
    np.testing.assert_array_equal(X_tr, X_all[:500])
    np.testing.assert_array_equal(X_val, X_all[500:])
    np.testing.assert_array_equal(np.concatenate([y_tr, y_val]), y_all)
    both = tiny_mnist.load_train_val(100)
    for a, b in zip(both, (X_tr, y_tr, X_val, y_val)):
        np.testing.assert_array_equal(a, b)
    X, _, X_none, y_none = tiny_mnist.load_train_val(0)
    assert len(X) == 600 and X_none.shape == (0, 784) and y_none.shape == (0,)
    with pytest.raises(ValueError, match="leaves no training samples"):
        tiny_mnist.load("train", val_size=600)
    with pytest.raises(ValueError, match="there is no validation split"):
        tiny_mnist.load("val", val_size=0)
    with pytest.raises(ValueError, match="split must be"):
        tiny_mnist.load("dev")


def _damage(folder: Path, name: str, how: str) -> None:
    path = folder / f"{name}.gz"
    payload = gzip.decompress(path.read_bytes())
    if how == "truncated-gzip":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "truncated-payload":
        path.write_bytes(gzip.compress(payload[:-10]))
    elif how == "flipped-byte":
        damaged = bytearray(payload)
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(gzip.compress(bytes(damaged)))
    elif how == "wrong-magic":
        path.write_bytes(gzip.compress(b"\0\0\x08\x01" + payload[4:]))


@pytest.mark.parametrize("how, message", [
    ("truncated-gzip", "the gzip stream ends early"),
    ("truncated-payload", "bytes, MNIST's train-images-idx3-ubyte has"),
    ("flipped-byte", "does not match MNIST"),
    ("wrong-magic", "does not match MNIST"),
])
def test_damaged_file_is_named_with_the_fix(tiny_mnist, how, message):
    _damage(tiny_mnist.folder, "train-images-idx3-ubyte", how)
    with pytest.raises(CorruptFile, match=message) as info:
        tiny_mnist.load("train")
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "mlp download" in str(info.value)


def _trust(source: DataSource, name: str, payload: bytes) -> DataSource:
    """``source`` with ``payload`` written as its file ``name`` and trusted as MNIST's."""
    (source.folder / f"{name}.gz").write_bytes(gzip.compress(payload))
    return dataclasses.replace(source, resources=trusting({name: payload}, source.resources))


def test_structural_checks_behind_the_checksum(tiny_mnist):
    """Counts, image size and label range are checked even for files whose checksum holds."""
    _, labels = synthetic_digits(600, seed=1)
    source = _trust(tiny_mnist, "train-labels-idx1-ubyte", idx_bytes(labels[:599]))
    with pytest.raises(CorruptFile, match="has 600 images but .* has 599 labels"):
        source.load("train")
    labels[7] = 12
    source = _trust(tiny_mnist, "train-labels-idx1-ubyte", idx_bytes(labels))
    with pytest.raises(CorruptFile, match="label 12 outside 0-9"):
        source.load("train")
    source = _trust(source, "train-images-idx3-ubyte", idx_bytes(np.zeros((600, 14, 56))))
    with pytest.raises(CorruptFile, match=r"images of \(14, 56\) pixels, not 28x28"):
        source.load("train")


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFound, match="mlp download"):
        DataSource(tmp_path, mirrors=()).load("test")


def test_every_load_checks_the_content(tiny_mnist):
    """A file changed in place, its size and modification time restored, is still caught."""
    tiny_mnist.load("test")
    path = tiny_mnist.folder / "t10k-labels-idx1-ubyte.gz"
    before = path.stat()
    payload = bytearray(gzip.decompress(path.read_bytes()))
    payload[20] = (payload[20] + 1) % 10
    damaged = gzip.compress(bytes(payload), mtime=0)
    damaged = damaged[:before.st_size].ljust(before.st_size, b"\0")
    path.write_bytes(damaged)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with pytest.raises(CorruptFile, match="t10k-labels-idx1-ubyte.gz"):
        tiny_mnist.load("test")


def test_special_files_in_the_data_folder_are_refused(tiny_mnist):
    path = tiny_mnist.folder / "t10k-images-idx3-ubyte.gz"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(CorruptFile, match="is a FIFO, not a regular file"):
        tiny_mnist.load("test")


# ---------------------------------------------------------------- the DataSource value

def test_a_source_comes_from_options_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(MIRRORS_ENV, raising=False)
    default = DataSource.from_env()
    assert (default.folder, default.mirrors, default.deadline_s) == (
        Path("data"), DEFAULT_MIRRORS, DOWNLOAD_DEADLINE_S)
    assert default.resources == RESOURCES and default == DataSource()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(MIRRORS_ENV, " http://a/ ,, http://b/")
    env = DataSource.from_env()
    assert env.folder == tmp_path and env.mirrors == ("http://a/", "http://b/")
    given = DataSource.from_env(tmp_path / "x", ("http://c/",), 5)
    assert (given.folder, given.mirrors, given.deadline_s) == (tmp_path / "x", ("http://c/",),
                                                               5)


def test_a_source_describes_its_files(tiny_mnist):
    assert tiny_mnist.n_train == 600
    assert DataSource().n_train == 60_000
    assert tiny_mnist.checksums() == {r.name: r.sha256 for r in tiny_mnist.resources}
    assert tiny_mnist.checksums() != DataSource().checksums()
    resource = tiny_mnist.resources[1]
    assert tiny_mnist.path(resource) == tiny_mnist.folder / resource.gz_name
    assert DataSource(tiny_mnist.folder / "none").path(resource) is None


def test_ensure_downloads_what_is_missing_and_says_so(tiny_mnist, tmp_path):
    files = {f"/mnist/{p.name}": p.read_bytes() for p in tiny_mnist.folder.glob("*.gz")}
    mirror = Mirror(files)
    try:
        source = dataclasses.replace(tiny_mnist, folder=tmp_path / "new", mirrors=(mirror.url,))
        report = source.ensure(progress=False)
    finally:
        mirror.close()
    assert [status for _, status in report] == ["downloaded"] * 4
    assert source.summary(report) == (
        f"downloaded and verified {', '.join(r.gz_name for r in source.resources)} into "
        f"{source.folder}")
    again = source.ensure(progress=False)
    assert [status for _, status in again] == ["present"] * 4
    assert source.summary(again) is None
    X, y = source.load("test")
    assert X.shape == (200, 784) and len(y) == 200


# ---------------------------------------------------------------- real MNIST

def test_real_mnist(real_mnist):
    source = DataSource(real_mnist, mirrors=("http://127.0.0.1:9/",))
    assert [s for _, s in source.ensure(progress=False)] == ["present"] * 4
    X, y = source.load("train")
    assert X.shape == (60_000, 784) and X.dtype == np.float32
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 60_000
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    images, y_test = source.load("test", flat=False)
    assert images.shape == (10_000, 28, 28)
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]


# ---------------------------------------------------------------- Fashion-MNIST

def test_each_dataset_has_its_own_default_folder_and_mirrors(monkeypatch, tmp_path):
    for name in (DATA_DIR_ENV, FASHION_MNIST.mirrors_env, MIRRORS_ENV):
        monkeypatch.delenv(name, raising=False)
    fashion = DataSource.from_env(dataset=FASHION_MNIST)
    assert (fashion.folder, fashion.mirrors) == (Path("data/fashion-mnist"),
                                                 FASHION_MNIST.mirrors)
    assert fashion.resources == FASHION_MNIST.resources
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(FASHION_MNIST.mirrors_env, "http://f/")
    monkeypatch.setenv(MIRRORS_ENV, "http://m/")
    assert DataSource.from_env(dataset=FASHION_MNIST) == DataSource(
        tmp_path / "fashion-mnist", ("http://f/",), DOWNLOAD_DEADLINE_S, (), FASHION_MNIST)
    assert DataSource.from_env().folder == tmp_path


def test_a_source_moves_to_another_dataset_keeping_what_was_given(monkeypatch, tmp_path):
    for name in (DATA_DIR_ENV, FASHION_MNIST.mirrors_env, MIRRORS_ENV):
        monkeypatch.delenv(name, raising=False)
    moved = DataSource.from_env().with_dataset(FASHION_MNIST)
    assert moved == DataSource.from_env(dataset=FASHION_MNIST)
    given = DataSource.from_env(tmp_path, ("http://mine/",)).with_dataset(FASHION_MNIST)
    assert (given.folder, given.mirrors, given.dataset) == (tmp_path, ("http://mine/",),
                                                            FASHION_MNIST)
    same = DataSource(tmp_path, resources=RESOURCES[:2])
    assert same.with_dataset(MNIST) is same


def _tiny_fashion(installed: Path) -> Dataset:
    """Fashion-MNIST whose expected files are tiny ones, installed in ``installed``."""
    images, labels = synthetic_digits(60, 7)
    payloads = {"train-images-idx3-ubyte": idx_bytes(images),
                "train-labels-idx1-ubyte": idx_bytes(labels),
                "t10k-images-idx3-ubyte": idx_bytes(images[:20]),
                "t10k-labels-idx1-ubyte": idx_bytes(labels[:20])}
    installed.mkdir()
    for name, payload in payloads.items():
        (installed / f"{name}.gz").write_bytes(gzip.compress(payload))
    return dataclasses.replace(FASHION_MNIST, installed=(installed,),
                               resources=trusting(payloads, FASHION_MNIST.resources))


def test_a_system_packages_copy_is_used_in_place_without_downloading(tmp_path):
    dataset = _tiny_fashion(tmp_path / "installed")
    source = DataSource(tmp_path / "data", (), dataset=dataset)
    report = source.ensure(progress=False)
    assert [status for _, status in report] == ["present"] * 4
    assert all(source.path(r).parent == tmp_path / "installed" for r in dataset.resources)
    assert not (tmp_path / "data").exists()                         # nothing copied
    X, y = source.load("test")
    assert X.shape == (20, 784) and y.shape == (20,)
    (tmp_path / "data").mkdir()                                     # the folder's own first
    (tmp_path / "data" / "t10k-labels-idx1-ubyte").write_bytes(b"broken")
    with pytest.raises(CorruptFile, match=str(tmp_path / "data")):
        source.load("test")


def test_another_datasets_files_are_named_as_such(real_mnist):
    source = DataSource(real_mnist, (), dataset=FASHION_MNIST)
    with pytest.raises(CorruptFile, match="MNIST's file, not Fashion-MNIST's; give the folder "
                                          "of the Fashion-MNIST files"):
        source.load("test")


def test_a_missing_fashion_file_says_how_to_get_it(tmp_path):
    source = DataSource(tmp_path, (), dataset=dataclasses.replace(FASHION_MNIST, installed=()))
    with pytest.raises(DatasetNotFound, match=f"Fashion-MNIST file train-images-idx3-ubyte.gz "
                                              f"not found in {tmp_path}. Run `mlp download "
                                              f"--dataset fashion-mnist --data-dir {tmp_path}`"):
        source.load("train")


def test_real_fashion_mnist(real_fashion):
    source = DataSource(real_fashion, (), dataset=FASHION_MNIST)
    X, y = source.load("test")
    assert X.shape == (10_000, 784) and X.dtype == np.float32
    assert np.bincount(y).tolist() == [1000] * 10
    X, y, X_val, y_val = source.load_train_val(10_000)
    assert (len(X), len(X_val)) == (50_000, 10_000)


def test_users_images_are_repeated_after_the_split():
    X, y = np.arange(12, dtype=np.float32).reshape(4, 3), np.arange(4)
    extra, extra_y = -np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, 8])
    X_all, y_all = mix_in(X, y, extra, extra_y, share=0.5)       # r = ceil(4 / 2) = 2
    assert np.array_equal(X_all, np.concatenate([X, extra, extra]))
    assert np.array_equal(y_all, [0, 1, 2, 3, 7, 8, 7, 8]) and y_all.dtype == y.dtype
    assert mix_in(X, y, extra, extra_y, share=0.0)[0] is X

"""`mlp download`: each file downloaded or found present, verified; failures one line."""

from __future__ import annotations

import dataclasses
import gzip

from mnist_mlp.mnist import RESOURCES

from ..mirrors import Mirror
from .runner import mlp, one_line


def test_download_then_verify_what_is_there(real_mnist, tmp_path, monkeypatch):
    mirror = Mirror({f"/mnist/{r.gz_name}": (real_mnist / r.gz_name).read_bytes()
                     for r in RESOURCES})
    target = tmp_path / "data"
    try:
        result = mlp("download", "--data-dir", target, "--mirror", mirror.url, "--quiet")
    finally:
        mirror.close()
    assert result.stdout.splitlines() == [f"downloaded {target / r.gz_name}" for r in RESOURCES]
    monkeypatch.setenv("MLP_MNIST_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setenv("MLP_DATA_DIR", str(target))
    result = mlp("download")
    assert result.stdout.splitlines() == [f"present    {target / r.gz_name}" for r in RESOURCES]


def test_a_damaged_file_is_one_line(tmp_path):
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" * 9))
    one_line(mlp("download", "--data-dir", tmp_path, expect=1),
             f"{tmp_path / 't10k-labels-idx1-ubyte.gz'}: ", "mlp download")


def test_an_unwritable_data_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("a file where the folder should be")
    one_line(mlp("download", "--data-dir", tmp_path / "file" / "sub", "--mirror",
                 "http://127.0.0.1:9/", expect=1), "cannot write")


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    mirror = Mirror({})                                   # 404 for everything
    monkeypatch.setenv("MLP_MNIST_MIRRORS", mirror.url)
    try:
        line = one_line(mlp("download", "--data-dir", tmp_path / "d", expect=1),
                        f"{mirror.url}train-images-idx3-ubyte.gz: HTTP 404", "MLP_MNIST_MIRRORS")
    finally:
        mirror.close()
    assert "--mirror" in line
    assert not list((tmp_path / "d").glob("*.gz"))


def test_fashion_mnist_from_a_mirror_and_from_debians_copy(real_fashion, tmp_path,
                                                           monkeypatch):
    from mnist_mlp.dataset import DataSource
    from mnist_mlp.mnist import FASHION_MNIST

    mirror = Mirror({f"/mnist/{r.gz_name}": (real_fashion / r.gz_name).read_bytes()
                     for r in FASHION_MNIST.resources})
    target = tmp_path / "fashion"
    uninstalled = dataclasses.replace(FASHION_MNIST, installed=())  # as on a machine without
    try:
        report = DataSource(target, (mirror.url,), dataset=uninstalled).ensure(progress=False)
    finally:
        mirror.close()
    assert [status for _, status in report] == ["downloaded"] * 4
    one_line(mlp("download", "--data-dir", target, expect=1),       # MNIST's files expected
             "Fashion-MNIST's file, not MNIST's")
    result = mlp("download", "--dataset", "fashion-mnist", "--data-dir", target)
    assert result.stdout.splitlines() == [f"present    {target / r.gz_name}"
                                          for r in FASHION_MNIST.resources]
    if FASHION_MNIST.installed[0] == real_fashion:                  # Debian's package
        monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path / "empty"))
        monkeypatch.setenv("MLP_FASHION_MNIST_MIRRORS", "http://127.0.0.1:9/")
        result = mlp("download", "--dataset", "fashion-mnist")
        assert result.stdout.splitlines() == [f"present    {real_fashion / r.gz_name}"
                                              for r in FASHION_MNIST.resources]
        assert not (tmp_path / "empty").exists()

"""MNIST's constants, its resource table, checksums and error types."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlp import mnist


def test_the_constants_describe_28x28_digits_of_ten_classes():
    assert (mnist.IMAGE_SIDE, mnist.N_PIXELS, mnist.N_CLASSES) == (28, 784, 10)
    assert mnist.PIXEL_SCALE == 255.0


def test_the_table_holds_mnists_four_files():
    table = {(r.split, r.kind): r for r in mnist.RESOURCES}
    assert sorted(table) == [("test", "images"), ("test", "labels"), ("train", "images"),
                             ("train", "labels")]
    assert table["train", "images"].name == "train-images-idx3-ubyte"
    assert table["test", "labels"].gz_name == "t10k-labels-idx1-ubyte.gz"
    assert [table["train", k].count for k in ("images", "labels")] == [60_000, 60_000]
    assert [table["test", k].count for k in ("images", "labels")] == [10_000, 10_000]
    assert all(len(r.sha256) == 64 and int(r.sha256, 16) >= 0 for r in mnist.RESOURCES)


def test_payload_sizes_and_magics_follow_the_idx_format():
    images = mnist.Resource("x-images", "0" * 64, "test", "images", 3)
    labels = mnist.Resource("x-labels", "0" * 64, "test", "labels", 3)
    assert images.size == 16 + 3 * 784 and labels.size == 8 + 3
    assert (images.magic, labels.magic) == (0x803, 0x801)
    assert mnist.RESOURCES[0].size == 47_040_016       # the real train-images-idx3-ubyte


def test_a_file_may_sit_in_either_naming_style_gzipped_or_not(tmp_path):
    resource = mnist.RESOURCES[2]
    assert [p.name for p in resource.candidates(tmp_path)] == [
        "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte.gz",
        "t10k-images.idx3-ubyte"]
    assert all(p.parent == tmp_path for p in resource.candidates(tmp_path))


def test_checksums_name_each_file():
    sums = mnist.checksums()
    assert sums == {r.name: r.sha256 for r in mnist.RESOURCES} and len(sums) == 4
    assert mnist.checksums(mnist.RESOURCES[:1]) == {"train-images-idx3-ubyte":
                                                    mnist.RESOURCES[0].sha256}


@pytest.mark.parametrize("error", [mnist.DatasetNotFound, mnist.CorruptFile,
                                   mnist.DownloadError])
def test_every_data_problem_is_a_data_error(error):
    assert issubclass(error, mnist.DataError) and issubclass(mnist.DataError, Exception)


def test_the_redo_hint_names_the_file_and_the_fix():
    assert mnist.redo_hint(Path("/d/t10k-labels-idx1-ubyte.gz")) == (
        "delete t10k-labels-idx1-ubyte.gz and run `mlp download`")
    assert mnist.redo_hint("x-images") == "delete x-images and run `mlp download`"


def test_fashion_mnist_has_mnists_layout_and_its_own_payloads():
    fashion = mnist.FASHION_MNIST
    assert [(r.name, r.split, r.kind, r.count, r.size) for r in fashion.resources] == [
        (r.name, r.split, r.kind, r.count, r.size) for r in mnist.RESOURCES]
    assert {r.sha256 for r in fashion.resources}.isdisjoint(r.sha256 for r in mnist.RESOURCES)
    assert all(r.dataset == "Fashion-MNIST" for r in fashion.resources)
    assert len(set(fashion.class_names)) == mnist.N_CLASSES
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert mnist.MNIST.class_names == tuple("0123456789")
    assert (fashion.mirrors_env, mnist.MNIST.mirrors_env) == (
        "MLP_FASHION_MNIST_MIRRORS", "MLP_MNIST_MIRRORS")


def test_datasets_are_found_by_name_and_from_checkpoint_metadata():
    assert mnist.find_dataset("fashion-mnist") is mnist.FASHION_MNIST
    with pytest.raises(ValueError, match="no dataset 'kmnist'; choose one of mnist, "
                                         "fashion-mnist"):
        mnist.find_dataset("kmnist")
    assert mnist.dataset_of({}) is mnist.MNIST                      # saved before datasets
    assert mnist.dataset_of({"dataset": "fashion-mnist"}) is mnist.FASHION_MNIST
    with pytest.raises(ValueError, match="not a name"):
        mnist.dataset_of({"dataset": ["mnist"]})


def test_a_payload_is_traced_to_its_dataset():
    assert mnist.payload_owner(mnist.FASHION_RESOURCES[2].sha256) == "Fashion-MNIST"
    assert mnist.payload_owner(mnist.RESOURCES[2].sha256) == "MNIST"
    assert mnist.payload_owner("0" * 64) is None

"""labelled.py: users' labelled image folders read as torchvision's ImageFolder lays them out."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_mlp import checkpoint
from mnist_mlp.classify import classify
from mnist_mlp.labelled import MAX_IMAGES, LabelledFolderError, class_of, read_labelled
from mnist_mlp.mnist import FASHION_MNIST, MNIST
from mnist_mlp.network import MLP

STROKES = {1: [(50, 10), (50, 90)], 7: [(20, 15), (80, 15), (40, 90)],
           4: [(70, 90), (70, 10), (20, 60), (85, 60)]}


def _draw(path, label: int, shift: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).line([(x + shift, y) for x, y in STROKES[label]], fill=0, width=9)
    image.save(path)


def test_class_folders_by_index_or_name():
    assert [class_of(n, MNIST) for n in ("0", "9", "10", "seven", "07")] == [0, 9, None, None, 7]
    assert class_of("sneaker", FASHION_MNIST) == 7 and class_of("T-shirt-top", FASHION_MNIST) == 0
    assert class_of("T-shirt", FASHION_MNIST) is None


def test_images_are_read_by_class_prepared_as_predict_prepares_them(tmp_path):
    for label in STROKES:
        for shift in (-10, 0, 10):
            _draw(tmp_path / "set" / str(label) / f"{shift}.png", label, shift)
    (tmp_path / "set" / "1" / "notes.txt").write_text("not an image")
    (tmp_path / "set" / "1" / ".hidden.png").write_bytes(b"editor junk")
    (tmp_path / "set" / "seven").mkdir()
    (tmp_path / "set" / ".git").mkdir()
    found = read_labelled(tmp_path / "set", MNIST)
    assert found.labels.tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]
    assert found.skipped == (f"{tmp_path / 'set' / 'seven'}: names no class (0/, 1/, ... 9/)",)
    assert found.pixels.shape == (9, 28, 28) and found.pixels.dtype == np.uint8
    assert found.paths[0] == str(tmp_path / "set" / "1" / "-10.png")
    model = checkpoint.Checkpoint(MLP([784, 8, 10]), {})
    predicted = classify(model, [tmp_path / "set" / "7" / "0.png"])[0]
    assert np.array_equal(found.pixels[7], predicted.pixels)
    assert found.record() == {"folder": str(tmp_path / "set"), "count": 9,
                              "sha256": found.sha256}


def test_the_hash_follows_the_content_and_the_labels(tmp_path):
    _draw(tmp_path / "a" / "7" / "x.png", 7)
    _draw(tmp_path / "a" / "1" / "y.png", 1)
    first = read_labelled(tmp_path / "a", MNIST).sha256
    assert read_labelled(tmp_path / "a", MNIST).sha256 == first
    _draw(tmp_path / "a" / "1" / "y.png", 1, shift=5)
    moved = read_labelled(tmp_path / "a", MNIST).sha256
    (tmp_path / "a" / "1" / "y.png").rename(tmp_path / "a" / "7" / "y.png")
    relabelled = read_labelled(tmp_path / "a", MNIST).sha256
    assert len({first, moved, relabelled}) == 3


def test_a_bad_file_is_skipped_with_a_line_naming_it_and_the_rest_used(tmp_path):
    _draw(tmp_path / "d" / "4" / "good.png", 4)
    (tmp_path / "d" / "4" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    Image.new("L", (60, 60), 255).save(tmp_path / "d" / "4" / "blank.png")
    os.mkfifo(tmp_path / "d" / "4" / "pipe.png")
    found = read_labelled(tmp_path / "d", MNIST)
    assert found.labels.tolist() == [4]
    skipped = sorted(found.skipped)
    assert len(skipped) == 3 and all(line.startswith(str(tmp_path / "d" / "4")) for line in
                                     skipped)
    assert "blank.png: no digit found" in skipped[0] and "pipe.png: " in skipped[2]
    assert not any(line.startswith("the image") or ": the image:" in line for line in skipped)


@pytest.mark.parametrize("layout, message", [
    ({}, "no class sub-folders (0/, 1/, ... 9/)"),
    ({"cats": ["a.png"]}, "no class sub-folders"),
    ({"3": ["a.txt"]}, "hold no image files"),
    ({"3": ["a.png"]}, "no usable image ("),
    ({"3": ["a.png"], "inputs": []}, "no usable image (" + "{f}/3/a.png: not an image file"),
])
def test_a_folder_without_usable_images_is_one_error(tmp_path, layout, message):
    folder = tmp_path / "f"
    folder.mkdir()
    for sub, names in layout.items():
        (folder / sub).mkdir()
        for name in names:
            (folder / sub / name).write_bytes(b"not an image")
    with pytest.raises(LabelledFolderError, match=re.escape(message.format(f=folder))):
        read_labelled(folder, MNIST)
    with pytest.raises(LabelledFolderError, match="not a folder"):
        read_labelled(tmp_path / "missing", MNIST)


def test_the_count_is_bounded_before_any_image_is_read(tmp_path):
    folder = tmp_path / "many" / "5"
    folder.mkdir(parents=True)
    for i in range(MAX_IMAGES + 1):
        (folder / f"{i}.png").touch()
    with pytest.raises(LabelledFolderError, match=f"more than {MAX_IMAGES:,} images"):
        read_labelled(tmp_path / "many", MNIST)


def test_only_ascii_digits_name_a_class():
    assert [class_of(n, MNIST) for n in ("²", "١", "７", "①")] == [None] * 4


def test_any_file_name_is_hashed_and_folders_are_recorded_absolute(tmp_path, monkeypatch):
    name = os.fsdecode(b"a\xff.png")                              # not UTF-8
    _draw(tmp_path / "d" / "7" / name, 7)
    monkeypatch.chdir(tmp_path)
    found = read_labelled(Path("d"), MNIST)
    assert found.labels.tolist() == [7] and found.paths == (str(Path("d") / "7" / name),)
    assert found.record()["folder"] == str(tmp_path / "d")

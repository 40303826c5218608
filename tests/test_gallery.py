"""Digit grids: a picture of the right size whose cells hold the given pixels, each with its
caption beneath."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from mnist_mlp.gallery import CAPTION_H, CELL, COLUMNS, SCALE, save_errors, save_grid

CELL_W, CELL_H = CELL + 4, CELL + CAPTION_H + 4


def _digits(n: int, seed: int = 0) -> np.ndarray:
    """n distinct 0-255 'digits' (n, 28, 28), every grey level used."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)


def _cell(sheet: np.ndarray, i: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The enlarged digit and the caption strip of cell ``i`` of a sheet (H, W)."""
    x, y = (i % cols) * CELL_W + 2, (i // cols) * CELL_H + 2
    return sheet[y:y + CELL, x:x + CELL], sheet[y + CELL:y + CELL_H - 2, x - 2:x - 2 + CELL_W]


def _enlarged(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(img, SCALE, axis=0), SCALE, axis=1)


@pytest.mark.parametrize("n, cols, rows", [(1, 1, 1), (3, 3, 1), (10, 10, 1), (25, 10, 3)])
def test_a_grid_holds_each_digit_enlarged(tmp_path, n, cols, rows):
    images = _digits(n)
    save_grid(tmp_path / "g.png", images, [str(i) for i in range(n)])
    with Image.open(tmp_path / "g.png") as picture:
        assert picture.format == "PNG" and picture.mode == "L"
        assert picture.size == (cols * CELL_W, rows * CELL_H)
        sheet = np.asarray(picture)
    assert min(COLUMNS, n) == cols
    for i, img in enumerate(images):
        np.testing.assert_array_equal(_cell(sheet, i, cols)[0], _enlarged(img))
    for i in range(n, cols * rows):                     # cells past the last are blank
        assert (_cell(sheet, i, cols)[0] == 255).all()
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


def test_each_digit_gets_its_caption(tmp_path):
    captions = ["7->1", "", "7->1", "3->8"]
    save_grid(tmp_path / "g.png", _digits(4), captions)
    sheet = np.asarray(Image.open(tmp_path / "g.png"))
    strips = [_cell(sheet, i, 4)[1] for i in range(4)]
    inked = [bool((s < 255).any()) for s in strips]
    assert inked == [True, False, True, True]
    np.testing.assert_array_equal(strips[0], strips[2])        # the same caption alike
    assert not np.array_equal(strips[0], strips[3])
    assert (strips[1] == 255).all()


def test_the_extension_names_the_format(tmp_path):
    save_grid(tmp_path / "g.jpg", _digits(2), ["a", "b"])
    with Image.open(tmp_path / "g.jpg") as picture:
        assert picture.format == "JPEG" and picture.size == (2 * CELL_W, CELL_H)
    with pytest.raises(OSError, match="cannot write a .txt file here; name it with one of "
                                      ".png"):
        save_grid(tmp_path / "g.txt", _digits(2), ["a", "b"])
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(OSError, match="is a FIFO"):
        save_grid(tmp_path / "fifo.png", _digits(2), ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.png", "g.jpg"]


@pytest.mark.parametrize("shape", [(12, 28, 28), (12, 784)])
def test_the_errors_are_the_misclassified_digits_in_order(tmp_path, shape):
    pixels = _digits(12, seed=1)
    true = np.arange(12) % 10
    pred = true.copy()
    wrong = [2, 5, 6, 11]
    pred[wrong] = (true[wrong] + 3) % 10
    save_errors(tmp_path / "e.png", pixels.reshape(shape), true, pred)
    sheet = np.asarray(Image.open(tmp_path / "e.png"))
    assert sheet.shape == (CELL_H, 4 * CELL_W)
    for cell, i in enumerate(wrong):
        np.testing.assert_array_equal(_cell(sheet, cell, 4)[0], _enlarged(pixels[i]))
    save_grid(tmp_path / "same.png", pixels[wrong], [f"{true[i]}->{pred[i]}" for i in wrong])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "same.png")), sheet)
    save_errors(tmp_path / "two.png", pixels, true, pred, limit=2)
    assert Image.open(tmp_path / "two.png").size == (2 * CELL_W, CELL_H)


def test_an_overlay_colours_pixels_by_the_sign_and_share_of_their_gradient():
    from mnist_mlp.gallery import AWAY, TOWARD, overlay

    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[5, 5] = 255
    gradient = np.zeros((28, 28))
    gradient[1, 1], gradient[2, 2], gradient[3, 3] = 2.0, -2.0, 1.0
    rgb = overlay(pixels, gradient)
    assert rgb.shape == (28, 28, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == TOWARD.astype(int).tolist()
    assert rgb[2, 2].tolist() == AWAY.astype(int).tolist()
    assert rgb[3, 3].tolist() == np.round(TOWARD / 2).astype(int).tolist()   # half the largest
    assert rgb[5, 5].tolist() == [89, 89, 89] and rgb[0, 0].tolist() == [0, 0, 0]


def test_explanations_are_saved_beside_their_images(tmp_path):
    from mnist_mlp.gallery import save_explanations

    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
    save_explanations(tmp_path / "x.png", pixels, np.random.default_rng(1).normal(
        size=(3, 28, 28)), ["a", "b", "c"])
    with Image.open(tmp_path / "x.png") as sheet:
        assert sheet.mode == "RGB" and sheet.width >= 3 * 2 * 84
    with pytest.raises(ValueError, match="3 images but 2 captions"):
        save_explanations(tmp_path / "y.png", pixels, pixels, ["a", "b"])

"""garment.py: a photo of a garment prepared as Fashion-MNIST's authors prepared theirs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mnist_mlp import garment
from mnist_mlp.dataset import DataSource
from mnist_mlp.imaging import ImageError, load_garment
from mnist_mlp.mnist import FASHION_MNIST


def _photo(height: int, width: int, box: tuple[int, int, int, int], paper: float, cloth: float
           ) -> np.ndarray:
    """Luminance (height, width): ``cloth`` in the box (top, left, bottom, right), ``paper``
    elsewhere."""
    gray = np.full((height, width), paper, dtype=np.float32)
    top, left, bottom, right = box
    gray[top:bottom, left:right] = cloth
    return gray


def test_a_dark_garment_on_light_paper_comes_out_light_on_black_its_long_side_28():
    out = garment.preprocess(_photo(800, 600, (100, 250, 700, 350), 0.98, 0.2))
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    rows, cols = np.nonzero(out > 128)
    assert rows.min() == 0 and rows.max() == 27                    # the long side fills 28
    assert 10 <= cols.min() and cols.max() <= 17                   # centred across
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1
    assert out[0, 0] == out[27, 0] == out[0, 27] == 0              # the paper is black
    assert out[14, 14] >= 190          # the garment: its contrast with the paper, (0.98-0.2)/0.98


def test_a_light_garment_on_a_dark_background_comes_out_the_same():
    light_on_dark = garment.preprocess(_photo(600, 600, (150, 100, 450, 500), 0.05, 0.85))
    dark_on_light = garment.preprocess(_photo(600, 600, (150, 100, 450, 500), 0.95, 0.15))
    assert np.abs(light_on_dark.astype(int) - dark_on_light).max() <= 2
    rows, cols = np.nonzero(light_on_dark > 128)
    assert cols.min() <= 1 and cols.max() >= 26 and 19 <= rows.max() - rows.min() + 1 <= 22


def test_only_what_stands_out_of_the_corner_colour_is_kept():
    gray = _photo(400, 400, (50, 50, 350, 350), 0.96, 0.5)
    gray += np.float32(0.04) * np.random.default_rng(0).random(gray.shape, dtype=np.float32)
    assert garment.trim(gray).shape == (300, 300)                  # 4% noise is background


def test_a_blank_photo_is_refused():
    with pytest.raises(ValueError, match="nothing stands out from the background"):
        garment.preprocess(np.full((300, 200), 0.9, dtype=np.float32))
    png = io.BytesIO()
    Image.new("L", (300, 200), 230).save(png, "PNG")
    with pytest.raises(ImageError, match="no garment found"):
        load_garment(png.getvalue())


def _as_product_photo(image: np.ndarray) -> bytes:
    """A Fashion-MNIST image (28, 28), light on black, as a product photo: negated onto
    #fdfdfd paper, enlarged 20 times with margins, saved as a JPEG."""
    paper = np.full((760, 700), 253, dtype=np.uint8)
    big = Image.fromarray(255 - image).resize((560, 560), Image.BICUBIC)
    paper[100:660, 70:630] = np.asarray(big)
    out = io.BytesIO()
    Image.fromarray(paper).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_product_photo_of_a_real_test_image_is_read_as_the_image_itself(
        real_fashion, real_fashion_model):
    from mnist_mlp import checkpoint
    from mnist_mlp.classify import classify, predict_pixels

    pixels, labels = DataSource(real_fashion, (), dataset=FASHION_MNIST).load("test", flat=False)
    model = checkpoint.load(real_fashion_model)
    chosen = range(0, 10_000, 500)                                   # 20 images
    results = classify(model, [_as_product_photo(pixels[i]) for i in chosen])
    direct = predict_pixels(model, pixels[list(chosen)]).argmax(axis=1)
    same = [r.digit == d for r, d in zip(results, direct)]
    assert sum(same) >= 18, same
    # each photo trimmed to the garment and brought back to 28x28: close to the original,
    # up to a pixel's shift in where the short side is centred
    likeness = [np.corrcoef(pixels[i].ravel().astype(float), r.pixels.ravel())[0, 1]
                for r, i in zip(results, chosen)]
    assert np.median(likeness) > 0.85 and min(likeness) > 0.5, np.round(likeness, 2)
    assert {r.label for r in results} <= set(FASHION_MNIST.class_names)

"""Preparing digits: the same digit, drawn or photographed several ways, reads alike and as
MNIST's were prepared; what is not a digit is refused with a reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_mlp import imaging
from mnist_mlp.digit import BOX, CENTRE, preprocess, stroke_width

from .digit_images import STROKE_DIGITS, render_all, stroke_digit


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255)


@pytest.mark.parametrize("digit", STROKE_DIGITS)
def test_renderings_of_one_stroke_digit_preprocess_alike(tmp_path, digit):
    paths = render_all(stroke_digit(digit), tmp_path, f"s{digit}")
    reference = imaging.load_digit(paths["white-on-black"])
    for kind, path in paths.items():
        got = imaging.load_digit(path)
        assert got.shape == (28, 28) and got.dtype == np.uint8
        # measured: mean |difference| at most 0.082 of full scale (the thin ring of the 0
        # on ruled paper, where rulings crossing it are bridged)
        assert _mean_abs(got, reference) < 0.1, kind


def test_output_looks_like_mnist(tmp_path):
    paths = render_all(stroke_digit(7), tmp_path, "s7")
    for kind, path in paths.items():
        x = imaging.load_digit(path).astype(np.float64)
        rows, cols = np.nonzero(x > 0)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 <= BOX + 1, kind  # fits 20x20
        com = [(x.sum(axis=a) @ np.arange(28)) / x.sum() for a in (1, 0)]
        assert np.allclose(com, CENTRE, atol=0.6), (kind, com)
        assert x.max() == 255 and x[0].max() == 0 and x[:, -1].max() == 0, kind
        assert np.median(x) == 0, kind  # background black, ink bright


def test_lines_that_belong_to_the_digit_stay(tmp_path):
    from PIL import ImageDraw

    for name, shape in (("seven", [((6, 10, 113, 10), 8), ((110, 10, 50, 150), 8)]),
                        ("boxy-zero", [((10, 8, 10, 151), 8), ((109, 8, 109, 151), 8),
                                       ((10, 10, 109, 10), 8), ((10, 149, 109, 149), 8)])):
        page = Image.new("L", (120, 160), 255)                     # cropped close to the ink
        draw = ImageDraw.Draw(page)
        for xy, width in shape:
            draw.line(xy, fill=0, width=width)
        page.save(tmp_path / f"{name}.png")
        x = imaging.load_digit(tmp_path / f"{name}.png").astype(np.float64)
        rows, cols = np.nonzero(x > 127)
        top = rows.min()
        assert (x[top] > 127).sum() >= 8, name                     # the top bar is still there
        if name == "boxy-zero":
            left, right = cols.min(), cols.max()
            assert (x[:, left] > 127).sum() >= 12 and (x[:, right] > 127).sum() >= 12


def test_a_margin_line_apart_from_the_digit_is_erased(tmp_path):
    ink = stroke_digit(4)
    page = np.ones((200, 200))
    big = np.asarray(Image.fromarray(ink, "F").resize((140, 140)), dtype=np.float64)
    page[30:170, 50:190] -= np.clip(big, 0, 1)
    Image.fromarray(np.round(page * 255).astype(np.uint8)).save(tmp_path / "plain.png")
    page[:, 12:15] = 0.2                                           # a margin, full height
    Image.fromarray(np.round(page * 255).astype(np.uint8)).save(tmp_path / "margin.png")
    plain, margin = (imaging.load_digit(tmp_path / f"{n}.png") for n in ("plain", "margin"))
    assert _mean_abs(margin, plain) < 0.02


@pytest.mark.parametrize("pen", [4, 8])
def test_fine_pen_strokes_get_mnist_width(tmp_path, pen):
    """A thin pen on a big page would shrink to faint hairlines in 20x20; MNIST's are ~1.8 px."""
    from PIL import ImageDraw

    page = Image.new("L", (448, 448), 255)
    draw = ImageDraw.Draw(page)
    draw.line((104, 80, 344, 80), fill=0, width=pen)
    draw.line((344, 80, 190, 384), fill=0, width=pen)              # a 7
    page.save(tmp_path / "seven.png")
    x = imaging.load_digit(tmp_path / "seven.png")
    assert x.max() == 255
    # MNIST's stroke widths by this measure: 5th percentile 1.22, median 1.84 pixels
    assert 1.2 <= stroke_width(x > 127) <= 3.0


def test_noise_and_filled_areas_are_not_digits(tmp_path):
    rng = np.random.default_rng(0)
    cases = {"noise.png": rng.integers(0, 256, (200, 200)).astype(np.uint8),
             "salt.png": np.where(rng.random((100, 100)) < 0.5, 255, 0).astype(np.uint8)}
    for name, pixels in cases.items():
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(imaging.ImageError, match="a filled area or noise"):
            imaging.load_digit(tmp_path / name)


def test_ruled_paper_without_a_digit_is_refused_quietly():
    page = np.ones((200, 200), np.float32)
    for row in range(20, 200, 40):
        page[row:row + 3] = 0.3                                 # five rulings, nothing else
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="only straight lines across the image"):
            preprocess(page)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.integers(1, 400), st.integers(1, 50), st.booleans(), st.integers(0, 2**32 - 1),
       st.sampled_from(["noise", "bar", "dot", "sparse", "blank"]))
def test_every_accepted_shape_gives_a_digit_or_a_reason(long, ratio, tall, seed, kind):
    """Shapes read_gray can return (sides up to 50:1), any content: never a crash or warning."""
    shape = (long, max(1, long // ratio))
    height, width = shape if tall else shape[::-1]
    rng = np.random.default_rng(seed)
    gray = rng.random((height, width), dtype=np.float32) if kind == "noise" else np.ones(
        (height, width), np.float32)
    if kind == "bar":
        gray[:, width // 3:max(width // 3 + 1, width // 2)] = 0
    elif kind == "dot":
        gray[rng.integers(height), rng.integers(width)] = 0
    elif kind == "sparse":
        gray[rng.random((height, width)) < 0.01] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            digit = preprocess(gray)
        except ValueError:
            return
    assert digit.shape == (28, 28) and digit.dtype == np.uint8

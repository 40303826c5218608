"""Users' digit images: the same digit, drawn or photographed several ways, reads alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_mlp import imaging

from .digit_images import STROKE_DIGITS, render_all, stroke_digit, write_bad_images


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
        assert max(np.ptp(rows), np.ptp(cols)) + 1 <= imaging.BOX + 1, kind  # fits 20x20
        com = [(x.sum(axis=a) @ np.arange(28)) / x.sum() for a in (1, 0)]
        assert np.allclose(com, imaging.CENTRE, atol=0.6), (kind, com)
        assert x.max() == 255 and x[0].max() == 0 and x[:, -1].max() == 0, kind
        assert np.median(x) == 0, kind  # background black, ink bright


def test_white_strokes_on_transparent_stay_visible(tmp_path):
    ink = stroke_digit(4)
    big = np.asarray(Image.fromarray(ink, "F").resize((112, 112)), dtype=np.float32)
    rgba = np.zeros((112, 112, 4), np.uint8)
    rgba[..., :3] = 255                                           # white strokes ...
    rgba[..., 3] = np.clip(big * 255, 0, 255).astype(np.uint8)    # ... on transparency
    Image.fromarray(rgba, "RGBA").save(tmp_path / "w.png")
    got = imaging.load_digit(tmp_path / "w.png")
    reference = imaging.load_digit(render_all(ink, tmp_path, "r")["white-on-black"])
    assert _mean_abs(got, reference) < 0.05


def test_palette_and_exif_rotation(tmp_path):
    ink = stroke_digit(7)
    reference = imaging.load_digit(render_all(ink, tmp_path, "r")["white-on-black"])
    gray = Image.fromarray(np.round((1 - ink) * 255).astype(np.uint8), "L").resize((140, 140))
    gray.convert("P").save(tmp_path / "p.gif")
    assert _mean_abs(imaging.load_digit(tmp_path / "p.gif"), reference) < 0.05
    rotated = gray.rotate(90, expand=True)                       # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6                                             # ... EXIF: rotate 90° CW
    rotated.convert("RGB").save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert _mean_abs(imaging.load_digit(tmp_path / "r.jpg"), reference) < 0.05


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".webp", ".gif", ".jpg"])
def test_every_listed_format_reads_alike(tmp_path, suffix):
    ink = stroke_digit(4)
    reference = imaging.load_digit(render_all(ink, tmp_path, "r")["white-on-black"])
    page = Image.fromarray(np.round((1 - ink) * 255).astype(np.uint8)).resize((140, 140))
    page.convert("RGB").save(tmp_path / f"four{suffix}")
    assert _mean_abs(imaging.load_digit(tmp_path / f"four{suffix}"), reference) < 0.05


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
    assert 1.2 <= imaging.stroke_width(x > 127) <= 3.0


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_grey_images_keep_their_range(mode):
    ink = stroke_digit(1)
    deep = np.round((1 - ink) * 65535)                              # a 16-bit scan
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    img = Image.fromarray(deep.astype(dtype), mode if mode != "I;16" else None)
    assert img.mode == mode
    np.testing.assert_allclose(imaging.flatten_to_gray(img), 1 - ink, atol=1e-4)


def test_bad_images_raise_one_clear_error(tmp_path):
    _, cases = write_bad_images(tmp_path)
    for name, message in cases.items():
        with pytest.raises(imaging.ImageError, match=message) as info:
            imaging.load_digit(tmp_path / name)
        assert name in str(info.value)


def test_folders_expand_to_their_images_sorted(tmp_path):
    for name in ("b.png", "a.JPG", "c.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    found = imaging.expand_paths([tmp_path, tmp_path / "c.txt"])
    assert [p.name for p in found] == ["a.JPG", "b.png", "d.webp", "c.txt"]


def test_float_images_in_zero_one_are_read(tmp_path):
    ink = stroke_digit(7).astype(np.float32)                     # (h, w) in [0, 1]
    path = tmp_path / "seven.tif"
    Image.fromarray(1 - ink, "F").save(path)                     # black ink on white, floats
    digit = imaging.load_digit(path)
    reference = imaging.preprocess(1 - ink)
    assert np.abs(digit.astype(int) - reference.astype(int)).max() <= 1


def test_noise_and_filled_areas_are_not_digits(tmp_path):
    rng = np.random.default_rng(0)
    cases = {"noise.png": rng.integers(0, 256, (200, 200)).astype(np.uint8),
             "salt.png": np.where(rng.random((100, 100)) < 0.5, 255, 0).astype(np.uint8)}
    for name, pixels in cases.items():
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(imaging.ImageError, match="a filled area or noise"):
            imaging.load_digit(tmp_path / name)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_fuzzed_images_raise_only_image_errors(data):
    from io import BytesIO

    kind = data.draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    side = data.draw(st.integers(1, 40))
    pixels = np.frombuffer(data.draw(st.binary(min_size=side * side, max_size=side * side)),
                           np.uint8).reshape(side, side)
    out = BytesIO()
    Image.fromarray(pixels).save(out, format=kind)
    raw = bytearray(out.getvalue())
    for i in data.draw(st.lists(st.integers(0, len(raw) - 1), max_size=6)):
        raw[i] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))]
    try:
        digit = imaging.load_digit(bytes(raw))
    except imaging.ImageError as exc:
        assert str(exc).startswith("the image: ")
        return
    assert digit.shape == (28, 28) and digit.dtype == np.uint8

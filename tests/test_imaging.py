"""Reading users' image files: every format, mode, orientation and size reads as the same
grey, within a fixed memory bound; a damaged or refused file is one clear error."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps

from mnist_mlp import imaging
from mnist_mlp.digit import preprocess

from .big_images import png_header, write_png
from .digit_images import render_all, stroke_digit, write_bad_images


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255)


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
    reference = preprocess(1 - ink)
    assert np.abs(digit.astype(int) - reference.astype(int)).max() <= 1


def _page(side: int = 140) -> Image.Image:
    """A 7 in dark ink on a white page, 8-bit grey."""
    ink = np.round((1 - stroke_digit(7)) * 255).astype(np.uint8)
    return Image.fromarray(ink).resize((side, side))


def _in_mode(page: Image.Image, mode: str) -> Image.Image:
    """``page`` in ``mode``: alpha modes hold the ink in alpha (black, on transparency)."""
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        black_ink = Image.merge("LA", (Image.new("L", page.size, 0), ImageOps.invert(page)))
        return black_ink.convert(mode if mode.startswith("L") else "RGBA").convert(mode)
    if mode == "P":                                 # the paper, one colour, transparent
        img = page.point(lambda v: v if v < 200 else 255).convert("P")
        img.info["transparency"] = 255
        return img
    deep = {"I;16": (np.uint16, 257), "I": (np.int32, 1), "F": (np.float32, 1 / 255)}
    if mode in deep:
        dtype, scale = deep[mode]
        return Image.fromarray((np.asarray(page, np.float64) * scale).astype(dtype))
    if mode == "1":
        return page.convert("1", dither=Image.Dither.NONE)
    return page.convert("RGB").convert(mode)


MODE_FILES = {"1": ["png", "tif", "bmp"], "L": ["png"], "LA": ["png", "tif"], "La": [],
              "P": ["png", "gif"], "PA": ["tif"], "RGBA": ["png", "tif", "webp"], "RGBa": [],
              "RGBX": [], "CMYK": ["tif", "jpg"], "YCbCr": ["tif"], "LAB": ["tif"], "HSV": [],
              "I;16": ["png", "tif"], "I": ["tif"], "F": ["tif"]}


@pytest.mark.parametrize("mode", MODE_FILES)
def test_every_mode_reads_as_the_same_grey_digit(tmp_path, mode):
    page = _page()
    reference = preprocess(np.asarray(page, np.float32) / 255)
    img = _in_mode(page, mode)
    assert img.mode == mode
    assert _mean_abs(preprocess(imaging.flatten_to_gray(img)), reference) < 0.05
    for suffix in MODE_FILES[mode]:
        path = tmp_path / f"seven.{suffix}"
        img.save(path, **({"transparency": 255} if mode == "P" else {}))
        assert Image.open(path).mode == ("L" if mode == "1" and suffix == "gif" else mode)
        assert _mean_abs(imaging.load_digit(path), reference) < 0.05, suffix


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize("side", [130, 1200])              # read as it is; shrunk 3x as read
def test_every_exif_orientation_is_applied(tmp_path, side):
    page = _page(side).crop((0, 0, side, side * 3 // 4))         # not square
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[imaging.ORIENTATION] = orientation
        path = _save(page, tmp_path / f"o{orientation}.png", exif=exif)
        upright = ImageOps.exif_transpose(Image.open(path))
        expected = imaging.flatten_to_gray(upright, imaging.shrink_factor(upright.size))
        np.testing.assert_allclose(imaging.read_gray(path), expected, atol=1e-6,
                                   err_msg=f"orientation {orientation}")


@pytest.mark.parametrize(("size", "mode", "message"), [
    ((1, 39_999_999), "L", "is a strip, not a digit"),
    ((39_999_999, 1), "I;16", "is a strip, not a digit"),
    ((12_000, 200), "RGBA", "is a strip, not a digit"),
    ((20_000, 1_000), "L", "longer than the 16384 pixel limit"),
    ((8_000, 6_000), "RGBA", "megapixel limit"),
])
def test_sizes_are_refused_from_the_header_alone(tmp_path, size, mode, message):
    """These files hold no pixel data: the refusal comes before any decoding."""
    path = tmp_path / "claims.png"
    path.write_bytes(png_header(*size, mode))
    with pytest.raises(imaging.ImageError, match=message) as info:
        imaging.load_digit(path)
    assert str(info.value).startswith(f"{path}: ")


def _webp_12mp(path: Path) -> Path:
    return _save(Image.new("L", (4000, 3000), 255), path, format="WEBP", lossless=True,
                 quality=0, method=0)


def _tiff_one_strip(path: Path) -> Path:
    return _save(Image.new("RGB", (5200, 5200), "white"), path, format="TIFF",
                 compression="tiff_adobe_deflate", strip_size=2**31 - 1)


def _progressive_jpeg(path: Path) -> Path:
    page = Image.new("L", (7300, 5479), 255)
    page.paste(0, (3400, 700, 3900, 4800))                       # a 1
    return _save(page, path, format="JPEG", progressive=True)


# The old reader grew by 1.2 GB (a 40 MP RGBA PNG) to 2.5 GB (1 x 39,999,999 pixels);
# decoding now holds at most MAX_DECODE_BYTES (180 MB).
AS_HEADROOM = 400 * 2**20
LIMITED = r"""
import resource, sys
from pathlib import Path
from mnist_mlp import imaging
imaging.load_digit(Path(sys.argv[1]))                     # imports and caches, on a small image
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[3]), size + int(sys.argv[3])))
try:
    print("digit", imaging.load_digit(Path(sys.argv[2])).max())
except imaging.ImageError as exc:
    print("ImageError", exc)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(("make", "expect"), [
    (lambda p: p.write_bytes(png_header(1, 39_999_999)), "is a strip, not a digit"),
    (lambda p: write_png(p, 6324, 6324, "RGBA"), "digit 255"),         # 40 MP, 4 bytes a pixel
    (lambda p: write_png(p, 6324, 6324, "I;16"), "digit 255"),
    (lambda p: write_png(p, 16_384, 328, "RGBA"), "digit 255"),        # the thinnest strip
    (_progressive_jpeg, "digit 255"),              # libjpeg keeps 80 MB of coefficients
    (_webp_12mp, "MB to decode, over the 180 MB limit"),    # libwebp: 16 bytes a pixel
    (_tiff_one_strip, "MB to decode, over the 180 MB limit"),   # libtiff: a 81 MB strip
], ids=["1x39999999", "rgba-40mp", "16bit-40mp", "16384x328", "progressive-jpeg-40mp",
        "webp-12mp", "tiff-one-strip-27mp"])
def test_large_images_fit_in_a_fixed_address_space(tmp_path, make, expect):
    small = _save(_page(), tmp_path / "small.png")
    path = tmp_path / "big"
    make(path)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(Path(imaging.__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-c", LIMITED, str(small), str(path),
                           str(AS_HEADROOM)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert expect in proc.stdout, proc.stdout


@pytest.mark.parametrize("error", [
    ValueError("conversion from LAB to RGB not supported"),
    NotImplementedError("Unknown pixel format flags"), OSError("decoder error -2"),
    SyntaxError("broken PNG file"), struct.error("unpack requires a buffer of 4 bytes"),
    EOFError(), ZeroDivisionError("division by zero"), MemoryError(),
    Image.DecompressionBombError("too many pixels"), KeyError("palette"),
    IndexError("list index out of range"), TypeError("a\nmessage on\n three lines"),
], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stage", ["decode", "grey"])
def test_any_decoder_or_conversion_failure_is_one_image_error(tmp_path, monkeypatch, error,
                                                               stage):
    path = _save(_page(), tmp_path / "seven.png")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile if stage == "decode" else Image.Image,
                        "load" if stage == "decode" else "crop", fail)
    with pytest.raises(imaging.ImageError) as info:
        imaging.load_digit(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    if not isinstance(error, (MemoryError, Image.DecompressionBombError)):
        assert (" ".join(str(error).split()) or type(error).__name__) in message


def _samples() -> list[bytes]:
    """Small images of a digit in many formats, modes and compressions, as file bytes."""
    page = _page(side=48)
    rgba = _in_mode(page, "RGBA")
    cases = [(page, "PNG", {}), (rgba, "PNG", {}), (_in_mode(page, "P"), "PNG", {}),
             (_in_mode(page, "I;16"), "PNG", {}), (_in_mode(page, "1"), "PNG", {}),
             (page, "JPEG", {}), (page, "JPEG", {"progressive": True}),
             (_in_mode(page, "CMYK"), "JPEG", {}), (page, "GIF", {}),
             (_in_mode(page, "P"), "GIF", {"transparency": 255}), (page, "BMP", {}),
             (rgba, "BMP", {}), (rgba, "WEBP", {}), (page, "WEBP", {"lossless": True}),
             (page, "DDS", {}), (_in_mode(page, "F"), "TIFF", {}),
             (_in_mode(page, "1"), "TIFF", {"compression": "group4"})]
    cases += [(page.convert("RGB"), "TIFF", {"compression": c}) for c in
              ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg")]
    cases += [(_in_mode(page, m), "TIFF", {"compression": "tiff_adobe_deflate"})
              for m in ("LAB", "YCbCr", "PA", "I;16")]
    out = []
    for img, kind, kwargs in cases:
        buffer = BytesIO()
        img.save(buffer, format=kind, **kwargs)
        out.append(buffer.getvalue())
    return out


SAMPLES = _samples()


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_files_classify_or_raise_one_image_error_and_print_nothing(capfd, data):
    raw = bytearray(data.draw(st.sampled_from(SAMPLES)))
    for i in data.draw(st.lists(st.integers(0, len(raw) - 1), max_size=8)):
        raw[i] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            digit = imaging.load_digit(bytes(raw))
            assert digit.shape == (28, 28) and digit.dtype == np.uint8
        except imaging.ImageError as exc:
            assert str(exc).startswith("the image: ") and "\n" not in str(exc)
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")                      # libtiff prints nothing either



def _tiff_with(data: bytes, tag: int, value: int) -> bytes:
    """A little-endian TIFF with ``tag``'s entry in the first IFD made a LONG ``value``."""
    raw = bytearray(data)
    ifd = struct.unpack("<I", raw[4:8])[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", raw[ifd:ifd + 2])[0], 12):
        if struct.unpack("<H", raw[entry:entry + 2])[0] == tag:
            raw[entry + 2:entry + 12] = struct.pack("<HII", 4, 1, value)
            return bytes(raw)
    raise KeyError(tag)


def test_malformed_tiffs_print_one_error_line_and_nothing_else(tmp_path):
    """Pillow logs some TIFF refusals ("More samples per pixel than can be decoded") before
    raising them: with no logging set up, Python printed them on stderr. Run as a user
    would, outside pytest, whose log capture would hide them."""
    from mnist_mlp import checkpoint
    from mnist_mlp.network import MLP

    buffer = BytesIO()
    Image.fromarray((stroke_digit(7) * 255).astype(np.uint8)).convert("RGB").save(
        buffer, format="TIFF")
    valid = buffer.getvalue()
    tags = [t for t in Image.open(BytesIO(valid)).tag_v2]
    rng = np.random.default_rng(0)
    bad = {f"spp-{v}.tif": _tiff_with(valid, 277, v) for v in (7, 100, 65535, 1 << 31)}
    for i in range(40):                                       # any tag, any size of value
        bad[f"fuzz-{i}.tif"] = _tiff_with(valid, int(rng.choice(tags)),
                                          int(rng.choice([0, 1, 2, 255, 1 << 16, 1 << 31])))
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "valid.tif").write_bytes(valid)
    checkpoint.save(tmp_path / "m.npz", MLP([784, 8, 10], seed=0), {"input_scale": 255.0})
    done = subprocess.run([sys.executable, "-m", "mnist_mlp", "predict", str(tmp_path),
                           "--model", str(tmp_path / "m.npz")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    errors = done.stderr.splitlines()
    named = [line.split(": ")[1] for line in errors]
    assert all(line.startswith("Error: ") for line in errors), done.stderr
    assert len(set(named)) == len(named) and set(named) <= {str(tmp_path / n) for n in bad}
    assert {str(tmp_path / f"spp-{v}.tif") for v in (7, 100, 65535, 1 << 31)} <= set(named)
    assert f"Error: {tmp_path / 'spp-100.tif'}: not an image file" in done.stderr
    assert f"{tmp_path / 'valid.tif'}: " in done.stdout

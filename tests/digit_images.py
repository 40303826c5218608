"""Renderings of one digit as users' images: the kinds `mlp predict` must read alike."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def _enlarge(ink: np.ndarray, factor: int) -> np.ndarray:
    """ink (h, w) in [0, 1] -> (h*factor, w*factor), bicubic, clipped."""
    h, w = ink.shape
    img = Image.fromarray(ink.astype(np.float32), "F").resize((w * factor, h * factor),
                                                              Image.BICUBIC)
    return np.clip(np.asarray(img), 0, 1)


def _place(ink: np.ndarray, canvas: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    out = np.zeros(canvas, dtype=np.float32)
    out[at[0]:at[0] + ink.shape[0], at[1]:at[1] + ink.shape[1]] = ink
    return out


def white_on_black(ink: np.ndarray, path: Path) -> Path:
    """As MNIST stores it: 8-bit grey, white ink on black."""
    Image.fromarray(np.round(ink * 255).astype(np.uint8), "L").save(path)
    return path


def black_on_white_offcentre(ink: np.ndarray, path: Path) -> Path:
    """Enlarged 6x, dark ink on white paper, in the top-left part of a wide page."""
    big = _place(_enlarge(ink, 6), (260, 330), (15, 30))
    Image.fromarray(np.round((1 - big) * 255).astype(np.uint8), "L").convert("RGB").save(path)
    return path


def transparent_rgba(ink: np.ndarray, path: Path) -> Path:
    """A drawing app's export: black strokes, the background fully transparent."""
    big = _enlarge(ink, 8)
    rgba = np.zeros(big.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = np.round(big * 255).astype(np.uint8)  # colour black, ink in alpha
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def canvas_png(ink: np.ndarray, path: Path) -> Path:
    """What a browser canvas exports: 280x280 RGBA PNG, white strokes on transparency."""
    big = _place(_enlarge(ink, 8), (280, 280), (28, 28))
    rgba = np.full(big.shape + (4,), 255, dtype=np.uint8)
    rgba[..., 3] = np.round(big * 255).astype(np.uint8)  # colour white, ink in alpha
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def noisy_photo_jpeg(ink: np.ndarray, path: Path, seed: int = 0) -> Path:
    """A phone photo: off-white paper lit unevenly, grey ink, sensor noise, JPEG at 80."""
    rng = np.random.default_rng(seed)
    big = _place(_enlarge(ink, 7), (240, 240), (30, 22))
    rows, cols = np.mgrid[0:240, 0:240] / 240
    paper = 0.92 - 0.22 * cols - 0.08 * rows                        # light falls off to one side
    page = paper * (1 - 0.8 * big) + rng.normal(0, 0.03, big.shape)
    rgb = np.stack([page, page * 0.97, page * 0.9], axis=-1)       # warm paper tint
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB").save(
        path, format="JPEG", quality=80)
    return path


def ruled_paper_jpeg(ink: np.ndarray, path: Path, seed: int = 0) -> Path:
    """A photo of a notebook page: grey-blue rulings every 22 px, a margin line, noise."""
    rng = np.random.default_rng(seed)
    big = _place(_enlarge(ink, 7), (240, 240), (30, 22))
    page = np.full((240, 240), 0.9)
    for row in range(12, 240, 22):
        page[row:row + 2] = 0.6                                     # rulings
    page[:, 8:10] = 0.55                                            # the margin
    page = page * (1 - 0.85 * big) + rng.normal(0, 0.02, big.shape)
    rgb = np.stack([page * 0.9, page * 0.95, page], axis=-1)       # blue-ish lines and paper
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB").save(
        path, format="JPEG", quality=85)
    return path


RENDERINGS = {
    "white-on-black": white_on_black,
    "black-on-white-offcentre": black_on_white_offcentre,
    "transparent-rgba": transparent_rgba,
    "noisy-photo-jpeg": noisy_photo_jpeg,
    "ruled-paper-jpeg": ruled_paper_jpeg,
}
SUFFIX = {"noisy-photo-jpeg": ".jpg", "ruled-paper-jpeg": ".jpg"}


def render_all(ink: np.ndarray, folder: Path, stem: str) -> dict[str, Path]:
    """Write every rendering of ``ink`` (h, w) in [0, 1] into ``folder``."""
    return {kind: make(ink, folder / f"{stem}-{kind}{SUFFIX.get(kind, '.png')}")
            for kind, make in RENDERINGS.items()}


def stroke_digit(digit: int) -> np.ndarray:
    """A synthetic digit drawn with lines and arcs at 8x, reduced to (28, 28) in [0, 1]."""
    from PIL import ImageDraw

    img = Image.new("L", (224, 224), 0)
    d = ImageDraw.Draw(img)
    w = 18
    shapes = {
        0: [("ellipse", (62, 32, 162, 192))],
        1: [("line", (112, 32, 112, 192))],
        4: [("line", (130, 32, 50, 135)), ("line", (50, 135, 170, 135)),
            ("line", (140, 70, 140, 192))],
        7: [("line", (52, 40, 172, 40)), ("line", (172, 40, 95, 192))],
    }
    for kind, xy in shapes[digit]:
        if kind == "line":
            d.line(xy, fill=255, width=w)
        else:
            d.ellipse(xy, outline=255, width=w)
    small = img.resize((28, 28), Image.LANCZOS)
    return np.clip(np.asarray(small, dtype=np.float32) / 255, 0, 1)


STROKE_DIGITS = (0, 1, 4, 7)


def write_bad_images(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A good digit image and files of each kind predict must refuse: name -> message."""
    good = tmp_path / "good.png"
    Image.fromarray(np.round(stroke_digit(1) * 255).astype(np.uint8)).resize((400, 400)).save(good)
    cases = {
        "text.png": (lambda p: p.write_text("not an image"), "not an image file"),
        "empty.png": (lambda p: p.write_bytes(b""), "not an image file"),
        "truncated.png": (lambda p: p.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 3]),
                          "damaged or truncated"),
        "blank.png": (lambda p: Image.new("L", (64, 64), 230).save(p), "looks blank"),
        "noise.png": (lambda p: Image.fromarray(np.random.default_rng(0).integers(
            120, 136, (64, 64)).astype(np.uint8)).save(p), "looks blank"),
        "huge.png": (lambda p: Image.new("1", (8000, 6000), 1).save(p), "megapixel limit"),
        "missing.png": (lambda p: None, "no such file"),
        "fifo.png": (os.mkfifo, "is a FIFO, not a regular file"),
    }
    for name, (make, _) in cases.items():
        make(tmp_path / name)
    return good, {name: message for name, (_, message) in cases.items()}

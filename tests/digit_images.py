"""Digits for the tests: strokes drawn as a hand would, rendered every way users' images come
(``benchmarks/renderings.py``), and images that are no digit at all."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.renderings import RENDERINGS, canvas_png, render_all  # noqa: F401  (the tests')


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

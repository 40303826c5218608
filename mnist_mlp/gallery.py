"""Grids of 28x28 digits with captions, saved as PNG, for people who would rather look."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .files import atomic_writer, format_for
from .mnist import IMAGE_SIDE

SCALE = 3                  # each digit drawn at 84 x 84 pixels
CELL = IMAGE_SIDE * SCALE  # a digit's side in the grid
CAPTION_H = 14     # caption strip under each digit
COLUMNS = 10
TOWARD = np.array([255, 140, 0], dtype=np.float32)   # saliency: orange, toward the class read
AWAY = np.array([30, 144, 255], dtype=np.float32)    # ... blue, away from it
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF",
                ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def save_grid(path: Path, images: np.ndarray, captions: Sequence[str]) -> None:
    """Save digits side by side, each enlarged, with its caption beneath.

    Args:
        path: picture to write (atomically), in the format its extension names
            (``GRID_FORMATS``).
        images: pixels (n, 28, 28), 0-255 white ink on black, as MNIST stores them.
        captions: n short strings.

    Raises:
        ValueError: not one caption per image.
        OSError: an unwritable path, or an extension not in ``GRID_FORMATS``.
    """
    from PIL import Image, ImageDraw

    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    fmt = format_for(path, GRID_FORMATS)
    n = len(images)
    cell_w, cell_h = CELL + 4, CELL + CAPTION_H + 4
    cols = max(1, min(COLUMNS, n))
    rows = max(1, -(-n // cols))
    sheet = Image.new("L", (cols * cell_w, rows * cell_h), color=255)
    draw = ImageDraw.Draw(sheet)
    for i, (img, caption) in enumerate(zip(images, captions)):
        pixels = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        digit = Image.fromarray(pixels, "L").resize((CELL, CELL), Image.NEAREST)
        x, y = (i % cols) * cell_w + 2, (i // cols) * cell_h + 2
        sheet.paste(digit, (x, y))
        draw.text((x + 2, y + CELL + 1), caption, fill=0)
    with atomic_writer(Path(path)) as f:
        sheet.save(f, format=fmt)


def save_errors(path: Path, pixels: np.ndarray, true: np.ndarray, pred: np.ndarray,
                limit: int = 100) -> None:
    """The first ``limit`` misclassified digits, captioned "true->predicted".

    pixels (n, 28, 28) or (n, 784), 0-255; true and pred int (n,).
    """
    wrong = np.flatnonzero(pred != true)[:limit]
    images = pixels[wrong].reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    save_grid(path, images, [f"{t}->{p}" for t, p in zip(true[wrong], pred[wrong])])


def overlay(pixels: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """A saliency map over its image, RGB uint8 (28, 28, 3): the image dimmed to grey, pixels
    pushing toward the class read in orange, away from it in blue, by their share of the
    map's largest magnitude. pixels (28, 28) 0-255; gradient (28, 28)."""
    grey = np.asarray(pixels, dtype=np.float32)[..., None] * 0.35            # (28, 28, 1)
    strength = np.abs(gradient) / max(float(np.abs(gradient).max()), 1e-12)  # (28, 28)
    colour = np.where((gradient > 0)[..., None], TOWARD, AWAY)               # (28, 28, 3)
    rgb = grey + strength[..., None] * (colour - grey)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def save_explanations(path: Path, pixels: np.ndarray, maps: np.ndarray,
                      captions: Sequence[str]) -> None:
    """Each image beside its saliency map over it (``overlay``), captioned, in a grid.

    Args:
        path: picture to write (atomically), in a format of ``GRID_FORMATS``.
        pixels: (n, 28, 28) 0-255, light on black; maps: (n, 28, 28) gradients.
        captions: n short strings.

    Raises:
        ValueError: not one caption per image.
        OSError: an unwritable path, or an extension not in ``GRID_FORMATS``.
    """
    from PIL import Image, ImageDraw

    if len(captions) != len(pixels):
        raise ValueError(f"{len(pixels)} images but {len(captions)} captions")
    fmt = format_for(path, GRID_FORMATS)
    n = len(pixels)
    cell_w, cell_h = 2 * CELL + 6, CELL + CAPTION_H + 4
    cols = max(1, min(COLUMNS // 2, n))
    sheet = Image.new("RGB", (cols * cell_w, max(1, -(-n // cols)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, gradient, caption) in enumerate(zip(pixels, maps, captions)):
        x, y = (i % cols) * cell_w + 2, (i // cols) * cell_h + 2
        grey = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        sheet.paste(Image.fromarray(grey, "L").convert("RGB").resize((CELL, CELL),
                                                                     Image.NEAREST), (x, y))
        sheet.paste(Image.fromarray(overlay(grey, gradient), "RGB").resize(
            (CELL, CELL), Image.NEAREST), (x + CELL + 2, y))
        draw.text((x + 2, y + CELL + 1), caption, fill=0)
    with atomic_writer(Path(path)) as f:
        sheet.save(f, format=fmt)

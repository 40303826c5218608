"""Grids of 28x28 digits with captions, saved as PNG, for people who would rather look."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _save_sheet(path: Path, tiles: Sequence[Any], captions: Sequence[str], columns: int,
                mode: str) -> None:
    """PIL images of one size in a grid of ``columns``, each with its caption beneath,
    saved atomically in the format the extension names.

    Raises:
        ValueError: not one caption per tile.
        OSError: an unwritable path, or an extension not in ``GRID_FORMATS``.
    """
    from PIL import Image, ImageDraw

    if len(captions) != len(tiles):
        raise ValueError(f"{len(tiles)} images but {len(captions)} captions")
    fmt = format_for(path, GRID_FORMATS)
    width, height = tiles[0].size if tiles else (CELL, CELL)
    cell_w, cell_h = width + 4, height + CAPTION_H + 4
    cols = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new(mode, (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        x, y = (i % cols) * cell_w + 2, (i // cols) * cell_h + 2
        sheet.paste(tile, (x, y))
        draw.text((x + 2, y + height + 1), caption, fill=0)
    with atomic_writer(Path(path)) as f:
        sheet.save(f, format=fmt)


def _enlarged(pixels: np.ndarray, mode: str = "L") -> Any:
    """A (28, 28) or (28, 28, 3) uint8 array as a CELL x CELL PIL image, pixels kept sharp."""
    from PIL import Image

    return Image.fromarray(pixels, mode).resize((CELL, CELL), Image.NEAREST)


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
    tiles = [_enlarged(np.clip(np.asarray(img), 0, 255).astype(np.uint8)) for img in images]
    _save_sheet(path, tiles, captions, COLUMNS, "L")


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
    from PIL import Image

    tiles = []
    for image, gradient in zip(pixels, maps):
        grey = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        pair = Image.new("RGB", (2 * CELL + 2, CELL), "white")      # the image, then its map
        pair.paste(_enlarged(grey).convert("RGB"), (0, 0))
        pair.paste(_enlarged(overlay(grey, gradient), "RGB"), (CELL + 2, 0))
        tiles.append(pair)
    _save_sheet(path, tiles, captions, COLUMNS // 2, "RGB")

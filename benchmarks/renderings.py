"""Renderings of one digit as users' images: the kinds `mlp predict` must read alike, and
what a browser canvas exports. Used by ``users.py`` and ``bench.py`` here and by the
tests."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

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


def canvas_png(ink: np.ndarray, path: Path | BinaryIO) -> Path | BinaryIO:
    """What a browser canvas exports: 280x280 RGBA PNG, white strokes on transparency
    (into a file, or a binary stream)."""
    big = _place(_enlarge(ink, 8), (280, 280), (28, 28))
    rgba = np.full(big.shape + (4,), 255, dtype=np.uint8)
    rgba[..., 3] = np.round(big * 255).astype(np.uint8)  # colour white, ink in alpha
    Image.fromarray(rgba, "RGBA").save(path, format="PNG")
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

"""A grey photo of a garment -> a 28x28 image as Fashion-MNIST's were prepared.

Fashion-MNIST's authors made each image from a product photo on a light background
in steps their README lists: trim the edges close to the corner colour (within 5% of
full intensity), resize the longest edge to 28, sharpen, extend the shortest edge to 28
with the garment centred, negate, 8-bit grey. ``preprocess`` runs the same steps on
luminance that ``imaging.read_gray`` has oriented and flattened; a photo on a dark
background is inverted first, so the garment always comes out light on black.
"""

from __future__ import annotations

import numpy as np

from .digit import dark_ink_on_light, resize_long_side, to_working_size
from .mnist import IMAGE_SIDE

CLOSE = 0.05       # a pixel this close to the corner colour is background (the authors' 5%)
MIN_SIDE = 2       # a garment narrower than this many working pixels is not one


def trim(gray: np.ndarray) -> np.ndarray:
    """Crop (h, w) to the box of pixels farther than CLOSE from the corner colour.

    Raises:
        ValueError: nothing differs from the background.
    """
    corners = np.array([gray[0, 0], gray[0, -1], gray[-1, 0], gray[-1, -1]])
    rows, cols = np.nonzero(np.abs(gray - np.median(corners)) > CLOSE)
    if len(rows) == 0 or min(np.ptp(rows), np.ptp(cols)) + 1 < MIN_SIDE:
        raise ValueError("nothing stands out from the background")
    return gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def sharpen(gray: np.ndarray) -> np.ndarray:
    """An unsharp mask of radius 1 (Gaussian σ 1), stronger near outlines. (h, w) in [0, 1]."""
    from PIL import Image, ImageFilter

    image = Image.fromarray(np.round(gray * 255).astype(np.uint8), "L")
    sharp = image.filter(ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0))
    return np.asarray(sharp, dtype=np.float32) / 255


def centre_in_square(gray: np.ndarray, background: float) -> np.ndarray:
    """Extend the short side of (h, w) to IMAGE_SIDE with ``background``, content centred."""
    h, w = gray.shape
    field = np.full((IMAGE_SIDE, IMAGE_SIDE), background, dtype=np.float32)
    top, left = (IMAGE_SIDE - h) // 2, (IMAGE_SIDE - w) // 2
    field[top:top + h, left:left + w] = gray
    return field


def preprocess(gray: np.ndarray) -> np.ndarray:
    """Luminance (h, w) in [0, 1] -> a Fashion-MNIST-like image, uint8 (28, 28), the
    garment light on black.

    Raises:
        ValueError: the photo is blank (nothing stands out from its background).
    """
    light = dark_ink_on_light(to_working_size(gray))
    background = float(np.median([light[0, 0], light[0, -1], light[-1, 0], light[-1, -1]]))
    small = sharpen(resize_long_side(trim(light), IMAGE_SIDE))
    negated = 1 - centre_in_square(small, background)            # the background near 0
    level = 1 - background
    garment = np.clip((negated - level) / max(1 - level, 1e-6), 0, 1)
    return np.round(garment * 255).astype(np.uint8)


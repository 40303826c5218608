"""A user's image file -> a 28x28 digit prepared the way MNIST's were.

MNIST digits are white ink on black, size-normalised with anti-aliasing to fit
a 20x20 box (aspect ratio kept), then placed in a 28x28 field with their
centre of mass at the centre. Photos, scans and drawing-app exports need more
before that: orientation from EXIF, transparency flattened, polarity detected,
uneven lighting and faint noise removed. Each step is one function below;
``load_digit`` runs them in order.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from .files import open_regular
from .mnist import IMAGE_SIDE

MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs)
WORK_SIDE = 128          # long side of the working copy, in pixels
BOX = 20                 # MNIST's size-normalisation box
FIELD = IMAGE_SIDE       # MNIST's field
CENTRE = 14.0            # where MNIST puts the centre of mass (row, col), index coordinates
MIN_CONTRAST = 0.15      # ink this faint against the paper counts as no ink
NOISE_FLOOR = 0.05       # ink below this (of the paper's brightness) is always cut
MNIST_STROKE = 1.84      # median stroke width of MNIST's digits, pixels of the 28x28 field
THIN = 0.6               # strokes thinner than this share of MNIST_STROKE are thickened
LINE_SPAN = 0.8          # a straight run of ink this share of the image long is a ruled line
LINE_LEVEL = 0.05        # ... if its ink is at least this strong (faint rulings count)
RULED_LINES = 3          # this many parallel lines are ruled paper; a digit has at most two
MAX_STROKE = 8.0         # wider "strokes" in the 28x28 field are a filled area or noise
                         # (MNIST's test digits: median 2.0 px, widest 5.9 px)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageError(Exception):
    """An image that cannot be turned into a digit; the message names the file."""


Source = Path | bytes  # an image file, or an image file's bytes (an upload)


def describe(source: Source) -> str:
    """How error messages name a source."""
    return "the image" if isinstance(source, bytes) else str(source)


def open_image(source: Source):
    """Decode an image file, or its bytes, fully (first frame, EXIF orientation applied).

    Only regular files are opened: a FIFO or device is refused, never waited on.

    Raises:
        ImageError: missing, not a regular file, not an image, truncated, or
            larger than MAX_PIXELS.
    """
    from PIL import Image, UnidentifiedImageError

    path = describe(source)
    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else open_regular(source)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror or exc}") from None
    try:
        with f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file is one error line, not warnings
            return _decode(f, path)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too many pixels (a decompression bomb?); scale it "
                         "down") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: damaged or truncated image ({exc})") from None


def _decode(f, path: str):
    """The decoded first frame of an open image file, its size checked before decoding."""
    from PIL import Image, ImageOps

    img = Image.open(f)
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{path}: {width}x{height} pixels is larger than the "
                         f"{MAX_PIXELS // 1_000_000} megapixel limit; scale it down")
    img.load()
    return ImageOps.exif_transpose(img)


def flatten_to_gray(img) -> np.ndarray:
    """Luminance in [0, 1], float32 (h, w), with transparency flattened.

    Transparent areas are filled with the opposite of the opaque pixels'
    brightness, so black strokes on a transparent background stay visible (on
    white) and white strokes do too (on black).
    """
    if img.mode.startswith(("I", "F")):                        # 16/32-bit grey, float
        values = np.nan_to_num(np.asarray(img, dtype=np.float32))
        top = values.max(initial=0)
        full = 1 if img.mode == "F" and top <= 1 else 255 if top <= 255 else 65535
        return np.clip(values / full, 0, 1)                    # float images in [0, 1] kept
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255    # (h, w)
    gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255        # (h, w)
    opaque = alpha > 0.5
    fill = 1.0 if not opaque.any() or gray[opaque].mean() < 0.5 else 0.0
    return alpha * gray + (1 - alpha) * fill


def resize_long_side(a: np.ndarray, side: int, enlarge: str = "bilinear") -> np.ndarray:
    """Resample a (h, w) in [0, 1] so its long side is ``side``, aspect kept; clipped to [0, 1].

    Shrinking is anti-aliased (Lanczos); enlarging uses ``enlarge`` ("bilinear"
    leaves no ringing around strokes, "lanczos" keeps edges sharper).
    """
    from PIL import Image

    h, w = a.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    method = Image.LANCZOS if scale < 1 or enlarge == "lanczos" else Image.BILINEAR
    resized = Image.fromarray(a.astype(np.float32, copy=False), "F").resize(size, method)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def to_working_size(gray: np.ndarray) -> np.ndarray:
    """Resample so the long side is WORK_SIDE pixels. (h, w) -> (h', w')."""
    return resize_long_side(gray, WORK_SIDE)


def dark_ink_on_light(gray: np.ndarray) -> np.ndarray:
    """Invert when the background (the median of the image's border) is dark."""
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(),
                             gray[:, :2].ravel(), gray[:, -2:].ravel()])
    return 1 - gray if np.median(border) < 0.5 else gray


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink in [0, 1], bright on black, from dark ink on light paper, lighting evened out.

    The paper's brightness is estimated by a grey closing (max then min filter,
    wider than any stroke) and smoothed; dividing by it flattens uneven light.
    Faint noise below the paper's own variation is then cut, and the ink
    stretched so its typical stroke value is 1.
    """
    k = 2 * (WORK_SIDE // 8) + 1
    paper = box_filter(np.minimum, box_filter(np.maximum, gray, k), k)  # grey closing
    paper_level = np.maximum(box_filter(np.add, paper, k // 2) / (k // 2) ** 2, 1 / 255)
    ink = np.clip(1 - gray / paper_level, 0, 1)                # (h, w), 0 = paper
    threshold = otsu_threshold(ink)
    strokes, background = ink[ink > threshold], ink[ink <= threshold]
    if strokes.size == 0:
        raise ValueError("the image looks blank")
    median = np.median(background)
    spread = 1.4826 * np.median(np.abs(background - median))   # robust sd of paper noise
    low = min(max(median + 5 * spread, NOISE_FLOOR), threshold / 2)
    high = np.percentile(strokes, 90)
    if high - low < MIN_CONTRAST:
        raise ValueError("the image looks blank")
    return np.clip((ink - low) / (high - low), 0, 1)


def box_filter(ufunc: np.ufunc, a: np.ndarray, k: int, axes: tuple[int, ...] = (0, 1)
               ) -> np.ndarray:
    """``ufunc.reduce`` over each window of k pixels along ``axes`` (edges repeated). (h, w).

    With np.maximum, np.minimum or np.add: a max, min or sum filter, k x k by default.
    """
    for axis in axes:
        pad = [(0, 0), (0, 0)]
        pad[axis] = (k // 2, k - 1 - k // 2)
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(a, pad, mode="edge"), k, axis)
        a = ufunc.reduce(windows, axis=-1)
    return a


def remove_ruled_lines(ink: np.ndarray) -> np.ndarray:
    """Erase printed rulings and margins: straight lines across most of the image.

    A line is a run of ink at least LINE_SPAN of the image long (a grey opening
    along it, tolerant of a slight tilt). With RULED_LINES or more in one
    direction (ruled or squared paper) each is erased, strokes crossing it
    bridged; fewer are erased only when they lie apart from the rest of the ink
    (a margin, a form's box), so the bar of a tightly cropped 7 or the sides of
    a boxy 0 stay. ink (h, w) bright on black.
    """
    out = ink.copy()
    for along in (1, 0):                                       # horizontal, then vertical
        across = 1 - along
        length = int(LINE_SPAN * ink.shape[along])
        tilted = box_filter(np.maximum, ink, 5, axes=(across,))   # ±2 px of tilt
        runs = box_filter(np.minimum, tilted, length, axes=(along,))
        band = box_filter(np.maximum, runs, length, axes=(along,)) > LINE_LEVEL  # (h, w)
        profile = band.any(axis=along)                        # per row (or column)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], profile.astype(np.int8), [0]])))
        lines = list(zip(edges[::2], edges[1::2]))             # [start, stop) of each line
        view = out if across == 0 else out.T                   # lines as rows of `view`
        for start, stop in lines:
            if len(lines) >= RULED_LINES:                      # ruled or squared paper:
                before = view[max(start - 1, 0)]               # bridge strokes that cross
                after = view[min(stop, len(view) - 1)]         # the line, erase the rest
                view[start:stop] = np.minimum(before, after)
            elif _apart(ink, start, stop, across):             # a margin or a box edge
                view[start:stop] = 0
    return out


def _apart(ink: np.ndarray, start: int, stop: int, across: int) -> bool:
    """Whether rows (across=0) or columns (1) start:stop lie clear of the other ink."""
    rest = ink.copy() if across == 0 else ink.T.copy()
    rest[start:stop] = 0
    inked = np.flatnonzero((rest > 0.5).any(axis=1))
    return bool(inked.size) and (stop + 3 < inked[0] or start - 3 > inked[-1])


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """The level in [0, 1] that best splits ``values`` in two (Otsu 1979)."""
    hist, edges = np.histogram(values, bins=bins, range=(0, 1))
    p = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu0 = np.cumsum(p * centres)
    total = mu0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - mu0) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = 0
    return float(edges[np.argmax(between) + 1])


def ink_bounds(ink: np.ndarray, tail: float = 0.0005) -> tuple[slice, slice]:
    """Rows and columns that hold the ink, ignoring ``tail`` of its mass on each side."""
    def span(mass: np.ndarray) -> slice:
        cum = np.cumsum(mass) / mass.sum()
        start = int(np.searchsorted(cum, tail))
        stop = int(np.searchsorted(cum, 1 - tail)) + 1
        return slice(start, max(stop, start + 1))

    return span(ink.sum(axis=1)), span(ink.sum(axis=0))


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary drawing: 2 x area / perimeter (pixels)."""
    m = np.pad(mask, 1)
    perimeter = np.count_nonzero(m[1:] != m[:-1]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
    return 2 * np.count_nonzero(mask) / max(perimeter, 1)


def thicken_thin_strokes(ink: np.ndarray) -> np.ndarray:
    """Widen a fine-pen digit (cropped, (h, w)) towards MNIST's stroke width after fitting.

    Strokes that would end up thinner than THIN x MNIST_STROKE in the 20x20
    box are grown by a max filter; others are returned unchanged.
    """
    target = MNIST_STROKE * max(ink.shape) / BOX          # MNIST's width, in these pixels
    width = stroke_width(ink > 0.5)
    if width >= THIN * target:
        return ink
    k = 2 * int(round((target - width) / 2)) + 1
    return box_filter(np.maximum, np.pad(ink, k // 2), k)


def fit_box(ink: np.ndarray) -> np.ndarray:
    """Fit the cropped digit into BOX x BOX, aspect ratio kept, peak 1. -> (h, w), max side BOX."""
    box = resize_long_side(ink, BOX, enlarge="lanczos")
    return box / max(float(box.max()), 1e-6)              # MNIST's strokes peak at full white


def centre_in_field(digit: np.ndarray) -> np.ndarray:
    """Place ``digit`` in a FIELD x FIELD field with its centre of mass at (CENTRE, CENTRE)."""
    h, w = digit.shape
    mass = digit.sum()
    com_row = (digit.sum(axis=1) @ np.arange(h)) / mass
    com_col = (digit.sum(axis=0) @ np.arange(w)) / mass
    top = int(np.clip(round(CENTRE - com_row), 0, FIELD - h))
    left = int(np.clip(round(CENTRE - com_col), 0, FIELD - w))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top:top + h, left:left + w] = digit
    return field


def preprocess(gray: np.ndarray) -> np.ndarray:
    """Luminance (h, w) in [0, 1] -> MNIST-like digit, uint8 (28, 28), white ink on black.

    Raises:
        ValueError: no ink found, or ink that is not pen strokes (noise, a filled
            area); the message says which.
    """
    ink = remove_ruled_lines(ink_map(dark_ink_on_light(to_working_size(gray))))
    rows, cols = ink_bounds(ink)
    digit = centre_in_field(fit_box(thicken_thin_strokes(ink[rows, cols])))
    if stroke_width(digit > 0.5) > MAX_STROKE:
        raise ValueError("the ink is a filled area or noise, not pen strokes")
    return np.round(digit * 255).astype(np.uint8)


def load_digit(source: Source) -> np.ndarray:
    """Read an image file (or its bytes) and prepare it as MNIST's digits were: uint8 (28, 28).

    Raises:
        ImageError: unreadable, too large, or blank; the message names the file.
    """
    gray = flatten_to_gray(open_image(source))
    try:
        return preprocess(gray)
    except ValueError as exc:
        raise ImageError(f"{describe(source)}: no digit found ({exc})") from None


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their image files (regular files), sorted by name."""
    out = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir()
                          if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(path)
    return out

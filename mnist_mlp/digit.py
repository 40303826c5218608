"""A grey image of a handwritten or printed digit -> a 28x28 digit as MNIST's were prepared.

MNIST digits are white ink on black, size-normalised with anti-aliasing to fit
a 20x20 box (aspect ratio kept), then placed in a 28x28 field with their
centre of mass at the centre. Photos, scans and drawing-app exports need more
before that: polarity detected, uneven lighting, faint noise and ruled lines
removed, fine-pen strokes thickened. Each step is one function below;
``preprocess`` runs them in order on luminance that ``imaging.read_gray`` has
already oriented and flattened.
"""

from __future__ import annotations

import numpy as np

from .mnist import IMAGE_SIDE

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
        ValueError: no ink found, only ruled lines, or ink that is not pen strokes
            (noise, a filled area); the message says which.
    """
    ink = remove_ruled_lines(ink_map(dark_ink_on_light(to_working_size(gray))))
    if not ink.any():
        raise ValueError("only straight lines across the image")
    rows, cols = ink_bounds(ink)
    digit = centre_in_field(fit_box(thicken_thin_strokes(ink[rows, cols])))
    if stroke_width(digit > 0.5) > MAX_STROKE:
        raise ValueError("the ink is a filled area or noise, not pen strokes")
    return np.round(digit * 255).astype(np.uint8)

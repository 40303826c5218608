"""A user's image file -> a 28x28 digit prepared the way MNIST's were.

MNIST digits are white ink on black, size-normalised with anti-aliasing to fit
a 20x20 box (aspect ratio kept), then placed in a 28x28 field with their
centre of mass at the centre. Photos, scans and drawing-app exports need more
before that: orientation from EXIF, transparency flattened, polarity detected,
uneven lighting and faint noise removed. Each step is one function below;
``load_digit`` runs them in order.

Reading is bounded whatever the image's shape or mode: its size is checked
from the header, and what decoding it would hold (the frame and the decoder's
own buffers, ``decode_bytes``) before any pixel is decoded; a JPEG is decoded
at 1/2 to 1/8 scale in grey; any other image is made grey a strip at a time
while it is shrunk by a whole factor, so little is held beside the frame.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np

from .files import open_regular
from .mnist import IMAGE_SIDE

MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs) ...
MAX_SIDE = 16_384        # ... as are longer sides
MAX_ASPECT = 50          # ... and thinner strips: a digit is not 1 pixel tall
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # decoders tried (IMAGE_SUFFIXES')
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
REDUCING_GAP = 3         # whole-factor shrinking stops at this many times WORK_SIDE
STRIP_PIXELS = 1 << 18   # pixels converted to grey at a time
MAX_DECODE_BYTES = 180_000_000  # what decoding may hold: 40 MP at 4 bytes a pixel, 20 MB more
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
ORIENTATION = 0x0112     # the EXIF tag; its values 2-8, as ImageOps.exif_transpose reads them:
TURNS = {2: (True, 0), 3: (False, 2), 4: (True, 2), 5: (True, 1),  # (mirror left-right first?,
         6: (False, 3), 7: (True, 3), 8: (False, 1)}               # quarter turns anticlockwise)
BITS_PER_SAMPLE, PHOTOMETRIC, YCBCR = 258, 262, 6             # TIFF tags and values
ROWS_PER_STRIP, TILE_WIDTH, TILE_LENGTH = 278, 322, 323
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


class ImageError(Exception):
    """An image that cannot be turned into a digit; the message names the file."""


Source = Path | bytes  # an image file, or an image file's bytes (an upload)


def describe(source: Source) -> str:
    """How error messages name a source."""
    return "the image" if isinstance(source, bytes) else str(source)


def read_gray(source: Source) -> np.ndarray:
    """Read an image file (or its bytes) as luminance in [0, 1], float32 (h, w), bounded.

    The first frame, its EXIF orientation applied, transparency flattened. An
    image longer than REDUCING_GAP x WORK_SIDE is shrunk by a whole factor
    while it is read (box average): its long side ends below twice that.
    Only regular files are opened: a FIFO or device is refused, never waited on.

    Raises:
        ImageError: missing, not a regular file, not an image of FORMATS,
            damaged, too large or too thin (check_size), or pixels that cannot
            be made grey; one line that names the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = describe(source)
    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else open_regular(source)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror or exc}") from None
    _quiet_decoders()
    with f:
        try:
            img = _decode(f, path)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image file ({', '.join(FORMATS)})") from None
        except Image.DecompressionBombError:
            raise ImageError(f"{path}: too many pixels (a decompression bomb?); scale it "
                             "down") from None
        except MemoryError:
            raise ImageError(f"{path}: not enough memory to decode it") from None
        except Exception as exc:    # decoders raise OSError, SyntaxError, struct.error, ...
            raise ImageError(f"{path}: damaged or truncated image ({_reason(exc)})") from None
        try:
            return orient(flatten_to_gray(img, shrink_factor(img.size)), _orientation(img))
        except MemoryError:
            raise ImageError(f"{path}: not enough memory to read its pixels") from None
        except Exception as exc:    # a mode Pillow cannot convert, a damaged palette, ...
            raise ImageError(f"{path}: cannot read its {img.mode} pixels as grey "
                             f"({_reason(exc)})") from None


def check_size(width: int, height: int, path: str) -> None:
    """Refuse, before decoding, images too large, too long or too thin to hold a digit.

    Raises:
        ImageError: more than MAX_PIXELS, a side ratio over MAX_ASPECT, or a side
            over MAX_SIDE pixels.
    """
    size = f"{width}x{height} pixels"
    if width * height > MAX_PIXELS:
        raise ImageError(f"{path}: {size} is larger than the {MAX_PIXELS // 1_000_000} "
                         "megapixel limit; scale it down")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"{path}: {size} is a strip, not a digit (sides over "
                         f"{MAX_ASPECT}:1); crop it to the digit")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"{path}: {size} is longer than the {MAX_SIDE} pixel limit; "
                         "scale it down")


def shrink_factor(size: tuple[int, int]) -> int:
    """The whole factor that leaves the long side at least REDUCING_GAP x WORK_SIDE."""
    return max(1, max(size) // (REDUCING_GAP * WORK_SIDE))


def _decode(f, path: str):
    """The first frame of an open image file, its size and cost checked before decoding.

    A JPEG is decoded in grey at the smallest of 1/2, 1/4, 1/8 scale that
    keeps shrink_factor's size (``Image.draft``); other formats at full size.

    Raises:
        ImageError: check_size refuses it, or decoding would hold more than
            MAX_DECODE_BYTES.
    """
    from PIL import Image

    file_bytes = f.seek(0, io.SEEK_END)
    f.seek(0)
    img = Image.open(f, formats=FORMATS)
    width, height = img.size
    check_size(width, height, path)
    factor = shrink_factor(img.size)
    img.draft("L", (-(-width // factor), -(-height // factor)))      # JPEG only
    needs = decode_bytes(img, width, height, file_bytes)
    if needs > MAX_DECODE_BYTES:
        raise ImageError(f"{path}: this {width}x{height} {img.format} image takes "
                         f"{needs / 1e6:.0f} MB to decode, over the "
                         f"{MAX_DECODE_BYTES // 1_000_000} MB limit; scale it down")
    img.load()
    return img


def decode_bytes(img, width: int, height: int, file_bytes: int) -> int:
    """The memory decoding opened ``img`` (draft set) holds, in bytes.

    The frame as Pillow stores it (1 byte a pixel for grey or palette, 2 for
    16-bit grey, 4 otherwise), plus what the format's decoder keeps beside it:
    libwebp a canvas, the previous one and a copy (4 bytes a pixel each) and
    the file twice; libjpeg a progressive JPEG's DCT coefficients at full size
    (2 bytes each); libtiff one decoded strip or tile, and the file (mapped, or
    read whole from bytes); Pillow's BMP run-length decoder two more frames.
    ``width`` x ``height``: the file's size in pixels.
    """
    from PIL import ImageMode

    mode = ImageMode.getmode(img.mode)
    frame = img.width * img.height * (4 if len(mode.bands) > 1 else int(mode.typestr[-1]))
    if img.format == "WEBP":
        return frame + 12 * width * height + 2 * file_bytes
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        sampling = [(h, v) for _, h, v, _ in img.layer]         # per component
        h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
        return frame + sum(2 * -(-width * h // h_max) * -(-height * v // v_max)
                           for h, v in sampling)
    codec = img.tile[0][0] if img.tile else None
    if codec == "bmp_rle":
        return 3 * frame
    if codec == "libtiff":
        tags = img.tag_v2
        bits = tags.get(BITS_PER_SAMPLE, 1)                     # one, or one per sample
        bits = sum(bits) if isinstance(bits, tuple) else bits
        if tags.get(PHOTOMETRIC) == YCBCR:                       # read as RGBX
            bits = 32
        if TILE_WIDTH in tags:
            across, rows = tags[TILE_WIDTH], tags.get(TILE_LENGTH, 0)
        else:
            across, rows = width, min(tags.get(ROWS_PER_STRIP, height), height)
        return frame + rows * -(-across * bits // 8) + file_bytes
    return frame


def _orientation(img) -> int:
    """The image's EXIF orientation (1 to 8); 1 when its EXIF is missing or damaged."""
    try:
        value = img.getexif().get(ORIENTATION, 1)
    except Exception:               # damaged metadata beside readable pixels: ignored
        return 1
    return value if isinstance(value, int) else 1


def orient(gray: np.ndarray, orientation: int) -> np.ndarray:
    """Turn and mirror (h, w) as EXIF ``orientation`` says, as ImageOps.exif_transpose does."""
    mirror, turns = TURNS.get(orientation, (False, 0))
    return np.ascontiguousarray(np.rot90(gray[:, ::-1] if mirror else gray, turns))


def _quiet_decoders() -> None:
    """Keep Pillow's warnings and libtiff's messages off stderr: each image gets one line.

    Pillow warns about damaged metadata in images it still reads (and about
    decompression bombs, refused here first). A filter (idempotent, put back
    in front each time), not warnings.catch_warnings, which is not
    thread-safe: mlp serve decodes in threads.
    """
    warnings.filterwarnings("ignore", module=r"PIL\.")
    _silence_libtiff()


@functools.cache
def _silence_libtiff() -> None:
    """Stop libtiff writing its error messages to stderr; Pillow raises them anyway.

    Pillow sets libtiff's warning handler to NULL when it decodes but leaves
    the error handler, which prints, so a damaged TIFF would add lines of its
    own beside the one error line. The handler is process-wide state of the
    libtiff that Pillow loaded, found among the process's mapped files
    (Linux); where it cannot be found the messages stay.
    """
    import ctypes

    from PIL import features

    if not features.check_codec("libtiff"):                    # also maps Pillow's libtiff
        return
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[5].strip() for line in maps
                     if "/libtiff" in line and len(line.split(maxsplit=5)) == 6}
    except OSError:
        return
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            for name in ("TIFFSetErrorHandler", "TIFFSetErrorHandlerExt"):
                setter = getattr(lib, name)
                setter.argtypes = [ctypes.c_void_p]
                setter.restype = ctypes.c_void_p
                setter(None)
        except (OSError, AttributeError):
            continue


def _reason(exc: BaseException) -> str:
    """An exception as a short single line: its message, else its type's name."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def flatten_to_gray(img, factor: int = 1) -> np.ndarray:
    """Luminance in [0, 1], float32 (ceil(h / factor), ceil(w / factor)), transparency flattened.

    Each factor x factor block is averaged (a box filter, as ``Image.reduce``).
    The image is converted STRIP_PIXELS at a time (whole blocks of rows), so
    whatever its mode the memory used beside the decoded image stays small.
    16/32-bit grey and float images keep their range: floats in [0, 1] as they
    are, else 255 or 65535 is white. Transparent areas are filled with the
    opposite of the opaque pixels' brightness, so black strokes on a
    transparent background stay visible (on white) and white strokes do too
    (on black).
    """
    width, height = img.size
    rows = factor * max(1, STRIP_PIXELS // (factor * width))    # whole blocks per strip
    deep = img.mode.startswith(("I", "F"))                      # 16/32-bit grey, float
    alpha = not deep and (img.mode in ALPHA_MODES or "transparency" in img.info)
    top = 0.0                                                   # deep: the largest value
    opaque_sum, opaque_count = 0.0, 0                           # alpha: the opaque pixels
    blocks, cover = [], []                                      # block means, of gray, alpha
    for y in range(0, height, rows):
        strip = img.crop((0, y, width, min(y + rows, height)))
        if deep:        # clipped to [0, 65535] here: the same as clipping after scaling
            values = np.clip(np.nan_to_num(np.asarray(strip, dtype=np.float32)), 0, 65535)
            top = max(top, float(values.max(initial=0)))
            blocks.append(block_mean(values, factor))
        elif alpha:
            if strip.mode == "La":                              # no direct conversion
                strip = strip.convert("LA")
            rgba = strip.convert("RGBA")
            a = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255   # (r, w)
            gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255   # (r, w)
            opaque = a > 0.5
            opaque_sum += float(gray[opaque].sum())
            opaque_count += int(np.count_nonzero(opaque))
            blocks.append(block_mean(a * gray, factor))
            cover.append(block_mean(a, factor))
        else:
            band = strip.getchannel("L") if strip.mode == "LAB" else strip.convert("L")
            blocks.append(block_mean(np.asarray(band, dtype=np.float32) / 255, factor))
    gray = np.concatenate(blocks)
    if deep:
        full = 1 if img.mode == "F" and top <= 1 else 255 if top <= 255 else 65535
        return gray / np.float32(full)
    if alpha:
        fill = 1.0 if not opaque_count or opaque_sum / opaque_count < 0.5 else 0.0
        return gray + (1 - np.concatenate(cover)) * np.float32(fill)
    return gray


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each factor x factor block of (h, w); partial blocks at the edges too."""
    if factor == 1:
        return a
    starts = [np.arange(0, n, factor) for n in a.shape]
    sums = np.add.reduceat(np.add.reduceat(a, starts[0], axis=0), starts[1], axis=1)
    counts = [np.diff(s, append=n) for s, n in zip(starts, a.shape, strict=True)]
    return sums / np.outer(*counts).astype(np.float32)


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


def load_digit(source: Source) -> np.ndarray:
    """Read an image file (or its bytes) and prepare it as MNIST's digits were: uint8 (28, 28).

    Raises:
        ImageError: unreadable, too large, or blank; the message names the file.
    """
    gray = read_gray(source)
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

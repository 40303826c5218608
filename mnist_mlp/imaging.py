"""A user's image file -> luminance in [0, 1], read within a fixed memory bound.

``read_gray`` reads the first frame as grey: orientation from EXIF applied,
transparency flattened. ``load_digit`` (file -> 28x28 digit) hands that to
``digit.preprocess``, which prepares it the way MNIST's digits were; ``load_garment``
to ``garment.preprocess``, as Fashion-MNIST's photos were.

Reading is bounded whatever the image's shape or mode: its size is checked
from the header, and what decoding it would hold (the frame and the decoder's
own buffers, ``decode_bytes``) before any pixel is decoded; a JPEG is decoded
at 1/2 to 1/8 scale in grey; any other image is made grey a strip at a time
while it is shrunk by a whole factor, so little is held beside the frame.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from . import garment
from .digit import WORK_SIDE, preprocess
from .files import open_regular

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
    """Keep Pillow's warnings and log records and libtiff's messages off stderr: each
    image gets one line.

    Pillow warns about damaged metadata in images it still reads (and about
    decompression bombs, refused here first). A filter (idempotent, put back
    in front each time), not warnings.catch_warnings, which is not
    thread-safe: mlp serve decodes in threads.
    """
    warnings.filterwarnings("ignore", module=r"PIL\.")
    _silence_pillow_log()
    _silence_libtiff()


@functools.cache
def _silence_pillow_log() -> None:
    """Give Pillow's logger a handler that drops its records.

    Pillow logs some refusals before raising them (a TIFF's "More samples per
    pixel than can be decoded" at ERROR); with no logging configured, Python's
    last-resort handler writes such records to stderr. With a handler of its
    own (the logging HOWTO's NullHandler) the logger no longer falls back on
    it; an application that configures logging still gets the records through
    its root handlers.
    """
    logging.getLogger("PIL").addHandler(logging.NullHandler())


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


def load_garment(source: Source) -> np.ndarray:
    """Read an image file (or its bytes) and prepare it as Fashion-MNIST's photos were:
    uint8 (28, 28).

    Raises:
        ImageError: unreadable, too large, or blank; the message names the file.
    """
    gray = read_gray(source)
    try:
        return garment.preprocess(gray)
    except ValueError as exc:
        raise ImageError(f"{describe(source)}: no garment found ({exc})") from None


# How a user's image becomes a network's input, by the dataset's subject.
PREPARATIONS = {"digit": load_digit, "garment": load_garment}


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

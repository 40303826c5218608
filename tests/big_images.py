"""Large images for the memory-bound tests, written a row at a time (the writer holds a few MB).

Each is a "1": a dark vertical bar on a white page, or the same ink in the alpha channel.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_COLOUR = {"L": (8, 0), "I;16": (16, 0), "RGBA": (8, 6)}  # mode -> bit depth, colour type


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_header(width: int, height: int, mode: str = "L") -> bytes:
    """A PNG that claims width x height pixels and holds none: only a size check can pass it."""
    depth, colour = PNG_COLOUR[mode]
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def _rows(width: int, mode: str) -> tuple[bytes, bytes]:
    """A row of white paper and a row crossing the bar, as PNG scanlines (filter byte 0)."""
    bar = np.zeros(width, bool)
    bar[int(0.45 * width):max(int(0.55 * width), int(0.45 * width) + 1)] = True
    if mode == "RGBA":                                      # black ink in the alpha channel
        pixels = [np.zeros((width, 4), np.uint8) for _ in range(2)]
        pixels[1][bar, 3] = 255
    elif mode == "I;16":
        pixels = [np.full(width, 65535, ">u2") for _ in range(2)]
        pixels[1][bar] = 0
    else:
        pixels = [np.full(width, 255, np.uint8) for _ in range(2)]
        pixels[1][bar] = 0
    return tuple(b"\0" + p.tobytes() for p in pixels)


def write_png(path: Path, width: int, height: int, mode: str = "L") -> Path:
    """A width x height PNG of a "1", mode "L", "I;16" or "RGBA", compressed as it is written."""
    paper, ink = _rows(width, mode)
    packer = zlib.compressobj(1)
    with open(path, "wb") as f:
        f.write(png_header(width, height, mode)[:-12])       # signature and IHDR
        for y in range(height):
            data = packer.compress(ink if height // 8 <= y < height - height // 8 else paper)
            if data:
                f.write(_chunk(b"IDAT", data))
        f.write(_chunk(b"IDAT", packer.flush()) + _chunk(b"IEND", b""))
    return path

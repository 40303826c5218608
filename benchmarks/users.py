"""How well checkpoints read users' digits: about 1,200 images, none of them an MNIST file.

    python benchmarks/users.py --model M.npz [--model M2.npz] [--data-dir ../shared/mnist]
    python benchmarks/users.py --model M.npz --json --keep /tmp/users-images

Every image is made here from a seed, written as an image file and read back with
``imaging.load_digit``, as ``mlp predict`` and ``mlp serve`` read theirs; each model
then classifies the prepared digits with ``classify.predict_pixels``. Three groups:

- drawn: real MNIST test digits rendered the ways benchmarks/renderings.py renders users'
  images (white on black, off-centre on a page, a drawing app's RGBA, a phone photo,
  ruled paper), and digits drawn with the serve page's pen (280x280, a 20 px round
  brush, black on white) from stroke skeletons given a random slant, proportions, size
  and wobble;
- typeset: 0-9 in every font ``fc-list`` names, dark on white; rows per style tag
  (regular, bold, italic, condensed, mono, serif, light), a font counted in each of its tags;
- variations: MNIST, typeset and pen digits alike, made thick or thin, placed off-centre,
  slanted ±15°, small or large on the page, in light pencil on grey paper, or photographed
  (tilt, blur, uneven light, noise, JPEG).

Prints a Markdown table per model (accuracy per kind, per group, overall; images the
preparation refused count as wrong) and the machine; --json prints all of it as JSON.
The fonts come from the machine, so the typeset group differs between machines: the
fonts used are listed in the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402  (benchmarks/ is this script's own folder)
from renderings import RENDERINGS, SUFFIX  # noqa: E402

from mnist_mlp import checkpoint  # noqa: E402
from mnist_mlp.checkpoint import CheckpointError  # noqa: E402
from mnist_mlp.classify import predict_pixels  # noqa: E402
from mnist_mlp.dataset import DataSource  # noqa: E402
from mnist_mlp.digit import stroke_width  # noqa: E402
from mnist_mlp.imaging import ImageError, load_digit  # noqa: E402
from mnist_mlp.mnist import DataError  # noqa: E402

N_DRAWN = 60        # MNIST test digits, each rendered every way renderings.py does
PEN_PER_DIGIT = 12  # serve-page pen drawings of each digit
VARIANTS_EACH = 2   # per variation: this many of each digit from each source (MNIST, font, pen)
GLYPH = 160         # digit height of the high-resolution ink every variation starts from, px
PAD, BRUSH = 280, 20  # the serve page's drawing pad and pen width (mnist_mlp/web/app.js)
SLANT = np.tan(np.deg2rad(15))


@dataclass
class Sample:
    """One image to read: its file, the true digit, its group and kind tags."""

    path: Path
    digit: int
    group: str
    tags: tuple[str, ...]


# Pen skeletons of each digit in a unit box (x right, y down): styles, each a list of strokes;
# a stroke is ("curve", points) through which a Catmull-Rom spline passes, or ("line", points).
STROKES: dict[int, list[list[tuple[str, list[tuple[float, float]]]]]] = {
    0: [[("curve", [(0.5, 0), (0.15, 0.2), (0.1, 0.55), (0.3, 0.95), (0.65, 0.95), (0.9, 0.55),
                    (0.85, 0.2), (0.5, 0), (0.3, 0.08)])]],
    1: [[("line", [(0.5, 0), (0.5, 1)])],
        [("line", [(0.25, 0.25), (0.55, 0), (0.55, 1)])],
        [("line", [(0.3, 0.22), (0.55, 0), (0.55, 1)]), ("line", [(0.3, 1), (0.8, 1)])]],
    2: [[("curve", [(0.12, 0.25), (0.35, 0.02), (0.7, 0.03), (0.82, 0.28), (0.6, 0.6),
                    (0.12, 1)]), ("line", [(0.12, 1), (0.9, 1)])],
        [("curve", [(0.15, 0.2), (0.45, 0), (0.8, 0.15), (0.7, 0.45), (0.15, 0.95),
                    (0.25, 0.9), (0.55, 0.95), (0.9, 1)])]],
    3: [[("curve", [(0.15, 0.12), (0.5, 0), (0.8, 0.15), (0.75, 0.38), (0.42, 0.48)]),
         ("curve", [(0.42, 0.48), (0.82, 0.6), (0.85, 0.85), (0.5, 1), (0.12, 0.9)])],
        [("line", [(0.15, 0), (0.85, 0), (0.45, 0.4)]),
         ("curve", [(0.45, 0.4), (0.82, 0.55), (0.85, 0.85), (0.5, 1), (0.12, 0.9)])]],
    4: [[("line", [(0.6, 0), (0.1, 0.65), (0.9, 0.65)]), ("line", [(0.65, 0.3), (0.65, 1)])],
        [("line", [(0.7, 1), (0.7, 0), (0.1, 0.68), (0.92, 0.68)])],
        [("line", [(0.2, 0), (0.15, 0.55), (0.85, 0.55)]), ("line", [(0.75, 0), (0.75, 1)])]],
    5: [[("line", [(0.85, 0), (0.25, 0), (0.2, 0.42)]),
         ("curve", [(0.2, 0.42), (0.55, 0.36), (0.85, 0.55), (0.8, 0.85), (0.5, 1),
                    (0.12, 0.9)])],
        [("curve", [(0.25, 0), (0.2, 0.42), (0.55, 0.36), (0.85, 0.55), (0.8, 0.85), (0.5, 1),
                    (0.12, 0.9)]), ("line", [(0.25, 0), (0.85, 0)])]],
    6: [[("curve", [(0.75, 0.02), (0.4, 0.2), (0.18, 0.6), (0.3, 0.95), (0.62, 1),
                    (0.82, 0.75), (0.6, 0.52), (0.3, 0.58), (0.2, 0.7)])]],
    7: [[("line", [(0.1, 0), (0.9, 0), (0.35, 1)])],
        [("line", [(0.1, 0.05), (0.9, 0), (0.4, 1)]), ("line", [(0.3, 0.5), (0.85, 0.5)])],
        [("line", [(0.1, 0.15), (0.1, 0), (0.9, 0), (0.5, 1)])]],
    8: [[("curve", [(0.5, 0.48), (0.2, 0.3), (0.3, 0.04), (0.7, 0.04), (0.8, 0.3), (0.5, 0.48),
                    (0.15, 0.72), (0.3, 0.98), (0.7, 0.98), (0.85, 0.72), (0.5, 0.48)])]],
    9: [[("curve", [(0.8, 0.25), (0.6, 0.02), (0.28, 0.05), (0.2, 0.3), (0.4, 0.47),
                    (0.72, 0.38), (0.8, 0.25)]), ("line", [(0.8, 0.25), (0.75, 1)])],
        [("curve", [(0.8, 0.25), (0.6, 0.02), (0.28, 0.05), (0.2, 0.3), (0.4, 0.47),
                    (0.72, 0.38), (0.8, 0.25), (0.75, 0.7), (0.5, 1), (0.2, 0.9)])]],
}


def catmull_rom(points: np.ndarray, steps: int = 12) -> np.ndarray:
    """A smooth curve (m, 2) through points (k, 2), ends repeated."""
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, steps, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    return np.concatenate(out + [points[-1:]])


def pen_strokes(digit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One person's strokes of ``digit`` in the unit box: a random style, slant, width, wobble.

    Returns:
        Polylines (m, 2), x right and y down, roughly within [0, 1].
    """
    styles = STROKES[digit]
    style = styles[rng.integers(len(styles))]
    slant, width = rng.uniform(-0.25, 0.3), rng.uniform(0.7, 1.15)
    angle = np.deg2rad(rng.uniform(-8, 8))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lines = []
    for kind, points in style:
        pts = np.array(points) + rng.normal(0, 0.025, (len(points), 2))   # (k, 2) wobble
        pts = catmull_rom(pts) if kind == "curve" else pts
        x, y = (pts[:, 0] - 0.5) * width, pts[:, 1] - 0.5
        pts = np.stack([x + slant * -y, y], -1) @ rotate.T + 0.5      # slanted: tops lean right
        lines.append(pts)
    return lines


def draw_strokes(lines: list[np.ndarray], size: tuple[int, int], box: tuple[float, float, float],
                 pen: float, supersample: int = 2) -> np.ndarray:
    """Ink (h, w) in [0, 1]: the unit-box lines scaled to ``box`` (left, top, height) and drawn
    with a round pen ``pen`` pixels wide, anti-aliased by supersampling."""
    s = supersample
    img = Image.new("L", (size[0] * s, size[1] * s), 0)
    d = ImageDraw.Draw(img)
    left, top, height = box
    for pts in lines:
        xy = [((left + x * height) * s, (top + y * height) * s) for x, y in pts]
        d.line(xy, fill=255, width=max(1, round(pen * s)), joint="curve")
        r = pen * s / 2
        for x, y in (xy[0], xy[-1]):                                    # round caps
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
    small = img.resize(size, Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255


def enlarge(ink: np.ndarray, height: int) -> np.ndarray:
    """ink (h, w) in [0, 1] resampled bicubically to ``height`` rows, aspect kept, clipped."""
    h, w = ink.shape
    img = Image.fromarray(ink.astype(np.float32), "F").resize(
        (max(1, round(w * height / h)), height), Image.BICUBIC)
    return np.clip(np.asarray(img), 0, 1)


def crop(ink: np.ndarray, margin: int = 0) -> np.ndarray:
    """The ink's bounding box (plus ``margin`` zero pixels each side)."""
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    return np.pad(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], margin)


@dataclass(frozen=True)
class Font:
    path: str
    name: str
    tags: tuple[str, ...]


def machine_fonts() -> list[Font]:
    """Scalable fonts fc-list names, sorted by file; none when fc-list is missing."""
    try:
        listing = subprocess.run(["fc-list", "-f", "%{file}\t%{family[0]}\t%{style[0]}\n"],
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        print("fc-list not found: no typeset digits", file=sys.stderr)
        return []
    fonts = {}
    for line in listing.splitlines():
        path, family, style = (line.split("\t") + ["", ""])[:3]
        if not path.lower().endswith((".ttf", ".otf", ".ttc")):
            continue
        text = f"{family} {style} {Path(path).stem}".lower()
        tags = [t for t, words in [("mono", ("mono",)), ("condensed", ("condensed", "narrow")),
                                   ("serif", ("serif",)), ("light", ("light",)),
                                   ("bold", ("bold",)), ("italic", ("italic", "oblique"))]
                if any(w in text for w in words)
                and not (t == "serif" and ("sans" in text or "mono" in text))]
        if not {"bold", "italic", "light"} & set(tags):
            tags.append("regular")
        fonts[path] = Font(path, f"{family} {style}".strip(), tuple(tags))
    return [fonts[p] for p in sorted(fonts)]


def glyph(font: Font, digit: int, height: int = GLYPH) -> np.ndarray:
    """The digit typeset in ``font``, cropped, white ink (h, w) about ``height`` rows."""
    f = ImageFont.truetype(font.path, round(height * 1.4))
    img = Image.new("L", (height * 2, height * 2), 0)
    ImageDraw.Draw(img).text((height // 4, height // 8), str(digit), fill=255, font=f)
    return crop(np.asarray(img, dtype=np.float32) / 255)


def mnist_ink(image: np.ndarray) -> np.ndarray:
    """An MNIST digit (28, 28) uint8 as high-resolution ink, cropped."""
    return crop(enlarge(image / 255.0, 28 * GLYPH // 20))


def save_page(page: np.ndarray, path: Path, quality: int | None = None) -> Path:
    """Luminance (h, w) in [0, 1] as an 8-bit grey PNG, or a JPEG at ``quality``."""
    img = Image.fromarray(np.round(np.clip(page, 0, 1) * 255).astype(np.uint8), "L")
    img.save(path, **({"format": "JPEG", "quality": quality} if quality else {}))
    return path


def on_paper(ink: np.ndarray, size: tuple[int, int], at: tuple[int, int],
             paper: float = 1.0, darkness: float = 1.0) -> np.ndarray:
    """Dark ink placed at (row, col) on a page (rows, cols) of brightness ``paper``."""
    page = np.zeros(size, dtype=np.float32)
    h, w = min(ink.shape[0], size[0] - at[0]), min(ink.shape[1], size[1] - at[1])
    page[at[0]:at[0] + h, at[1]:at[1] + w] = ink[:h, :w]
    return paper * (1 - darkness * page)


def centred(ink: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """Dark ink on white, centred with ``margin`` of its long side around it."""
    m = int(margin * max(ink.shape))
    return on_paper(ink, (ink.shape[0] + 2 * m, ink.shape[1] + 2 * m), (m, m))


def shear(ink: np.ndarray, k: float) -> np.ndarray:
    """Slant: rows shifted by k x height above the middle (k > 0 leans right), canvas widened."""
    h, w = ink.shape
    pad = int(abs(k) * h / 2) + 2
    img = Image.fromarray(np.pad(ink, ((0, 0), (pad, pad))).astype(np.float32), "F")
    out = img.transform(img.size, Image.AFFINE, (1, k, -k * h / 2, 0, 1, 0), Image.BILINEAR)
    return crop(np.clip(np.asarray(out), 0, 1))


def filtered(ink: np.ndarray, f: ImageFilter.Filter) -> np.ndarray:
    """ink (h, w) in [0, 1] through a Pillow filter, as 8-bit grey."""
    img = Image.fromarray(np.round(ink * 255).astype(np.uint8), "L").filter(f)
    return np.asarray(img, dtype=np.float32) / 255


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The one-pixel-wide centre lines of a binary drawing (h, w) (Zhang and Suen 1984)."""
    m = np.pad(mask, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            c = m[1:-1, 1:-1]
            p = [m[:-2, 1:-1], m[:-2, 2:], m[1:-1, 2:], m[2:, 2:], m[2:, 1:-1],   # N NE E SE S
                 m[2:, :-2], m[1:-1, :-2], m[:-2, :-2]]                             # SW W NW
            n = sum(q.astype(int) for q in p)
            turns = sum((p[i] == 0) & (p[(i + 1) % 8] == 1) for i in range(8))
            n_, e, s, w = p[0], p[2], p[4], p[6]
            away = ((n_ * e * s == 0) & (e * s * w == 0) if step == 0
                    else (n_ * e * w == 0) & (n_ * s * w == 0))
            gone = (c == 1) & (n >= 2) & (n <= 6) & (turns == 1) & away
            if gone.any():
                c[gone] = 0                                  # a view: m changes too
                changed = True
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def thicken(ink: np.ndarray, width: float) -> np.ndarray:
    """Strokes grown by a max filter to about ``width`` px wide (by a pixel or two if wider)."""
    k = max(2 * round((width - stroke_width(ink > 0.5)) / 2) + 1, 3)   # at least a pixel
    return crop(filtered(np.pad(ink, k), ImageFilter.MaxFilter(k)))


def thin_pen(ink: np.ndarray, width: float) -> np.ndarray:
    """The drawing retraced along its centre lines with a pen ``width`` px wide."""
    k = 2 * round(width / 2) + 1
    lines = skeleton(np.pad(ink, k) > 0.5).astype(np.float32)
    return crop(filtered(filtered(lines, ImageFilter.MaxFilter(k)), ImageFilter.BoxBlur(1)))


# Each variation: (ink at GLYPH rows, rng, path stem) -> the image file written.
def thick(ink, rng, stem):
    return save_page(centred(thicken(ink, rng.uniform(0.17, 0.22) * GLYPH)),
                     stem.with_suffix(".png"))


def thin(ink, rng, stem):
    return save_page(centred(thin_pen(ink, rng.uniform(0.025, 0.04) * GLYPH)),
                     stem.with_suffix(".png"))


def offset(ink, rng, stem):
    small = enlarge(ink, int(rng.integers(50, 90)))                      # on a 480x640 page
    at = (int(rng.integers(0, 480 - small.shape[0])), int(rng.integers(0, 640 - small.shape[1])))
    return save_page(on_paper(small, (480, 640), at), stem.with_suffix(".png"))


def slant_left(ink, rng, stem):
    return save_page(centred(shear(ink, -SLANT)), stem.with_suffix(".png"))


def slant_right(ink, rng, stem):
    return save_page(centred(shear(ink, SLANT)), stem.with_suffix(".png"))


def small(ink, rng, stem):
    tiny = enlarge(ink, int(rng.integers(14, 22)))                       # a few pixels tall
    at = (int(rng.integers(20, 100)), int(rng.integers(20, 150)))
    return save_page(on_paper(tiny, (160, 220), at), stem.with_suffix(".png"))


def large(ink, rng, stem):
    return save_page(1 - np.pad(ink, 2), stem.with_suffix(".png"))       # filling the page


def pencil(ink, rng, stem):
    paper = rng.uniform(0.55, 0.75)
    page = on_paper(enlarge(ink, 120), (200, 200), (40, int(rng.integers(20, 60))), paper,
                    darkness=rng.uniform(0.3, 0.45))
    grain = rng.normal(0, 0.015, page.shape)
    return save_page(page + grain, stem.with_suffix(".png"))


def photo(ink, rng, stem):
    tilted = Image.fromarray(np.round(np.pad(ink, 20) * 255).astype(np.uint8), "L").rotate(
        rng.uniform(-6, 6), Image.BILINEAR)
    blurred = tilted.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 3.5)))
    ink = crop(np.asarray(blurred, dtype=np.float32) / 255)
    page = on_paper(ink, (260, 260), (40, 40), darkness=0.75)
    rows, cols = np.mgrid[0:260, 0:260] / 260
    light = 0.95 - rng.uniform(0.1, 0.3) * cols - rng.uniform(0, 0.15) * rows
    return save_page(page * light + rng.normal(0, 0.035, page.shape), stem.with_suffix(".jpg"),
                     quality=70)


VARIATIONS: dict[str, Callable] = {
    "thick": thick, "thin": thin, "off-centre": offset, "slant-left": slant_left,
    "slant-right": slant_right, "small": small, "large": large, "pencil-grey": pencil,
    "photo": photo,
}


def pen_canvas(digit: int, rng: np.random.Generator, path: Path) -> Path:
    """A drawing on the serve page's pad: 280x280, a 20 px pen, black on white, PNG."""
    height = rng.uniform(120, 230)
    left = rng.uniform(10, PAD - 0.8 * height - 10)
    top = rng.uniform(10, PAD - height - 10)
    ink = draw_strokes(pen_strokes(digit, rng), (PAD, PAD), (left, top, height), BRUSH)
    Image.fromarray(np.round((1 - ink) * 255).astype(np.uint8), "L").convert("RGB").save(path)
    return path


def pen_ink(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A pen drawing as high-resolution ink, cropped; the pen ~9% of the digit's height."""
    return crop(draw_strokes(pen_strokes(digit, rng), (2 * GLYPH, 2 * GLYPH),
                             (GLYPH / 2, GLYPH / 2, GLYPH), 0.09 * GLYPH))


def make_samples(folder: Path, images: np.ndarray, labels: np.ndarray, fonts: list[Font],
                 seed: int) -> list[Sample]:
    """Write every image into ``folder``; the same seed and fonts make the same files."""
    rng = np.random.default_rng(seed)
    samples = []
    for j, i in enumerate(rng.choice(len(images), N_DRAWN, replace=False)):
        for kind, make in RENDERINGS.items():
            path = folder / f"drawn-{j:03d}-{kind}{SUFFIX.get(kind, '.png')}"
            samples.append(Sample(make(images[i] / 255.0, path), int(labels[i]), "drawn",
                                  (kind,)))
    for digit in range(10):
        for j in range(PEN_PER_DIGIT):
            path = folder / f"drawn-pen-{digit}-{j:02d}.png"
            samples.append(Sample(pen_canvas(digit, rng, path), digit, "drawn", ("serve-pen",)))
    for k, font in enumerate(fonts):
        for digit in range(10):
            path = folder / f"typeset-{k:02d}-{digit}.png"
            samples.append(Sample(save_page(centred(enlarge(glyph(font, digit), 48)), path),
                                  digit, "typeset", font.tags))
    by_digit = {d: np.flatnonzero(labels == d) for d in range(10)}
    for kind, vary in VARIATIONS.items():
        for digit in range(10):
            for j in range(VARIANTS_EACH):
                sources = {"mnist": lambda: mnist_ink(images[rng.choice(by_digit[digit])]),
                           "pen": lambda: pen_ink(digit, rng)}
                if fonts:
                    sources["font"] = lambda: glyph(fonts[rng.integers(len(fonts))], digit)
                for name, make in sources.items():
                    ink = enlarge(make(), GLYPH)
                    stem = folder / f"var-{kind}-{digit}-{j}-{name}"
                    samples.append(Sample(vary(ink, rng, stem), digit, "variations", (kind,)))
    return samples


def prepare(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """Each sample read as ``mlp predict`` reads it: pixels uint8 (n, 28, 28) (zeros where
    refused) and whether it was read (n,)."""
    pixels = np.zeros((len(samples), 28, 28), dtype=np.uint8)
    read = np.zeros(len(samples), dtype=bool)
    for i, s in enumerate(samples):
        try:
            pixels[i], read[i] = load_digit(s.path), True
        except ImageError as exc:
            print(f"refused: {exc}", file=sys.stderr)
    return pixels, read


def score(correct: np.ndarray, samples: list[Sample]) -> list[dict]:
    """Accuracy rows: each (group, tag), each group, and all images."""
    rows = []
    for group in dict.fromkeys(s.group for s in samples):
        in_group = [i for i, s in enumerate(samples) if s.group == group]
        for tag in dict.fromkeys(t for i in in_group for t in samples[i].tags):
            idx = [i for i in in_group if tag in samples[i].tags]
            rows.append({"group": group, "kind": tag, "n": len(idx),
                         "accuracy": float(correct[idx].mean())})
        rows.append({"group": group, "kind": "all", "n": len(in_group),
                     "accuracy": float(correct[in_group].mean())})
    rows.append({"group": "all", "kind": "all", "n": len(samples),
                 "accuracy": float(correct.mean())})
    return rows


def describe_model(path: Path, meta: dict) -> dict:
    cfg = meta.get("config", {})
    keys = ("hidden", "epochs", "lr", "augment", "seed")
    return {"path": str(path), "sizes": meta.get("sizes"), "epoch": meta.get("epoch"),
            **{k: cfg[k] for k in keys if k in cfg},
            "val_accuracy": (meta.get("metrics") or {}).get("val_accuracy")}


def table(results: list[dict]) -> str:
    names = [Path(r["model"]["path"]).stem for r in results]
    lines = ["| group | kind | n | " + " | ".join(names) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(names)]
    for k, row in enumerate(results[0]["rows"]):
        cells = [f"{100 * r['rows'][k]['accuracy']:.1f}%" for r in results]
        bold = "**" if row["kind"] == "all" else ""
        lines.append(f"| {bold}{row['group']}{bold} | {row['kind']} | {row['n']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="a checkpoint; give several to compare them on the same images")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "mnist",
                        help="MNIST's files (the drawn and variation digits come from its "
                             "test set)")
    parser.add_argument("--seed", type=int, default=0, help="which images are made")
    parser.add_argument("--keep", type=Path, help="write the images here (kept) to look at them")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)

    models = [(p, checkpoint.load(p)) for p in args.model]   # fail early on a bad file
    images, labels = DataSource(args.data_dir).load("test", flat=False)
    fonts = machine_fonts()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        samples = make_samples(folder, images, labels, fonts, args.seed)
        made = time.perf_counter()
        pixels, read = prepare(samples)
    prepared = time.perf_counter()
    truth = np.array([s.digit for s in samples])
    results = []
    for path, model in models:
        said = predict_pixels(model, pixels).argmax(axis=1)               # (n,)
        results.append({"model": describe_model(path, model.meta),
                        "rows": score(read & (said == truth), samples)})
    report = {"machine": machine(), "seed": args.seed, "images": len(samples),
              "refused": int((~read).sum()), "fonts": [f.name for f in fonts],
              "seconds": {"make": made - t0, "prepare": prepared - made}, "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(table(results))
    print()
    for r in results:
        print(f"{Path(r['model']['path']).stem}: {json.dumps(r['model'])}")
    print(f"\n{len(samples)} images (seed {args.seed}), {report['refused']} refused by the "
          f"preparation; {len(fonts)} fonts; made in {made - t0:.1f} s, prepared in "
          f"{prepared - made:.1f} s")
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, numpy {m['numpy']}, BLAS "
          f"{json.dumps(m['blas'])}")


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, DataError) as exc:  # a missing or bad file: one line
        sys.exit(f"{Path(__file__).name}: {exc}")

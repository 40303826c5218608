"""Training-set distortions, drawn per batch and applied with bilinear sampling, in NumPy.

- affine: rotation, scale, shear and translation about the image centre;
- elastic (Simard, Steinkraus and Platt 2003): a random displacement field,
  uniform in [-1, 1] per pixel and axis, smoothed by a Gaussian of width
  ``sigma`` (zero outside the image) and scaled by ``alpha``; added to a milder
  affine distortion;
- garment: a left-right mirror image with probability ``flip_p`` (a mirrored garment is
  the same garment; rotated or sheared ones, as for digits, cost Fashion-MNIST accuracy);
- garment-erase: mirror images and random erasing (Zhong et al. 2017): with probability
  ``erase_p`` a box of up to ``erase_area`` of the image, of aspect (height / width)
  between 1/3 and 3, set to the background (0).

- mixup (Zhang et al. 2018; the ``mixup`` setting, beside any of these): each batch
  trains on a blend of its images with the same images in another order, the labels
  blended alike.

Shifts are not part of the garment presets: Fashion-MNIST's garments are trimmed, scaled
to fill the frame and centred, and an MLP that sees them shifted by 1-2 pixels (whole or
not) lost 1-2 points of validation accuracy.

Every output pixel samples the input at its own source coordinates
(B, 28, 28); a batch is four gathers (one per neighbour), with no per-image loop. A
mirror image reflects the source columns, so it costs nothing beside the sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .mnist import IMAGE_SIDE as SIDE


@dataclass(frozen=True)
class Distortion:
    """Ranges of the random distortions; each is drawn uniformly in ±range per image
    (the erased box's area in [0, erase_area]), and each probability per image."""

    rotate_deg: float = 0.0    # rotation, degrees
    scale: float = 0.0         # relative change of size (0.1: 0.9x to 1.1x)
    shear: float = 0.0         # horizontal shear factor
    shift_px: float = 0.0      # translation, pixels, per axis
    elastic_alpha: float = 0.0  # elastic displacement scale, pixels; 0: none
    elastic_sigma: float = 4.0  # Gaussian width of the elastic field, pixels
    flip_p: float = 0.0        # probability of a left-right mirror image
    erase_p: float = 0.0       # probability of erasing a box to the background
    erase_area: float = 0.0    # largest erased box, a fraction of the image's area

    def at_strength(self, strength: float) -> Distortion:
        """Every range times ``strength``; the field's width ``elastic_sigma`` and the
        probabilities kept (a mirror image is whole or none; a weaker erasing erases less)."""
        return replace(self, rotate_deg=self.rotate_deg * strength, scale=self.scale * strength,
                       shear=self.shear * strength, shift_px=self.shift_px * strength,
                       elastic_alpha=self.elastic_alpha * strength,
                       erase_area=self.erase_area * strength)


# Config string -> distortion (the ``augment`` key); "none" trains on the digits as they are.
AUGMENTATIONS: dict[str, Distortion | None] = {
    "none": None,
    "affine": Distortion(rotate_deg=12, scale=0.12, shear=0.25, shift_px=2.5),
    "elastic": Distortion(rotate_deg=8, scale=0.08, shear=0.15, shift_px=1.5,
                          elastic_alpha=34, elastic_sigma=4),
    "garment": Distortion(flip_p=0.5),
    "garment-erase": Distortion(flip_p=0.5, erase_p=0.5, erase_area=0.25),
}
ERASE_ASPECT = 3.0  # an erased box's height / width lies in [1/3, 3], log-uniform


def _gaussian_matrix(sigma: float, n: int = SIDE) -> np.ndarray:
    """G (n, n) float32 with f @ G = f smoothed along its last axis by a Gaussian, zero outside."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offsets = np.arange(n)[None, :] - np.arange(n)[:, None]  # j - i, symmetric in use
    inside = np.abs(offsets) <= radius
    return np.where(inside, taps[np.clip(offsets + radius, 0, 2 * radius)], 0).astype(np.float32)


def smooth(field: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Smooth (m, 28, 28) along both axes with G (28, 28): two GEMMs over all rows at once.
    Returns a transposed view of a new array (m, 28, 28)."""
    m = field.shape[0]
    along_cols = np.matmul(field.reshape(-1, SIDE), g)                  # (m·28, 28)
    turned = np.ascontiguousarray(along_cols.reshape(m, SIDE, SIDE).transpose(0, 2, 1))
    along_rows = np.matmul(turned.reshape(-1, SIDE), g, out=along_cols)
    return along_rows.reshape(m, SIDE, SIDE).transpose(0, 2, 1)


def affine_coordinates(theta: np.ndarray, scale: np.ndarray, shear: np.ndarray,
                       shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source rows, cols of each output pixel for per-image affine maps about the centre.

    The output is the input rotated by theta (radians), scaled, sheared along
    columns, then shifted by ``shift`` (n, 2) pixels (rows, cols); all (n,).

    Returns:
        rows, cols float32 (n, 28, 28).
    """
    c = (SIDE - 1) / 2
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale           # output -> input map
    a = np.stack([cos, -sin, sin + shear * cos, cos - shear * sin], -1).astype(np.float32)
    t = (c - shift).astype(np.float32)                                 # (n, 2)
    r = (np.arange(SIDE, dtype=np.float32) - c)[None, :, None]          # (1, 28, 1) centred
    k = (np.arange(SIDE, dtype=np.float32) - c)[None, None, :]          # (1, 1, 28) centred
    col = lambda v: v[:, None, None]                                    # noqa: E731
    rows = col(a[:, 0]) * r + col(a[:, 1]) * k + col(t[:, 0])
    cols = col(a[:, 2]) * r + col(a[:, 3]) * k + col(t[:, 1])
    return rows, cols


@dataclass
class Draws:
    """The random part of a batch's distortions, drawn in the generator's order: angles,
    scales, shears, shifts (n,) each (zeros when a range is 0), the raw elastic field
    (2n, 28, 28) uniform in [0, 1) or None, which images are mirrored (n,) bool (none when
    ``flip_p`` is 0), and each image's erased box (n, 4) (empty when not erased)."""

    theta: np.ndarray
    scale: np.ndarray
    shear: np.ndarray
    shift: np.ndarray          # (n, 2) rows, cols
    field: np.ndarray | None
    flip: np.ndarray           # (n,) bool
    box: np.ndarray            # (n, 4) int: top, left, bottom, right (bottom, right excluded)


def draw(d: Distortion, n: int, rng: np.random.Generator) -> Draws:
    """Everything random about ``n`` images' distortions; cheap (the work is in ``apply``)."""
    def uniform(r: float) -> np.ndarray:
        return rng.uniform(-r, r, n) if r else np.zeros(n)

    theta, scale, shear = np.deg2rad(uniform(d.rotate_deg)), 1 + uniform(d.scale), \
        uniform(d.shear)
    shift = np.stack([uniform(d.shift_px), uniform(d.shift_px)], -1)  # (n, 2)
    field = rng.random((2 * n, SIDE, SIDE), dtype=np.float32) if d.elastic_alpha else None
    flip = rng.random(n) < d.flip_p if d.flip_p else np.zeros(n, bool)
    box = draw_boxes(d, n, rng) if d.erase_p and d.erase_area else np.zeros((n, 4), np.intp)
    return Draws(theta, scale, shear, shift, field, flip, box)


def draw_boxes(d: Distortion, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random erasing's boxes (n, 4) int: top, left, bottom, right (excluded), drawn as
    whether (probability ``erase_p``), area (uniform in [0, erase_area] of the image),
    aspect (log-uniform), then position (uniform over the places the box fits)."""
    erased = rng.random(n) < d.erase_p
    area = rng.uniform(0, d.erase_area, n) * SIDE * SIDE                     # pixels
    aspect = np.exp(rng.uniform(-np.log(ERASE_ASPECT), np.log(ERASE_ASPECT), n))
    place = rng.random((n, 2))                                               # rows, cols
    size = np.stack([np.sqrt(area * aspect), np.sqrt(area / aspect)], -1)    # (n, 2) h, w
    size = np.minimum(np.rint(size), SIDE).astype(np.intp) * erased[:, None]
    start = np.floor(place * (SIDE - size + 1)).astype(np.intp)
    return np.concatenate([start, start + size], -1)


def source_coordinates(d: Distortion, draws: Draws) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates of each output pixel: rows, cols float32 (n, 28, 28)."""
    rows, cols = affine_coordinates(draws.theta, draws.scale, draws.shear, draws.shift)
    if draws.field is not None:
        n = len(draws.theta)
        field = np.multiply(draws.field, 2)
        field -= 1                                                          # [-1, 1] ...
        field = smooth(field, _gaussian_matrix(d.elastic_sigma))            # smoothed ...
        field *= np.float32(d.elastic_alpha)                                # scaled
        rows += field[:n]
        cols += field[n:]
    if draws.flip.any():
        cols[draws.flip] = (SIDE - 1) - cols[draws.flip]     # the mirror image's source
    return rows, cols


def erase(images: np.ndarray, box: np.ndarray) -> np.ndarray:
    """images (n, 28, 28) with each image's box (n, 4) set to 0, in place; returned."""
    k = np.arange(SIDE)
    inside = lambda lo, hi: (k >= box[:, lo, None]) & (k < box[:, hi, None])  # noqa: E731
    images[inside(0, 2)[:, :, None] & inside(1, 3)[:, None, :]] = 0
    return images


def bilinear_sample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """images (n, 28, 28) sampled at (rows, cols) (n, 28, 28), all float32; zero outside
    the image.

    Each output is (1 - fr)·((1 - fc)·p00 + fc·p01) + fr·((1 - fc)·p10 + fc·p11) of its four
    neighbours p, gathered from the image padded with zeros. ``rows`` and ``cols`` must be
    two distinct writable arrays: they are the work space (overwritten), so that few
    batch-sized temporaries are made (fresh ones cost more than the arithmetic).
    """
    n, P = images.shape[0], SIDE + 2
    padded = np.zeros((n, P, P), dtype=images.dtype)                  # a border of zeros
    padded[:, 1:-1, 1:-1] = images
    padded = padded.ravel()
    r = np.clip(np.add(rows, 1, out=rows), 0, SIDE + 0.999, out=rows)  # padded coordinates
    c = np.clip(np.add(cols, 1, out=cols), 0, SIDE + 0.999, out=cols)
    r0, c0 = np.floor(r), np.floor(c)
    fr, fc = np.subtract(r, r0, out=r), np.subtract(c, c0, out=c)  # fractions, in place
    r0 *= P
    r0 += c0                                    # within the image: below 30·30, exact
    index = r0.astype(np.intp)
    index += (np.arange(n) * P * P)[:, None, None]                        # top-left neighbour
    gc = np.subtract(1, fc, out=c0)                                       # 1 - fc
    top = padded.take(index)
    top *= gc
    right = padded[1:].take(index)
    right *= fc
    top += right                                                          # row r0
    bottom = padded[P:].take(index)
    bottom *= gc
    right = np.take(padded[P + 1:], index, out=right)
    right *= fc
    bottom += right                                                       # row r0 + 1
    top *= np.subtract(1, fr, out=r0)
    bottom *= fr
    top += bottom
    return top


def apply(X: np.ndarray, d: Distortion, draws: Draws) -> np.ndarray:
    """The batch X (n, 784) in [0, 1] distorted as ``draws`` say; a new array, same shape
    and dtype. No randomness, and ``draws`` left as they are: safe on a worker thread."""
    n = X.shape[0]
    rows, cols = source_coordinates(d, draws)
    out = bilinear_sample(X.reshape(n, SIDE, SIDE), rows, cols)
    if draws.box.any():
        erase(out, draws.box)
    return np.clip(out, 0, 1, out=out).reshape(n, SIDE * SIDE)


def distort(X: np.ndarray, d: Distortion, rng: np.random.Generator) -> np.ndarray:
    """A randomly distorted copy of the batch X (n, 784) in [0, 1]; same shape and dtype."""
    return apply(X, d, draw(d, X.shape[0], rng))


def mixup(X: np.ndarray, alpha: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, float]:
    """Mixup (Zhang et al. 2018) of the batch X (n, 784): λ X + (1 - λ) X[perm], with
    λ ~ Beta(α, α) for the batch and perm a random order of its rows.

    Returns:
        the mixed batch (a new array, X's dtype), perm (n,) and λ; the targets mix alike,
        λ Y + (1 - λ) Y[perm] (``softmax_cross_entropy``'s ``mixed``).
    """
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(X.shape[0])
    mixed = np.multiply(X, X.dtype.type(lam))
    mixed += X[perm] * X.dtype.type(1 - lam)
    return mixed, perm, lam

"""Distortions: exact identity, shifts move the centre of mass, range, determinism, shapes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mnist_mlp import augment

from .tiny_data import synthetic_digits


def _batch(n=16):
    images, _ = synthetic_digits(n, seed=5)
    return (images.reshape(n, -1) / np.float32(255)).astype(np.float32)


def _identity(n):
    return augment.affine_coordinates(np.zeros(n), np.ones(n), np.zeros(n), np.zeros((n, 2)))


def test_identity_returns_the_input_exactly():
    X = _batch()
    rows, cols = _identity(len(X))
    out = augment.bilinear_sample(X.reshape(-1, 28, 28), rows, cols)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(len(X), -1), X)
    still = augment.Distortion()  # all ranges zero
    np.testing.assert_array_equal(augment.distort(X, still, np.random.default_rng(0)), X)


def _bilinear_reference(image, r, c):
    """One pixel of ``bilinear_sample``, written out: the four neighbours of (r, c) mixed
    by the fractions, pixels outside the image zero, coordinates clamped a pixel beyond."""
    def pixel(i, j):
        return float(image[i, j]) if 0 <= i < 28 and 0 <= j < 28 else 0.0

    r, c = min(max(r, -1.0), 27.999), min(max(c, -1.0), 27.999)
    i, j = int(np.floor(r)), int(np.floor(c))
    fr, fc = r - i, c - j
    return ((1 - fr) * ((1 - fc) * pixel(i, j) + fc * pixel(i, j + 1))
            + fr * ((1 - fc) * pixel(i + 1, j) + fc * pixel(i + 1, j + 1)))


def test_bilinear_sample_is_the_four_neighbour_formula():
    X = _batch(4).reshape(-1, 28, 28)
    rng = np.random.default_rng(11)
    rows = rng.uniform(-4, 32, X.shape).astype(np.float32)   # inside, on and off the edges
    cols = rng.uniform(-4, 32, X.shape).astype(np.float32)
    out = augment.bilinear_sample(X, rows.copy(), cols.copy())
    expected = np.array([[[_bilinear_reference(X[m], rows[m, i, j], cols[m, i, j])
                           for j in range(28)] for i in range(28)] for m in range(len(X))])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_every_image_of_a_big_batch_samples_its_own_pixels():
    """Flat indices past 2^24 (a batch of 19,000 padded images) stay exact."""
    n = 19_000                                      # every pixel its own value, exactly
    X = np.arange(n * 784, dtype=np.float32).reshape(n, 28, 28) / np.float32(2**24)
    np.testing.assert_array_equal(augment.bilinear_sample(X, *_identity(n)), X)


def test_distortions_at_a_strength():
    d = augment.AUGMENTATIONS["elastic"]
    half = d.at_strength(0.5)
    assert (half.rotate_deg, half.scale, half.shear, half.shift_px, half.elastic_alpha) == (
        d.rotate_deg / 2, d.scale / 2, d.shear / 2, d.shift_px / 2, d.elastic_alpha / 2)
    assert half.elastic_sigma == d.elastic_sigma
    X = _batch(8)
    np.testing.assert_array_equal(augment.distort(X, d.at_strength(0),
                                                  np.random.default_rng(1)), X)


def _centre_of_mass(images):
    images = images.reshape(-1, 28, 28).astype(np.float64)
    idx = np.arange(28)
    mass = images.sum(axis=(1, 2))
    return np.stack([images.sum(axis=2) @ idx / mass, images.sum(axis=1) @ idx / mass], -1)


@pytest.mark.parametrize("shift", [(2.0, -3.0), (0.5, 1.25)])
def test_pure_shift_moves_the_centre_of_mass(shift):
    X = np.zeros((1, 28, 28), np.float32)
    X[0, 10:16, 11:15] = 1.0                                  # a block away from the edges
    n = 1
    rows, cols = augment.affine_coordinates(np.zeros(n), np.ones(n), np.zeros(n),
                                            np.array([shift]))
    out = augment.bilinear_sample(X, rows, cols)
    moved = _centre_of_mass(out) - _centre_of_mass(X)
    np.testing.assert_allclose(moved[0], shift, atol=1e-5)
    assert out.sum() == pytest.approx(X.sum(), rel=1e-5)       # nothing pushed off the field


def test_rotation_by_90_degrees_is_exact():
    X = _batch(3).reshape(-1, 28, 28)
    rows, cols = augment.affine_coordinates(np.full(3, np.pi / 2), np.ones(3), np.zeros(3),
                                            np.zeros((3, 2)))
    out = augment.bilinear_sample(X, rows, cols)
    expected = np.rot90(X, k=-1, axes=(1, 2))  # positive theta turns clockwise on screen
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(n for n, d in augment.AUGMENTATIONS.items() if d))
def test_distortions_stay_in_range_and_repeat_with_the_seed(name):
    X = _batch(32)
    d = augment.AUGMENTATIONS[name]
    a = augment.distort(X, d, np.random.default_rng(7))
    b = augment.distort(X, d, np.random.default_rng(7))
    c = augment.distort(X, d, np.random.default_rng(8))
    assert a.shape == X.shape and a.dtype == X.dtype
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, X)
    # a distortion, not a scramble: most ink stays ink
    assert np.corrcoef(a.ravel(), X.ravel())[0, 1] > 0.3


def test_elastic_field_is_smooth():
    g = augment._gaussian_matrix(4.0)
    field = np.random.default_rng(0).uniform(-1, 1, (4, 28, 28)).astype(np.float32)
    smoothed = augment.smooth(field, g)
    direct = np.einsum("ij,mjk,kl->mil", g, field, g)        # G f G (G is symmetric)
    np.testing.assert_allclose(smoothed, direct, rtol=1e-4, atol=1e-6)
    rough = np.abs(np.diff(field, axis=2)).mean()
    assert np.abs(np.diff(smoothed, axis=2)).mean() < rough / 10


@pytest.mark.parametrize("name", sorted(n for n, d in augment.AUGMENTATIONS.items() if d))
def test_draws_then_apply_is_distort(name):
    """The random part drawn first (in the generator's order), the work applied later."""
    X, d = _batch(8), augment.AUGMENTATIONS[name]
    rng, again = np.random.default_rng(3), np.random.default_rng(3)
    draws = augment.draw(d, len(X), again)
    assert rng.bit_generator.state != again.bit_generator.state
    before = copy.deepcopy(draws)
    np.testing.assert_array_equal(augment.distort(X, d, rng), augment.apply(X, d, draws))
    for name, value in vars(before).items():                          # draws left alone
        assert (value is None and getattr(draws, name) is None) or np.array_equal(
            value, getattr(draws, name)), name
    assert rng.bit_generator.state == again.bit_generator.state     # apply draws nothing
    np.testing.assert_array_equal(augment.apply(X, d, draws), augment.apply(X, d, draws))
    assert (draws.field is None) == (d.elastic_alpha == 0)
    assert draws.theta.shape == draws.scale.shape == draws.shear.shape == (8,)
    assert draws.shift.shape == (8, 2)

"""Distortions: exact identity, shifts move the centre of mass, range, determinism, shapes,
draws of both signs; garments' mirror images, shifts and erased boxes, and an exact resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mnist_mlp import augment
from mnist_mlp.config import resolve
from mnist_mlp.network import MLP
from mnist_mlp.train import Trainer, TrainState

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
    assert draws.flip.shape == (8,) and draws.flip.dtype == bool
    assert draws.box.shape == (8, 4)


# ---------------------------------------------------------------- the draws

RANGES = {"theta": "rotate_deg", "scale": "scale", "shear": "shear", "shift": "shift_px"}


@pytest.mark.parametrize("name", sorted(n for n, d in augment.AUGMENTATIONS.items()
                                         if d and any(getattr(d, s) for s in RANGES.values())))
def test_every_range_is_drawn_on_both_sides_of_zero(name):
    """±range means both signs, out to the range's ends, centred on nothing distorted."""
    d = augment.AUGMENTATIONS[name]
    draws = augment.draw(d, 4000, np.random.default_rng(2))
    for key, setting in RANGES.items():
        if not (r := getattr(d, setting)):
            continue
        r = np.deg2rad(r) if key == "theta" else r
        values = getattr(draws, key) - (1 if key == "scale" else 0)
        for column in values.reshape(len(values), -1).T:            # shift: rows, cols
            assert column.min() < -0.95 * r and column.max() > 0.95 * r, key
            assert np.all(np.abs(column) <= r), key
            assert abs(column.mean()) < 0.05 * r, key


def _block(n):
    """n images of one off-centre block (its mirror image differs), away from the edges."""
    X = np.zeros((n, 28, 28), np.float32)
    X[:, 9:17, 7:13] = np.linspace(0.2, 1, 6, dtype=np.float32)
    return X.reshape(n, -1)


def test_a_mirror_image_is_exact():
    X = _batch(8)
    mirrored = augment.distort(X, augment.Distortion(flip_p=1), np.random.default_rng(0))
    np.testing.assert_array_equal(mirrored.reshape(-1, 28, 28), X.reshape(-1, 28, 28)[:, :, ::-1])


def test_images_are_mirrored_as_drawn_and_about_half_of_them():
    X, d = _batch(400), augment.Distortion(flip_p=0.5)
    draws = augment.draw(d, len(X), np.random.default_rng(4))
    assert 160 < draws.flip.sum() < 240
    out = augment.apply(X, d, draws).reshape(-1, 28, 28)
    images = X.reshape(-1, 28, 28)
    np.testing.assert_array_equal(out[draws.flip], images[draws.flip][:, :, ::-1])
    np.testing.assert_array_equal(out[~draws.flip], images[~draws.flip])


def test_garment_shifts_move_the_mass_by_the_drawn_amount():
    """Shifted images (mirrored or not) keep their ink, moved by each image's own shift."""
    d = augment.Distortion(shift_px=3, flip_p=0.5)
    X = _block(64)
    draws = augment.draw(d, len(X), np.random.default_rng(9))
    assert draws.flip.any() and not draws.flip.all()
    out = augment.apply(X, d, draws)
    unshifted = X.reshape(-1, 28, 28).copy()
    unshifted[draws.flip] = unshifted[draws.flip][:, :, ::-1]
    moved = _centre_of_mass(out) - _centre_of_mass(unshifted)
    np.testing.assert_allclose(moved, draws.shift, atol=1e-4)
    np.testing.assert_allclose(out.sum(axis=1), X.sum(axis=1), rtol=1e-5)


def test_erasing_erases_the_drawn_box_and_nothing_else():
    d = augment.Distortion(erase_p=0.5, erase_area=0.4)
    n = 2000
    X = np.full((n, 784), 0.75, np.float32)
    draws = augment.draw(d, n, np.random.default_rng(6))
    out = augment.apply(X, d, draws).reshape(n, 28, 28)
    top, left, bottom, right = draws.box.T
    expected = np.full((n, 28, 28), 0.75, np.float32)
    for m in range(n):
        expected[m, top[m]:bottom[m], left[m]:right[m]] = 0
    np.testing.assert_array_equal(out, expected)
    h, w = bottom - top, right - left
    erased = h * w > 0
    assert 0.45 < erased.mean() < 0.55                     # erase_p of the images
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 28).all() and (right <= 28).all()
    assert (h * w).max() <= 0.4 * 784 * 1.2                # up to erase_area (sides rounded)
    assert (h * w)[erased].max() > 0.3 * 784               # ... and all of it
    aspect = h[erased & (h * w > 50)] / w[erased & (h * w > 50)]
    assert aspect.min() < 0.5 and aspect.max() > 2 and (aspect > 1 / 4).all() and (
        aspect < 4).all()
    assert (top[erased] > 14).any() and (bottom[erased] < 14).any()  # anywhere it fits
    assert (left[erased] > 14).any() and (right[erased] < 14).any()


def test_garment_draws_come_from_the_generator_in_their_order():
    """Every draw from the generator handed in, in the documented order (so a resumed run
    repeats them), none from numpy's global state."""
    d, n = augment.Distortion(shift_px=2, flip_p=0.5, erase_p=0.5, erase_area=0.25), 50
    np.random.seed(1)
    global_state = np.random.get_state()[1].copy()
    draws = augment.draw(d, n, rng := np.random.default_rng(12))
    assert (np.random.get_state()[1] == global_state).all()
    again = np.random.default_rng(12)
    shift = np.stack([again.uniform(-d.shift_px, d.shift_px, n),
                      again.uniform(-d.shift_px, d.shift_px, n)], -1)
    flip = again.random(n) < d.flip_p
    erased = again.random(n) < d.erase_p
    again.uniform(size=n), again.uniform(size=n), again.random((n, 2))  # area, aspect, place
    assert rng.bit_generator.state == again.bit_generator.state
    np.testing.assert_array_equal(draws.shift, shift)
    np.testing.assert_array_equal(draws.flip, flip)
    boxed = (draws.box[:, 2] > draws.box[:, 0]) & (draws.box[:, 3] > draws.box[:, 1])
    assert boxed[~erased].sum() == 0 and boxed[erased].mean() > 0.8  # some round to nothing
    assert not (draws.theta.any() or draws.shear.any()) and (draws.scale == 1).all()


def test_garment_distortions_at_a_strength():
    """Ranges scale (the shifts exactly, the erased area with them); probabilities stay."""
    d = augment.Distortion(shift_px=2, flip_p=0.5, erase_p=0.5, erase_area=0.25)
    half = d.at_strength(0.5)
    assert (half.shift_px, half.erase_area) == (d.shift_px / 2, d.erase_area / 2)
    assert (half.flip_p, half.erase_p) == (d.flip_p, d.erase_p)
    full = augment.draw(d, 3000, np.random.default_rng(5))
    weak = augment.draw(half, 3000, np.random.default_rng(5))     # the same stream
    np.testing.assert_allclose(weak.shift, full.shift / 2, rtol=1e-12)
    np.testing.assert_array_equal(weak.flip, full.flip)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])       # noqa: E731
    assert area(weak.box).sum() / area(full.box).sum() == pytest.approx(0.5, abs=0.05)
    X = _batch(16)                                  # at strength 0: mirror images only
    none = augment.apply(X, d.at_strength(0), draws := augment.draw(
        d.at_strength(0), 16, np.random.default_rng(3)))
    assert draws.flip.any() and not draws.box.any()
    images = X.reshape(-1, 28, 28)
    expected = np.where(draws.flip[:, None, None], images[:, :, ::-1], images)
    np.testing.assert_array_equal(none.reshape(-1, 28, 28), expected)


@pytest.mark.parametrize("stop_after", [3, 11])
def test_a_garment_run_stopped_mid_epoch_resumes_bit_for_bit(stop_after):
    """Mirror images and erased boxes come from the run's generator, whose state a run
    saves: stopped after any step and resumed, the run ends as an uninterrupted one."""
    images, labels = synthetic_digits(300, seed=1)
    X, y = images.reshape(300, -1).astype(np.float32) / 255, labels.astype(np.int64)
    cfg = resolve({"hidden": (16,), "epochs": 2, "val_size": 50, "batch_size": 32,
                   "augment": "garment-erase", "augment_end": 0.2, "dropout": (0.3,)})

    def fit(trainer, should_stop=lambda: False):
        return trainer.fit(X[:250], y[:250], (X[250:], y[250:]), should_stop=should_stop)

    fit(whole := Trainer(cfg, MLP(cfg.sizes, seed=0), 250))
    calls = iter(range(1000))
    stopped = Trainer(cfg, MLP(cfg.sizes, seed=0), 250)
    assert fit(stopped, lambda: next(calls) == stop_after) == "stopped"
    state = TrainState.from_meta(copy.deepcopy(stopped.state.to_meta()), stopped.state.order,
                                 250, 32)
    params = [p.copy() for p in stopped.net.params]
    again = Trainer(cfg, MLP.from_params(params[:2], params[2:]), 250, state)
    again.optimizer.load_state_dict(copy.deepcopy(stopped.optimizer.state_dict()))
    fit(again)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(whole.net.params, again.net.params))


def test_mixup_blends_each_image_with_another_of_the_batch():
    X = _batch(64)
    mixed, perm, lam = augment.mixup(X, 0.3, np.random.default_rng(2))
    assert mixed.dtype == X.dtype and mixed.shape == X.shape
    assert sorted(perm) == list(range(64)) and 0 < lam < 1
    np.testing.assert_allclose(mixed, lam * X + (1 - lam) * X[perm], atol=1e-6)
    again = augment.mixup(X, 0.3, np.random.default_rng(2))
    assert again[0].tobytes() == mixed.tobytes() and again[2] == lam
    lams = np.array([augment.mixup(X[:2], 0.3, np.random.default_rng(s))[2] for s in range(400)])
    assert np.mean(lams) == pytest.approx(0.5, abs=0.05)       # Beta(α, α): mean 1/2,
    assert np.mean(np.minimum(lams, 1 - lams)) < 0.2    # near 0 or 1 more than uniform (0.25)

"""explain.py: saliency maps are the gradient of log P[c] per pixel, checked numerically."""

from __future__ import annotations

import numpy as np

from mnist_mlp.explain import log_probability_gradient, saliency
from mnist_mlp.network import MLP, Committee, log_softmax


def _log_p(net: MLP, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return log_softmax(net.logits(X))[np.arange(len(X)), classes]


def test_the_gradient_of_log_p_matches_centred_differences():
    rng = np.random.default_rng(3)
    net = MLP([784, 24, 12, 10], seed=1, dtype=np.float64)
    X = rng.random((3, 784))
    classes = np.array([2, 7, 7])
    grad = log_probability_gradient(net, X, classes)
    eps = 1e-6
    for i in range(3):
        for j in rng.choice(784, 25, replace=False):
            up, down = X.copy(), X.copy()
            up[i, j] += eps
            down[i, j] -= eps
            numeric = (_log_p(net, up, classes)[i] - _log_p(net, down, classes)[i]) / (2 * eps)
            assert abs(grad[i, j] - numeric) <= 1e-7 + 1e-5 * abs(numeric)


def test_a_map_is_per_pixel_value_and_read_class_by_default():
    net = MLP([784, 16, 10], seed=0, dtype=np.float64)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    classes, maps = saliency(net, pixels)
    assert classes.tolist() == net.predict(pixels.reshape(4, -1) / 255).tolist()
    direct = log_probability_gradient(net, pixels.reshape(4, -1) / 255.0, classes) / 255
    assert maps.shape == (4, 28, 28) and np.allclose(maps.reshape(4, -1), direct, rtol=1e-5)


def test_a_confident_readings_map_keeps_its_precision():
    net = MLP([784, 16, 10], seed=0, dtype=np.float32)
    X = np.random.default_rng(1).random((2, 784), dtype=np.float32)
    Z = np.sort(net.logits(X), axis=1)
    net.W[-1] *= 25 / (Z[:, -1] - Z[:, -2]).min()       # logit gaps >= 25: P of the read ≈ 1
    net.b[-1] *= 0
    classes = net.predict(X)
    assert np.exp(_log_p(net, X, classes)).min() > 1 - 1e-7
    grad = log_probability_gradient(net, X, classes)
    wide = MLP.from_params([W.astype(np.float64) for W in net.W],
                           [b.astype(np.float64) for b in net.b])
    exact = log_probability_gradient(wide, X.astype(np.float64), classes)
    assert np.abs(grad).max() > 0
    assert np.allclose(grad, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())


def test_a_committees_map_is_its_members_maps_averaged():
    a, b = MLP([784, 8, 10], seed=1, dtype=np.float64), MLP([784, 8, 10], seed=2,
                                                             dtype=np.float64)
    pixels = np.random.default_rng(2).integers(0, 256, (3, 784)).astype(np.uint8)
    classes = np.array([1, 4, 9])
    _, together = saliency(Committee({"a": a, "b": b}), pixels, classes)
    _, alone_a = saliency(a, pixels, classes)
    _, alone_b = saliency(b, pixels, classes)
    assert np.allclose(together, (alone_a + alone_b) / 2)

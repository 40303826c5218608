"""Gradient checking: it passes on the engine (fresh and trained, parameters and inputs),
and fails, naming the layer, on engines with one equation of the note altered."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import checkpoint
from mnist_mlp.dataset import DataSource
from mnist_mlp.gradcheck import RANDOM, THRESHOLD, TOP, check_gradients
from mnist_mlp.network import MLP

NAMES = ["W[2]", "b[2]", "W[1]", "b[1]", "W[0]", "b[0]"]


def _inputs(n=4, seed=0):
    """Random 'images' in [0, 1] and labels."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 784)), rng.integers(0, 10, n)


class NoReluDerivative(MLP):
    """backward with `⊙ ReLU'(Z)` dropped: dZ = dA."""

    def backward(self, dZ, cache):
        L = len(self.W)
        dW, db = [None] * L, [None] * L
        for l in range(L - 1, -1, -1):
            dW[l] = dZ.T @ cache.inputs[l]
            db[l] = dZ.sum(axis=0)
            dZ = dZ @ self.W[l]                                # no ⊙ ReLU'(Z)
        return dW, db


class NoTranspose(MLP):
    """backward with dW = Aᵀ dZ (in, out) instead of dZᵀ A (out, in)."""

    def backward(self, dZ, cache):
        dW, db = super().backward(dZ, cache)
        return [W.T for W in dW], db


class NoBatchMean(MLP):
    """backward of the summed loss, not the mean: the 1/n forgotten in db."""

    def backward(self, dZ, cache):
        dW, db = super().backward(dZ, cache)
        return dW, [g * len(cache.inputs[0]) for g in db]


class InputGradientWithoutRelu(MLP):
    """input_gradient with `⊙ ReLU'(Z)` dropped at every hidden layer."""

    def input_gradient(self, dZ, cache):
        for W in reversed(self.W):
            dZ = dZ @ W
        return dZ


def test_a_fresh_network_passes_every_check_and_input():
    X, y = _inputs()
    report = check_gradients(MLP([784, 32, 16, 10], seed=1), X, y, explain=True)
    assert report.passed and not report.failed
    assert [c.name for c in report.checks] == NAMES + ["x"]
    assert report.sizes == [784, 32, 16, 10] and report.n == 4
    assert report.loss == pytest.approx(MLP([784, 32, 16, 10], seed=1).loss_and_gradients(
        X.astype(np.float32), y)[0], rel=1e-5)
    for check in report.checks:
        size = int(np.prod(check.shape))
        assert check.checked + check.skipped == min(size, TOP + RANDOM), check
        assert check.checked > 0 and check.error < THRESHOLD
        assert check.error == pytest.approx(abs(check.analytic - check.numeric) / max(
            abs(check.analytic) + abs(check.numeric), report.floor))
    shapes = {c.name: c.shape for c in report.checks}
    assert shapes["W[0]"] == (32, 784) and shapes["b[1]"] == (16,) and shapes["x"] == (4, 784)


def test_the_equations_named_are_the_notes():
    checks = {c.name: c for c in check_gradients(MLP([784, 8, 10]), *_inputs(2),
                                                 explain=True).checks}
    assert checks["W[1]"].equation == "dL/dW = dL/dz · xᵀ,  dL/dz = a - y"
    assert checks["b[1]"].equation == "dL/db = dL/dz,  dL/dz = a - y"
    assert "⊙ ReLU'(z)" in checks["W[0]"].equation and "W[1]ᵀ · dL/dz[1]" in \
        checks["b[0]"].equation
    assert checks["W[0]"].batched.startswith("dW = dZᵀ A")
    assert checks["x"].equation == "dL/dx = W[0]ᵀ · dL/dz[0]"
    assert checks["x"].batched == "dX = dZ[0] W[0]"


def test_the_largest_gradients_are_among_those_checked():
    X, y = _inputs()
    net = MLP([784, 32, 10], seed=3)
    _, dW, _ = net.loss_and_gradients(X.astype(np.float32), y)
    report = check_gradients(net, X, y, top=3, random=0)
    worst_w0 = next(c for c in report.checks if c.name == "W[0]")
    largest = np.unravel_index(np.argsort(-np.abs(dW[0]), axis=None)[:3], dW[0].shape)
    assert worst_w0.checked == 3
    assert worst_w0.index in set(zip(*(map(int, i) for i in largest)))


def test_a_trained_network_passes_on_real_digits(real_model, real_mnist):
    X, y = DataSource(real_mnist, mirrors=()).load("test")
    net = checkpoint.load(real_model).net
    report = check_gradients(net, X[:8], y[:8], explain=True)
    assert report.passed, [(c.name, c.error) for c in report.checks]
    assert report.loss < 0.5
    wrong = check_gradients(NoReluDerivative.from_params(net.W, net.b), X[:8], y[:8])
    assert {c.name for c in wrong.failed} == {"W[0]", "b[0]"}
    wrong = check_gradients(InputGradientWithoutRelu.from_params(net.W, net.b), X[:8], y[:8],
                            explain=True)
    assert [c.name for c in wrong.failed] == ["x"]


@pytest.mark.parametrize("engine, wrong", [
    (NoReluDerivative, {"W[1]", "b[1]", "W[0]", "b[0]"}),
    (NoTranspose, {"W[2]", "W[1]", "W[0]"}),
    (NoBatchMean, {"b[2]", "b[1]", "b[0]"}),
])
def test_an_altered_equation_fails_naming_its_layers(engine, wrong):
    X, y = _inputs()
    net = engine.from_params(*(lambda m: (m.W, m.b))(MLP([784, 32, 16, 10], seed=1)))
    report = check_gradients(net, X, y)
    assert not report.passed
    assert {c.name for c in report.failed} == wrong
    for check in report.failed:
        assert check.error > 1e-2


def test_a_gradient_of_the_wrong_shape_fails_without_comparing():
    X, y = _inputs()
    report = check_gradients(NoTranspose.from_params(MLP([784, 8, 10]).W,
                                                     MLP([784, 8, 10]).b), X, y)
    w0 = report.checks[2]
    assert w0.name == "W[0]" and w0.error == np.inf and w0.index is None and w0.checked == 0


def test_a_wrong_input_gradient_fails_only_the_input_check():
    X, y = _inputs()
    base = MLP([784, 32, 16, 10], seed=1)
    report = check_gradients(InputGradientWithoutRelu.from_params(base.W, base.b), X, y,
                             explain=True)
    assert [c.name for c in report.failed] == ["x"]


def test_large_logits_widen_the_floor_rather_than_fail():
    """Logits of some 500: the loss's round-off grows with them, and so does the floor."""
    X, y = _inputs()
    net = MLP([784, 16, 10], seed=0)
    net.W[1] *= 1000
    report = check_gradients(net, X, y)
    assert report.passed, [(c.name, c.error) for c in report.checks]
    assert report.floor > 100 * check_gradients(MLP([784, 16, 10], seed=0), X, y).floor
    wrong = check_gradients(NoReluDerivative.from_params(net.W, net.b), X, y)
    assert {c.name for c in wrong.failed} == {"W[0]", "b[0]"}


def test_a_relu_kink_within_eps_is_skipped_not_failed():
    """A hidden unit whose pre-activation is 1e-7 for one sample: perturbing its bias by
    ±1e-5 crosses the kink, where the finite difference is not the derivative."""
    X, y = _inputs(3)
    net = MLP([784, 8, 10], seed=2, dtype=np.float64)
    net.b[0][5] = 1e-7 - X[0] @ net.W[0][5]                   # z[0, 5] = 1e-7
    net.W[1][:, 5] *= 50                                      # ... and it matters
    report = check_gradients(net, X, y)
    b0 = next(c for c in report.checks if c.name == "b[0]")
    assert b0.skipped >= 1 and b0.checked == 8 - b0.skipped
    assert report.passed


def test_the_callers_arrays_are_left_as_they_were():
    X, y = _inputs()
    net = MLP([784, 16, 10], seed=0)
    before = [p.copy() for p in net.params], X.copy()
    check_gradients(net, X, y, explain=True)
    assert all(np.array_equal(p, q) for p, q in zip(net.params, before[0]))
    assert np.array_equal(X, before[1]) and net.dtype == np.float32

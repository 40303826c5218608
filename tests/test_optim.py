"""Optimisers on a known quadratic, by hand; schedules; state export and restore."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_mlp.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    WeightAverage,
    clip_row_norms_,
    make_optimizer,
    make_schedule,
)

# f(p) = 0.5 * a * p²  has gradient a * p.
A = 2.0


def _run(opt, p, steps, lr):
    for _ in range(steps):
        opt.step([A * p.copy()], lr)
    return p


def test_plain_sgd():
    p = np.array([1.0])
    _run(SGD([p]), p, 2, 0.1)
    # p1 = 1 - 0.1*2 = 0.8;  p2 = 0.8 - 0.1*1.6 = 0.64
    assert p[0] == pytest.approx(0.64)


def test_momentum_and_nesterov():
    p = np.array([1.0])
    _run(SGD([p], momentum=0.9), p, 2, 0.1)
    # v1 = -0.2, p1 = 0.8;  g2 = 1.6, v2 = -0.18 - 0.16 = -0.34, p2 = 0.8 - 0.34 = 0.46
    assert p[0] == pytest.approx(0.46)
    q = np.array([1.0])
    _run(SGD([q], momentum=0.9, nesterov=True), q, 2, 0.1)
    # v1 = -0.2, q1 = 1 + 0.9 v1 - 0.2 = 0.62;  g2 = 1.24, v2 = -0.18 - 0.124 = -0.304,
    # q2 = 0.62 + 0.9 v2 - 0.124 = 0.2224
    assert q[0] == pytest.approx(0.2224)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_follows_its_equations_as_the_rate_changes(nesterov):
    """v ← μ v - lr (g + λ p); p ← p + v (Nesterov: p + μ v - lr g), lr varying every step."""
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 3))
    q, v = p.copy(), np.zeros_like(p)
    opt = SGD([p], momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    for lr in (0.01, 0.05, 0.1, 0.07, 0.02, 0.001):
        grad = rng.normal(size=p.shape)
        g = grad + 0.01 * q
        v = 0.9 * v - lr * g
        q += 0.9 * v - lr * g if nesterov else v
        opt.step([grad], lr)
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.velocity[0], v, rtol=1e-12, atol=1e-14)


def test_sgd_weight_decay_is_l2():
    p = np.array([1.0])
    SGD([p], weight_decay=0.5).step([np.array([0.0])], 0.1)
    assert p[0] == pytest.approx(1 - 0.1 * 0.5)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_weight_decay_spares_what_is_not_decayed(name):
    W, b = np.ones((2, 3)), np.ones(3)
    opt = make_optimizer(name, [W, b], momentum=0.9, weight_decay=0.5, decayed=[True, False])
    opt.step([np.zeros((2, 3)), np.zeros(3)], 0.1)
    assert (W < 1).all(), "the weights decay"
    np.testing.assert_array_equal(b, np.ones(3))  # a zero gradient leaves the biases alone


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_gradient_per_parameter(name):
    opt = make_optimizer(name, [np.ones((2, 3)), np.ones(3)], momentum=0.9)
    with pytest.raises(ValueError, match="1 gradients for 2 parameters"):
        opt.step([np.zeros((2, 3))], 0.1)


def test_adam_bias_correction_and_second_step():
    p = np.array([1.0])
    opt = Adam([p], betas=(0.9, 0.999), eps=1e-8)
    opt.step([np.array([A * 1.0])], 0.01)
    # m̂ = g, v̂ = g²: the first step is lr · g/|g| whatever the gradient's scale
    assert p[0] == pytest.approx(1 - 0.01, abs=1e-9)
    p1 = p[0]
    g2 = A * p1
    m = 0.9 * 0.1 * 2 + 0.1 * g2
    v = 0.999 * 0.001 * 4 + 0.001 * g2 ** 2
    m_hat, v_hat = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
    expected = p1 - 0.01 * m_hat / (math.sqrt(v_hat) + 1e-8)
    opt.step([np.array([g2])], 0.01)
    assert p[0] == pytest.approx(expected, rel=1e-12)


def test_adamw_decay_is_decoupled_from_the_gradient():
    p = np.array([1.0])
    AdamW([p], weight_decay=0.1).step([np.array([0.0])], 0.01)
    assert p[0] == pytest.approx(1 - 0.01 * 0.1, rel=1e-12)  # only p·(1 - lr·λ)
    q = np.array([1.0])
    Adam([q], weight_decay=0.1).step([np.array([0.0])], 0.01)
    assert q[0] == pytest.approx(1 - 0.01, rel=1e-6)  # L2 goes through Adam's normalisation


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_export_restore_continues_identically(name):
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(3, 4)), rng.normal(size=4)]
    grads = [[rng.normal(size=(3, 4)), rng.normal(size=4)] for _ in range(6)]
    a = [p.copy() for p in params]
    opt_a = make_optimizer(name, a, momentum=0.9, weight_decay=0.01)
    for g in grads[:3]:
        opt_a.step([x.copy() for x in g], 0.05)
    state = {k: v.copy() for k, v in opt_a.state_dict().items()}
    b = [p.copy() for p in a]
    opt_b = make_optimizer(name, b, momentum=0.9, weight_decay=0.01)
    opt_b.load_state_dict(state)
    for g in grads[3:]:
        opt_a.step([x.copy() for x in g], 0.05)
        opt_b.step([x.copy() for x in g], 0.05)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    with pytest.raises(ValueError):
        opt_b.load_state_dict({"t": np.array(1)})


def test_the_weight_average_is_bias_corrected():
    p = np.array([1.0])
    average = WeightAverage([p], 0.9)
    assert average.averaged()[0][0] == 1.0                  # no steps yet: the weights
    average.update()
    assert average.averaged()[0][0] == pytest.approx(1.0)  # one step: exactly that step
    p[0] = 3.0
    average.update()
    # m = 0.9 (0.1 · 1) + 0.1 · 3 = 0.39; 1 - 0.9² = 0.19: a weighted mean of 1 and 3
    assert average.averaged()[0][0] == pytest.approx(0.39 / 0.19)
    for _ in range(200):
        average.update()
    assert average.averaged()[0][0] == pytest.approx(3.0)


def test_negative_second_moments_are_refused():
    p = np.ones(3)
    opt = Adam([p])
    opt.step([np.ones(3)], 0.01)
    state = {k: v.copy() for k, v in opt.state_dict().items()}
    state["v.0"][1] = -1e-9
    with pytest.raises(ValueError, match="optimiser state holds negative second moments v"):
        Adam([np.ones(3)]).load_state_dict(state)


def test_weight_average_state_restores_exactly_and_is_checked():
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(3, 4)).astype(np.float32)]
    b = [x.copy() for x in a]
    first, second = WeightAverage(a, 0.99), WeightAverage(b, 0.99)
    for _ in range(3):
        a[0] += 1
        first.update()
    b[0][...] = a[0]
    second.load_state_dict({k: v.copy() for k, v in first.state_dict().items()})
    for _ in range(3):
        a[0] *= 0.5
        b[0] *= 0.5
        first.update()
        second.update()
    assert first.averaged()[0].tobytes() == second.averaged()[0].tobytes()
    bad = {**first.state_dict(), "m.0": np.full((3, 4), np.nan, np.float32)}
    with pytest.raises(ValueError, match="weight average state m.0 holds NaN"):
        second.load_state_dict(bad)
    with pytest.raises(ValueError, match="weight average state m.0 is float32 \\(4, 3\\)"):
        second.load_state_dict({**first.state_dict(), "m.0": np.zeros((4, 3), np.float32)})
    with pytest.raises(ValueError, match="ema decay must be in"):
        WeightAverage(a, 1.0)


@pytest.mark.parametrize("make", [
    lambda p: SGD(p, momentum=1.0),
    lambda p: SGD(p, momentum=-0.1),
    lambda p: SGD(p, weight_decay=-1),
    lambda p: SGD(p, nesterov=True),
    lambda p: Adam(p, betas=(1.0, 0.999)),
    lambda p: Adam(p, eps=0),
    lambda p: make_optimizer("rmsprop", p),
])
def test_bad_hyperparameters_are_rejected(make):
    with pytest.raises(ValueError):
        make([np.zeros(2)])


def test_schedules():
    const = make_schedule("constant", 0.1, 100)
    assert [const(s) for s in (0, 50, 99)] == [0.1, 0.1, 0.1]
    step = make_schedule("step", 0.1, 90, gamma=0.5, step_fraction=1 / 3)
    assert [step(s) for s in (0, 29, 30, 60, 89)] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])
    cos = make_schedule("cosine", 0.1, 110, warmup_steps=10)
    assert [cos(s) for s in (0, 4, 9)] == pytest.approx([0.01, 0.05, 0.1])
    assert cos(10) == pytest.approx(0.1)
    assert cos(60) == pytest.approx(0.05)
    assert cos(109) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    with pytest.raises(ValueError):
        make_schedule("cosine", -1, 10)
    with pytest.raises(ValueError):
        make_schedule("exp", 0.1, 10)
    with pytest.raises(ValueError):
        make_schedule("constant", 0.1, 10, warmup_steps=11)


def test_max_norm_clamps_only_long_rows():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(6, 5)).astype(np.float32)
    W[0] *= 0.01
    short_row = W[0].copy()
    clip_row_norms_(W, 1.5)
    norms = np.linalg.norm(W, axis=1)
    assert np.all(norms <= 1.5 + 1e-5)
    np.testing.assert_array_equal(W[0], short_row)
    assert np.any(np.isclose(norms, 1.5))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_in_pieces_equal_updates_of_whole_arrays(name, monkeypatch):
    """A parameter of several pieces (and a ragged last one) ends bit for bit where the same
    rule applied to the whole array at once would take it."""
    import mnist_mlp.optim as optim
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(37, 29)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    grads = [[rng.normal(size=a.shape).astype(np.float32) for a in start] for _ in range(4)]
    ends = []
    for block in (optim.BLOCK, 100):                      # one piece each; 11 pieces of W
        monkeypatch.setattr(optim, "BLOCK", block)
        params = [a.copy() for a in start]
        opt = make_optimizer(name, params, momentum=0.9, weight_decay=0.01)
        for step, g in enumerate(grads):
            opt.step([a.copy() for a in g], 0.05 / (step + 1))
        ends.append((params, opt.state_dict()))
    (whole, whole_state), (pieces, piece_state) = ends
    for a, b in zip(whole, pieces):
        np.testing.assert_array_equal(a, b)
    assert whole_state.keys() == piece_state.keys()
    for key in whole_state:
        np.testing.assert_array_equal(whole_state[key], piece_state[key])


def test_parameters_that_are_not_contiguous_are_refused():
    W = np.ones((4, 6))
    with pytest.raises(ValueError, match="C-contiguous"):
        SGD([W[:, ::2]])

"""The engine against its equations: finite differences, a hand-worked example, stability."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp.network import MLP, Committee, softmax, softmax_cross_entropy


def _numeric_gradients(f, params, eps=1e-5):
    """Central differences of the scalar f() with respect to every entry of every array."""
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = f()
            p[i] = old - eps
            down = f()
            p[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def _max_relative_error(a, b):
    return max(float(np.max(np.abs(x - y) / np.maximum(np.abs(x) + np.abs(y), 1e-8)))
               for x, y in zip(a, b))


@pytest.fixture
def small_problem():
    rng = np.random.default_rng(42)
    net = MLP([12, 7, 5, 3], seed=3, dtype=np.float64)
    for b in net.b:  # non-zero biases, so db is exercised too
        b[:] = rng.normal(0, 0.1, b.shape)
    X = rng.normal(size=(9, 12))
    y = rng.integers(0, 3, 9)
    return net, X, y


def test_gradients_match_finite_differences(small_problem):
    net, X, y = small_problem
    loss, dW, db = net.loss_and_gradients(X, y)
    assert isinstance(loss, float)
    assert [g.shape for g in dW] == [W.shape for W in net.W]
    assert [g.shape for g in db] == [b.shape for b in net.b]
    numeric = _numeric_gradients(lambda: net.loss_and_gradients(X, y)[0], net.W + net.b)
    assert _max_relative_error(dW + db, numeric) < 1e-6


def test_dropout_and_label_smoothing_gradients_match_finite_differences(small_problem):
    net, X, y = small_problem
    dropout = [0.2, 0.5, 0.3]

    def loss_and_grads():
        Z, cache = net.forward(X, dropout, np.random.default_rng(7))  # same masks each call
        loss, dZ = softmax_cross_entropy(Z, y, label_smoothing=0.1)
        return loss, *net.backward(dZ, cache)

    _, dW, db = loss_and_grads()
    numeric = _numeric_gradients(lambda: loss_and_grads()[0], net.W + net.b)
    assert _max_relative_error(dW + db, numeric) < 1e-6



def test_mixed_targets_gradients_match_finite_differences(small_problem):
    """Mixup's loss is λ CE(y) + (1 - λ) CE(y2), smoothing or not; its gradient is
    (softmax(Z) - T) / n with T = λ Y + (1 - λ) Y2, checked against central differences."""
    net, X, y = small_problem
    y2 = np.random.default_rng(5).permutation(y)
    lam = 0.3

    def loss_and_grads(smoothing):
        Z, cache = net.forward(X)
        loss, dZ = softmax_cross_entropy(Z, y, smoothing, mixed=(y2, lam))
        return loss, *net.backward(dZ, cache)

    for smoothing in (0.0, 0.1):
        loss, dW, db = loss_and_grads(smoothing)
        numeric = _numeric_gradients(lambda: loss_and_grads(smoothing)[0], net.W + net.b)
        assert _max_relative_error(dW + db, numeric) < 1e-6
        parts = [softmax_cross_entropy(net.forward(X)[0], t, smoothing)[0] for t in (y, y2)]
        assert loss == pytest.approx(lam * parts[0] + (1 - lam) * parts[1], rel=1e-12)
    Z = net.forward(X)[0]
    plain, mixed = (softmax_cross_entropy(Z.copy(), y, 0.1, m) for m in (None, (y2, 1.0)))
    assert plain[0] == pytest.approx(mixed[0], rel=1e-12)
    np.testing.assert_array_equal(plain[1], mixed[1])

def test_hand_worked_example():
    """Two inputs, two hidden ReLUs, two classes; every number from the note's equations."""
    net = MLP([2, 2, 2], dtype=np.float64)
    net.W[0][:] = [[1, -1], [0.5, 0.5]]
    net.b[0][:] = [0, -1]
    net.W[1][:] = [[1, 2], [-1, 0]]
    net.b[1][:] = [0, 0]
    x, t = np.array([[1.0, 2.0]]), np.array([0])
    # z1 = W x + b = [-1, 0.5];  a1 = ReLU(z1) = [0, 0.5];  z2 = [1, 0]
    # a2 = softmax(z2) = [e/(e+1), 1/(e+1)];  L = -log a2[0] = log(1 + 1/e)
    e = np.e
    a2 = np.array([e / (e + 1), 1 / (e + 1)])
    dz2 = a2 - [1, 0]                                  # a - y
    loss, dW, db = net.loss_and_gradients(x, t)
    assert loss == pytest.approx(np.log(1 + 1 / e), rel=1e-12)
    np.testing.assert_allclose(db[1], dz2)             # dL/db = dL/dz
    np.testing.assert_allclose(dW[1], np.outer(dz2, [0, 0.5]))   # dL/dz · xᵀ
    da1 = net.W[1].T @ dz2                             # Wᵀ · dL/dz = [-2 dz, -2 dz]
    dz1 = da1 * np.array([0, 1])                       # ReLU'(z1) = [0, 1]
    np.testing.assert_allclose(db[0], dz1)
    np.testing.assert_allclose(dW[0], np.outer(dz1, [1, 2]))
    assert dW[0][1, 1] == pytest.approx(-4 / (e + 1))


def test_output_delta_is_softmax_minus_onehot_over_n():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(6, 10))
    y = rng.integers(0, 10, 6)
    expected = (softmax(Z) - np.eye(10)[y]) / 6
    loss, dZ = softmax_cross_entropy(Z.copy(), y)
    np.testing.assert_allclose(dZ, expected, rtol=1e-12, atol=1e-15)
    assert loss == pytest.approx(-np.mean(np.log(softmax(Z)[np.arange(6), y])))


def test_extreme_logits_stay_finite():
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    loss, dZ = softmax_cross_entropy(Z, np.array([1, 2]))
    assert np.isfinite(loss) and loss == pytest.approx((2e4 + np.log(3)) / 2, rel=1e-6)
    assert np.all(np.isfinite(dZ))
    net = MLP([4, 3, 2])
    net.W[1] *= 1e4
    X = np.full((2, 4), 50.0, dtype=np.float32)
    loss, dW, db = net.loss_and_gradients(X, np.array([0, 1]))
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in dW + db)


def test_initialisation_is_he_normal_and_seeded():
    net = MLP([784, 800, 10], seed=5)
    assert [W.shape for W in net.W] == [(800, 784), (10, 800)]
    assert [b.shape for b in net.b] == [(800,), (10,)]
    assert all(W.dtype == np.float32 for W in net.W)
    assert np.std(net.W[0]) == pytest.approx(np.sqrt(2 / 784), rel=0.01)
    assert not any(b.any() for b in net.b)
    np.testing.assert_array_equal(MLP([784, 800, 10], seed=5).W[0], net.W[0])
    assert not np.array_equal(MLP([784, 800, 10], seed=6).W[0], net.W[0])


def test_predict_in_chunks_equals_one_pass():
    rng = np.random.default_rng(1)
    net = MLP([20, 16, 10], seed=1)
    X = rng.random((50, 20), dtype=np.float32)
    whole = net.predict_proba(X)
    net.predict_chunk = 7
    np.testing.assert_allclose(net.predict_proba(X), whole, rtol=1e-6)
    np.testing.assert_allclose(whole.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(net.predict(X), whole.argmax(axis=1))


def test_backward_is_linear_in_dz():
    """The trainer scales dL/dZ by -lr before backward; every gradient must scale alike."""
    rng = np.random.default_rng(0)
    net = MLP([12, 9, 7, 10], seed=1, dtype=np.float64)
    X = rng.random((5, 12))
    Z, cache = net.forward(X, [0.2, 0.3, 0.3], rng)
    _, dZ = softmax_cross_entropy(Z, rng.integers(0, 10, 5))
    dW, db = net.backward(dZ.copy(), cache)
    sW, sb = net.backward(dZ * -0.05, cache)
    for plain, scaled in zip(dW + db, sW + sb):
        np.testing.assert_allclose(scaled, -0.05 * plain, rtol=1e-12)


def test_small_net_overfits_a_fixed_batch():
    from mnist_mlp.optim import Adam

    rng = np.random.default_rng(0)
    X = rng.random((64, 30), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    net = MLP([30, 64, 10], seed=0)
    opt = Adam(net.params)
    for _ in range(300):
        loss, dW, db = net.loss_and_gradients(X, y)
        opt.step([*dW, *db], 0.01)
    assert np.mean(net.predict(X) == y) == 1.0
    assert loss < 0.05


def test_same_seed_same_bits():
    from mnist_mlp.optim import SGD

    def run():
        rng = np.random.default_rng(3)
        net = MLP([30, 20, 20, 10], seed=4)
        opt = SGD(net.params, momentum=0.9, nesterov=True)
        X = rng.random((256, 30), dtype=np.float32)
        y = rng.integers(0, 10, 256)
        for i in range(20):
            Z, cache = net.forward(X[i * 8:i * 8 + 64], [0.1, 0.5, 0.5], rng)
            _, dZ = softmax_cross_entropy(Z, y[i * 8:i * 8 + 64])
            dW, db = net.backward(dZ, cache)
            opt.step([*dW, *db], 0.05)
        return net

    a, b = run(), run()
    for p, q in zip(a.params, b.params):
        assert p.tobytes() == q.tobytes()


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        MLP([784])
    with pytest.raises(ValueError):
        MLP([784, 0, 10])


def test_a_committee_averages_its_members_probabilities():
    X = np.random.default_rng(0).random((5, 12)).astype(np.float32)
    members = {f"m{s}": MLP([12, 6, 4], seed=s) for s in (1, 2, 3)}
    committee = Committee(members)
    mean = np.mean([m.predict_proba(X) for m in members.values()], axis=0)
    np.testing.assert_allclose(committee.predict_proba(X), mean, rtol=1e-6)
    np.testing.assert_allclose(softmax(committee.logits(X)), mean, rtol=1e-5)
    np.testing.assert_array_equal(committee.predict(X), mean.argmax(axis=1))
    assert committee.sizes == [12, 6, 4] and list(committee.members) == ["m1", "m2", "m3"]
    assert np.isfinite(Committee({"sure": _certain()}).logits(X)).all()
    with pytest.raises(ValueError, match="at least one member"):
        Committee({})


def _certain() -> MLP:
    """A network sure of class 0: the other classes' probabilities underflow to 0."""
    net = MLP([12, 6, 4], seed=1)
    net.b[1][:] = [1e4, 0, 0, 0]
    return net


def _for_raw_pixels(net: MLP) -> MLP:
    """The same network for inputs pixels / 1 rather than pixels / 255."""
    return MLP.from_params([net.W[0] / np.float32(255), *net.W[1:]], net.b, input_scale=1)


def test_a_network_remembers_its_input_scale():
    assert MLP([12, 4]).input_scale == 255.0
    assert MLP([12, 4], input_scale=1).input_scale == 1.0
    net = MLP([12, 6, 4], seed=2)
    pixels = np.random.default_rng(1).integers(0, 256, (20, 12)).astype(np.float32)
    raw = _for_raw_pixels(net)
    np.testing.assert_allclose(raw.predict_proba(pixels / raw.input_scale),
                               net.predict_proba(pixels / net.input_scale), rtol=1e-5)


@pytest.mark.parametrize("first", ["scaled", "raw"])
def test_members_of_other_input_scales_vote_as_the_originals(first):
    pixels = np.random.default_rng(1).integers(0, 256, (30, 12)).astype(np.float32)
    a, b = MLP([12, 6, 4], seed=1), MLP([12, 6, 4], seed=2)
    originals = Committee({"a": a, "b": b})
    mixed = Committee({"a": a, "b": _for_raw_pixels(b)} if first == "scaled" else
                      {"b": _for_raw_pixels(b), "a": a})
    assert mixed.input_scale == (255.0 if first == "scaled" else 1.0)
    expected = originals.predict_proba(pixels / 255)
    np.testing.assert_allclose(mixed.predict_proba(pixels / mixed.input_scale), expected,
                               rtol=1e-5)
    member = mixed.members["b"]
    np.testing.assert_allclose(mixed.member_inputs(member, pixels / mixed.input_scale),
                               pixels / member.input_scale, rtol=1e-6)


@pytest.mark.parametrize("dropout", [None, [0.3, 0.5, 0.2]])
def test_input_gradient_matches_finite_differences(small_problem, dropout):
    """dL/dx = Wᵀ · dL/dz down to the pixels (dX = dZ W), through ReLU' and dropout masks."""
    net, X, y = small_problem

    def loss_and_input_gradient():
        Z, cache = net.forward(X, dropout, np.random.default_rng(7))  # same masks each call
        loss, dZ = softmax_cross_entropy(Z, y)
        kept = dZ.copy()
        dX = net.input_gradient(dZ, cache)
        np.testing.assert_array_equal(dZ, kept)                      # dZ left as it is
        return loss, dX

    _, dX = loss_and_input_gradient()
    assert dX.shape == X.shape
    numeric = _numeric_gradients(lambda: loss_and_input_gradient()[0], [X])
    assert _max_relative_error([dX], numeric) < 1e-6


def test_input_gradient_of_a_class_log_probability_is_a_saliency_map():
    """Seeded with onehot(c) - P, each row is the gradient of that row's log P[c]."""
    rng = np.random.default_rng(4)
    net = MLP([12, 9, 7, 4], seed=2, dtype=np.float64)
    X = rng.normal(size=(3, 12))
    c = np.array([2, 0, 3])

    def log_p():
        return float(sum(np.log(softmax(net.forward(X)[0])[np.arange(3), c])))

    Z, cache = net.forward(X)
    saliency = net.input_gradient(np.eye(4)[c] - softmax(Z), cache)
    numeric = _numeric_gradients(log_p, [X])
    assert _max_relative_error([saliency], numeric) < 1e-6

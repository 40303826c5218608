"""The worked example of docs/backprop.md: one real test digit through a small trained network.

    python docs/backprop_example.py [--data-dir DIR]

Trains a 784-16-10 network for a few seconds (float64, plain SGD, seed 0, the engine's own
``loss_and_gradients``) on the MNIST training files in DIR (read, never downloaded), then
takes test digit 0 forward and backward: the engine's batched pass on that one row, checked
here against the note's per-sample equations (dL/dz = a - y, dL/dW = dL/dz · xᵀ,
dL/db = dL/dz, dL/da = Wᵀ · dL/dz, ⊙ ReLU'(z), dL/dx = Wᵀ · dL/dz) and against the batch
of four that shows the 1/n. Prints the markdown block the page holds, few digits, so that
its numbers do not depend on the BLAS's summation order (a test compares them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_mlp.dataset import DataSource  # noqa: E402
from mnist_mlp.mnist import DataError  # noqa: E402
from mnist_mlp.network import MLP, softmax, softmax_cross_entropy  # noqa: E402

SIZES = [784, 16, 10]
EPOCHS, BATCH, LR, SEED = 3, 100, 0.2, 0
DIGIT = 0           # the test digit shown: a 7
BATCH_SHOWN = 4     # the batch that shows where 1/n enters


def train(X: np.ndarray, y: np.ndarray) -> MLP:
    """784-16-10 in float64 by minibatch SGD on X (n, 784), y (n,): p <- p - lr g."""
    net = MLP(SIZES, seed=SEED, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    for _ in range(EPOCHS):
        order = rng.permutation(len(X))
        for start in range(0, len(X), BATCH):
            rows = order[start:start + BATCH]
            _, dW, db = net.loss_and_gradients(X[rows], y[rows])
            for p, g in zip(net.params, dW + db):
                p -= LR * g
    return net


def show(v: np.ndarray) -> str:
    """A vector with four significant digits."""
    return "[" + ", ".join(f"{x + 0.0:.4g}" for x in v) + "]"      # + 0.0: no "-0"


def pixel(j: int) -> str:
    return f"({j // 28}, {j % 28})"


def example(net: MLP, x: np.ndarray, t: int, X4: np.ndarray, y4: np.ndarray) -> list[str]:
    """The page's lines for digit x (784,) of label t, the engine's numbers checked against
    the per-sample equations."""
    (W1, W2), (b1, b2) = net.W, net.b
    Z, cache = net.forward(x[None, :])                       # one row: n = 1
    loss, dZ = softmax_cross_entropy(Z.copy(), np.array([t]))
    dW, db = net.backward(dZ.copy(), cache)
    dX = net.input_gradient(dZ, cache)[0]

    z1 = W1 @ x + b1                                         # the note, per sample
    a1 = np.maximum(z1, 0)
    z2 = W2 @ a1 + b2
    a2 = softmax(z2[None, :])[0]
    y = np.eye(10)[t]
    dz2 = a2 - y
    da1 = W2.T @ dz2
    dz1 = da1 * (z1 > 0)
    dx = W1.T @ dz1
    for engine, note in [(Z[0], z2), (cache.inputs[1][0], a1), (dZ[0], dz2),
                         (dW[1], np.outer(dz2, a1)), (db[1], dz2), (dW[0], np.outer(dz1, x)),
                         (db[0], dz1), (dX, dx)]:
        np.testing.assert_allclose(engine, note, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss, -np.log(a2[t]), rtol=1e-12)

    unit = int(np.argmax(np.abs(dz1)))                       # the hidden unit most to blame
    top_x = np.argsort(-np.abs(dx), kind="stable")[:3]
    ink = np.flatnonzero(x)
    j = int(ink[np.argmax(np.abs(dx[ink]))])                 # an ink pixel followed through
    n4 = len(X4)
    Z4, cache4 = net.forward(X4)
    _, dZ4 = softmax_cross_entropy(Z4, y4)
    dW4, _ = net.backward(dZ4.copy(), cache4)
    per_sample = [np.outer(softmax(z[None, :])[0] - np.eye(10)[c], a)
                  for z, c, a in zip(net.forward(X4)[0], y4, cache4.inputs[1])]
    np.testing.assert_allclose(dW4[1], np.mean(per_sample, axis=0), rtol=1e-12, atol=1e-15)
    return [
        f"x: test digit {DIGIT}, label y = {t}: 784 pixels / 255, {len(ink)} of them not 0",
        "",
        "layer 1 (hidden, 16 units)",
        "z1 = W1 x + b1        (16,) = (16, 784)(784,) + (16,)",
        f"  {show(z1)}",
        f"a1 = ReLU(z1)         (16,): {int((z1 > 0).sum())} units on",
        f"  {show(a1)}",
        "",
        "layer 2 (output, 10 classes)",
        "z2 = W2 a1 + b2       (10,) = (10, 16)(16,) + (10,)",
        f"  {show(z2)}",
        "a2 = softmax(z2)      (10,)",
        f"  {show(a2)}",
        f"L = -log a2[{t}] = {loss:.4g}",
        "",
        "backward",
        "dL/dz2 = a2 - y       (10,)",
        f"  {show(dz2)}",
        f"dL/dW2 = dL/dz2 · a1ᵀ (10, 16); its row {t}, the true class:",
        f"  {show(dW[1][t])}",
        "dL/db2 = dL/dz2       (10,)",
        "dL/da1 = W2ᵀ · dL/dz2 (16,) = (16, 10)(10,)",
        f"  {show(da1)}",
        "dL/dz1 = dL/da1 ⊙ ReLU'(z1)   (16,): 0 where z1 <= 0",
        f"  {show(dz1)}",
        f"dL/dW1 = dL/dz1 · xᵀ  (16, 784); row {unit} (the largest |dL/dz1|) is "
        f"{dz1[unit]:.4g} x, 0 off the ink;",
        f"  at pixel {pixel(j)}: {dz1[unit]:.4g} x {x[j]:.4g} = {dW[0][unit, j]:.4g}",
        "dL/db1 = dL/dz1       (16,)",
        "dL/dx = W1ᵀ · dL/dz1  (784,) = (784, 16)(16,); largest, at (row, column) of 28x28:",
        "  " + ", ".join(f"{pixel(i)} {dx[i]:.4g}" for i in top_x),
        f"  on the ink, largest at {pixel(j)}: {dx[j]:.4g}",
        "",
        f"batched, test digits 0-{n4 - 1}: dZ = (P - Y) / {n4}, dW2 = dZᵀ A1 (10, 16) equals "
        f"the mean of the {n4} per-sample dL/dz2 · a1ᵀ",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data",
                        help="Folder holding the four MNIST files (default: ./data).")
    args = parser.parse_args()
    source = DataSource(args.data_dir, mirrors=())
    try:
        X, y = source.load("train")                          # (60000, 784) float32 in [0, 1]
        X_test, y_test = source.load("test")
    except DataError as exc:
        print(f"backprop_example.py: {exc}", file=sys.stderr)
        return 1
    X, X_test = X.astype(np.float64), X_test.astype(np.float64)
    net = train(X, y)
    accuracy = np.mean(net.predict(X_test) == y_test)
    lines = [f"784-16-10, float64, {EPOCHS} epochs of SGD (batch {BATCH}, lr {LR}, seed "
             f"{SEED}) on the 60,000 training digits: test accuracy {100 * accuracy:.1f}%",
             "", *example(net, X_test[DIGIT], int(y_test[DIGIT]), X_test[:BATCH_SHOWN],
                          y_test[:BATCH_SHOWN])]
    print("```text\n" + "\n".join(lines) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())

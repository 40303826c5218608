"""The engine: a ReLU multilayer perceptron with a softmax output, in NumPy.

Rows are samples. For layer l with input A (n, in), W[l] (out, in), b[l] (out,):

    forward              Z = A Wᵀ + b           A_next = ReLU(Z)  (hidden layers)
    backward             dW = dZᵀ A              db = Σ_rows dZ    dA = dZ W
    hidden layers        dZ = dA ⊙ ReLU'(Z),     ReLU'(z) = 1 if z > 0 else 0
    output layer         P = softmax(Z),         L = mean(-log P[i, y_i])
                         dL/dZ = (P - Y) / n     (Y one-hot; the 1/n is the batch mean)

These are the per-sample equations dL/dz = a - y, dL/dW = dL/dz · xᵀ,
dL/db = dL/dz, dL/dx = Wᵀ · dL/dz, stacked over a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .mnist import PIXEL_SCALE

MAX_WIDTH = 65_536  # the widest layer this engine builds or loads
MAX_LAYERS = 32     # the most weight layers
PROBABILITY_FLOOR = 1e-30  # a committee's logits are log(max(p, floor)): never -inf

def relu_(Z: np.ndarray) -> np.ndarray:
    """A = ReLU(Z), computed in place; returns Z."""
    return np.maximum(Z, 0, out=Z)


def relu_backward_(dA: np.ndarray, A: np.ndarray) -> np.ndarray:
    """dZ = dA ⊙ ReLU'(Z), in place in ``dA``. ReLU'(z) = 1 exactly where A = ReLU(z) > 0."""
    return np.multiply(dA, A > 0, out=dA)


# Name-keyed tables: an activation's forward and the derivative step that undoes it.
ACTIVATIONS = {"relu": relu_}
DERIVATIVES = {"relu": relu_backward_}


def log_softmax(Z: np.ndarray) -> np.ndarray:
    """log softmax(Z) row-wise, by log-sum-exp with the row max subtracted. Z (n, k)."""
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(Z: np.ndarray) -> np.ndarray:
    """softmax(Z) row-wise, stable for any finite logits. Z (n, k) -> (n, k)."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def softmax_cross_entropy(Z: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0,
                          mixed: tuple[np.ndarray, float] | None = None
                          ) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(Z) against labels y, and its gradient dL/dZ.

    With mixup (``mixed`` = (y2, λ), each input λ x + (1 - λ) x2) the one-hot Y becomes
    λ Y + (1 - λ) Y2; with label smoothing ε the target is T = (1 - ε) Y + ε / k. The
    gradient is (softmax(Z) - T) / n either way.

    Args:
        Z: logits (n, k); overwritten (it becomes dL/dZ).
        y: int labels (n,).
        label_smoothing: ε in [0, 1).
        mixed: (y2 (n,), λ): the labels of the images mixed in with weight 1 - λ.

    Returns:
        (loss as a Python float, dZ (n, k) in Z's dtype).
    """
    n, k = Z.shape
    rows = np.arange(n)
    Z -= Z.max(axis=1, keepdims=True)                    # shift: softmax is unchanged
    E = np.exp(Z)                                        # (n, k)
    sum_E = E.sum(axis=1, keepdims=True)                 # (n, 1)
    log_sum = np.log(sum_E[:, 0], dtype=np.float64)      # log Σ exp z, shifted
    target_logit = Z[rows, y].astype(np.float64)         # z_t, shifted
    y2, lam = mixed if mixed is not None else (y, 1.0)
    if mixed is not None:                                # λ z_t + (1 - λ) z_t2
        target_logit = lam * target_logit + (1 - lam) * Z[rows, y2].astype(np.float64)
    if label_smoothing:
        mean_logit = Z.mean(axis=1, dtype=np.float64)
        target_logit = (1 - label_smoothing) * target_logit + label_smoothing * mean_logit
    loss = float(np.mean(log_sum - target_logit))         # -log a_t = log Σ exp z - z_t
    dZ = np.divide(E, sum_E, out=Z)                      # a = softmax(z)
    if label_smoothing:
        dZ -= label_smoothing / k
    dZ[rows, y] -= lam * (1 - label_smoothing)           # a - y
    if mixed is not None:
        dZ[rows, y2] -= (1 - lam) * (1 - label_smoothing)
    dZ /= n                                              # mean over the batch
    return loss, dZ


@dataclass
class ForwardCache:
    """What backward needs from forward: each layer's input and its dropout mask."""

    inputs: list[np.ndarray] = field(default_factory=list)      # A[l] (n, in_l), after dropout
    masks: list[np.ndarray | None] = field(default_factory=list)  # (n, in_l) scaled keep-mask


class MLP:
    """A ReLU multilayer perceptron with a softmax output.

    Args:
        sizes: layer widths, input first and classes last, e.g. [784, 800, 10].
        seed: seeds He-normal initialisation (std sqrt(2 / fan_in)); biases start at 0.
        dtype: parameter dtype; float32 for training, float64 for gradient checks.

        input_scale: X = pixels / input_scale (255: 8-bit pixels to [0, 1]).

    Attributes:
        W: list of weight matrices, W[l] (sizes[l+1], sizes[l]), i.e. (out, in).
        b: list of bias vectors, b[l] (sizes[l+1],).
    """

    activation = "relu"
    predict_chunk = 4096  # rows per chunk in predict_proba: 4096 x 800 floats = 13 MB

    def __init__(self, sizes: Sequence[int], seed: int = 0, dtype=np.float32,
                 input_scale: float = PIXEL_SCALE):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes needs at least an input and an output width >= 1: {sizes}")
        rng = np.random.default_rng(seed)
        self.W = [(rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(dtype)
                  for n_in, n_out in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(n_out, dtype=dtype) for n_out in sizes[1:]]
        self.input_scale = float(input_scale)

    @classmethod
    def from_params(cls, W: Sequence[np.ndarray], b: Sequence[np.ndarray],
                    input_scale: float = PIXEL_SCALE) -> "MLP":
        """A network with the given parameters (no random initialisation); W[l] (out, in)."""
        net = cls.__new__(cls)
        net.W, net.b, net.input_scale = list(W), list(b), float(input_scale)
        return net

    @property
    def sizes(self) -> list[int]:
        return [self.W[0].shape[1]] + [W.shape[0] for W in self.W]

    @property
    def dtype(self) -> np.dtype:
        return self.W[0].dtype

    @property
    def params(self) -> list[np.ndarray]:
        """W[0], ..., W[L-1], b[0], ..., b[L-1]: the order optimisers and gradients use."""
        return self.W + self.b

    def forward(self, X: np.ndarray, dropout: Sequence[float] | None = None,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, ForwardCache]:
        """Logits for X, keeping what backward needs.

        Args:
            X: inputs (n, sizes[0]).
            dropout: per layer, the probability of dropping each unit of that
                layer's input (entry 0 is input dropout); inverted dropout, so
                kept units are scaled by 1 / (1 - p). None or zeros: no dropout.
            rng: the generator for dropout masks; required when any p > 0.

        Returns:
            logits Z (n, sizes[-1]) and the cache for ``backward``.
        """
        act = ACTIVATIONS[self.activation]
        cache = ForwardCache()
        A = X                                                  # (n, in)
        last = len(self.W) - 1
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            p = dropout[l] if dropout is not None else 0.0
            mask = None
            if p > 0:
                mask = rng.random(A.shape, dtype=A.dtype) >= p    # keep with prob 1 - p
                mask = mask.astype(A.dtype) / A.dtype.type(1 - p)
                A = A * mask
            cache.inputs.append(A)
            cache.masks.append(mask)
            Z = A @ W.T                                        # Z = A Wᵀ + b   (n, out)
            Z += b
            A = Z if l == last else act(Z)                     # A = ReLU(Z)
        return A, cache

    def backward(self, dZ: np.ndarray, cache: ForwardCache
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients of the loss from dL/dZ of the output layer.

        Args:
            dZ: dL/dZ at the logits (n, sizes[-1]); overwritten.
            cache: from ``forward`` on the same batch.

        Returns:
            dW, db: lists shaped like ``W`` and ``b``.
        """
        dact = DERIVATIVES[self.activation]
        L = len(self.W)
        dW: list[np.ndarray] = [None] * L  # type: ignore[list-item]
        db: list[np.ndarray] = [None] * L  # type: ignore[list-item]
        for l in range(L - 1, -1, -1):
            A = cache.inputs[l]                                # (n, in)
            dW[l] = dZ.T @ A                                   # dW = dZᵀ A       (out, in)
            db[l] = dZ.sum(axis=0)                             # db = Σ_rows dZ   (out,)
            if l == 0:
                break                                          # no dX for the input
            dA = dZ @ self.W[l]                                # dA = dZ W        (n, in)
            if cache.masks[l] is not None:
                dA *= cache.masks[l]                           # through inverted dropout
            dZ = dact(dA, A)                                   # dZ = dA ⊙ ReLU'(Z)
        return dW, db

    def input_gradient(self, dZ: np.ndarray, cache: ForwardCache) -> np.ndarray:
        """The gradient with respect to the inputs X, from dL/dZ of the output layer.

        ``backward``'s chain without the parameters' gradients, carried on to the
        input: dL/dx = Wᵀ · dL/dz at every layer. Seeded with dZ = (P - Y) / n it is
        the loss's gradient; seeded with dZ = onehot(c) - P it is that of log P[:, c],
        a saliency map per row. Divide by ``input_scale`` for the gradient per pixel value.

        Args:
            dZ: a gradient at the logits (n, sizes[-1]); left as it is.
            cache: from ``forward`` on the same batch.

        Returns:
            dX (n, sizes[0]).
        """
        dact = DERIVATIVES[self.activation]
        for l in range(len(self.W) - 1, -1, -1):
            dA = dZ @ self.W[l]                                # dA = dZ W        (n, in)
            if cache.masks[l] is not None:
                dA *= cache.masks[l]                           # through inverted dropout
            if l > 0:
                dZ = dact(dA, cache.inputs[l])                 # dZ = dA ⊙ ReLU'(Z)
        return dA                                              # dX = dZ W[0]     (n, in)

    def loss_and_gradients(self, X: np.ndarray, y: np.ndarray
                           ) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Mean cross-entropy over the batch and its gradients; no dropout, no regularisation.

        Args:
            X: inputs (n, sizes[0]).
            y: int labels (n,).

        Returns:
            (loss, dW, db) with dW, db shaped like ``W`` and ``b``.
        """
        Z, cache = self.forward(X)
        loss, dZ = softmax_cross_entropy(Z, y)
        dW, db = self.backward(dZ, cache)
        return loss, dW, db

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Logits (n, sizes[-1]) for X (n, sizes[0]), computed in chunks of rows.

        Raises:
            FloatingPointError: a logit overflowed (weights far too large).
        """
        out = np.empty((len(X), self.sizes[-1]), dtype=self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(X), self.predict_chunk):
                rows = slice(start, start + self.predict_chunk)
                out[rows] = self.forward(X[rows])[0]
        if not np.isfinite(out).all():
            raise FloatingPointError(f"the network's outputs overflow {self.dtype}: its "
                                     "weights are far too large")
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, sizes[-1]) for X (n, sizes[0])."""
        return softmax(self.logits(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, int64 (n,)."""
        return self.logits(X).argmax(axis=1)


class Model(Protocol):
    """What scoring, classifying and export use: one ``MLP`` or a ``Committee``.

    X = pixels / input_scale, (n, 784); outputs (n, 10).
    """

    input_scale: float

    @property
    def sizes(self) -> list[int]: ...

    def logits(self, X: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


class Committee:
    """Several named networks voting: the mean of their class probabilities.

    A ``Model`` like an MLP: ``logits`` is the log of the mean probabilities, so
    that softmax(logits) is the committee's distribution. Its inputs are scaled as
    its first member's; each member gets them rescaled to its own ``input_scale``.
    """

    def __init__(self, members: Mapping[str, MLP]):
        if not members:
            raise ValueError("a committee needs at least one member")
        self.members = dict(members)
        self.input_scale = next(iter(self.members.values())).input_scale

    @property
    def sizes(self) -> list[int]:
        return next(iter(self.members.values())).sizes

    def member_inputs(self, member: MLP, X: np.ndarray) -> np.ndarray:
        """X (n, 784) as ``member`` takes it: pixels / member.input_scale."""
        if member.input_scale == self.input_scale:
            return X
        return X * X.dtype.type(self.input_scale / member.input_scale)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean of the members' probabilities (n, k) for X (n, sizes[0])."""
        return np.mean([m.predict_proba(self.member_inputs(m, X))
                        for m in self.members.values()], axis=0, dtype=np.float64)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """log of the mean probabilities (n, k), floored so that no entry is -inf."""
        return np.log(np.maximum(self.predict_proba(X), PROBABILITY_FLOOR))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels, int64 (n,)."""
        return self.predict_proba(X).argmax(axis=1)

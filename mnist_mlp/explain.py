"""Why a network reads what it reads: the gradient of the read class's log-probability with
respect to each input pixel, by the note's backward equations carried down to the pixels.

For class c, log P_c = z_c - log Σ_k exp z_k, so d log P_c / dz = onehot(c) - P: the output
layer's ``a - y`` with the sign turned, since this is pushed up rather than the loss down.
From there ``dL/dx = Wᵀ · dL/dz`` at every layer, ``⊙ ReLU'(z)`` between, down to x, and
x = pixels / input_scale gives the gradient per pixel value. A positive pixel pushes the
network toward the class it read, a negative one away from it.
"""

from __future__ import annotations

import numpy as np

from .mnist import IMAGE_SIDE
from .network import MLP, Committee, Model, softmax


def log_probability_gradient(net: MLP, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """d log P[i, classes[i]] / dX[i] for each row: X (n, 784) -> (n, 784), in X's units."""
    Z, cache = net.forward(X)                                # (n, 10), no dropout
    rows = np.arange(len(X))
    dZ = -softmax(Z)                                         # onehot(c) - P      (n, 10)
    dZ[rows, classes] = 0
    dZ[rows, classes] = -dZ.sum(axis=1)       # 1 - P_c as Σ_{k≠c} P_k: exact when P_c ≈ 1
    return net.input_gradient(dZ, cache)                     # dX = dZ W, layer by layer


def saliency(model: Model, pixels: np.ndarray, classes: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Each image's class (the one read, unless given) and its map: the gradient of that
    class's log-probability per pixel value; for a committee, its members' maps averaged.

    Args:
        pixels: (n, 28, 28) or (n, 784), 0-255, light on black (uint8 or float).
        classes: int (n,), or None for the model's readings.

    Returns:
        classes int64 (n,) and maps float32 (n, 28, 28).
    """
    flat = np.asarray(pixels).reshape(len(pixels), -1)
    if classes is None:
        classes = model.predict(flat / model.input_scale)
    members = model.members.values() if isinstance(model, Committee) else [model]
    maps = sum(log_probability_gradient(m, (flat / m.input_scale).astype(m.dtype), classes)
               / m.input_scale for m in members) / len(members)
    return np.asarray(classes, dtype=np.int64), maps.reshape(
        -1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)

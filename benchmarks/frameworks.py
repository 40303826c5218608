"""The engine benchmark's training loop in PyTorch and in JAX, for comparison with mnist-mlp.

Each trains the same model as ``MLP(sizes, seed)`` (its He-normal weights, zero
biases; ReLU hidden layers, softmax cross-entropy) for one epoch with SGD momentum
as PyTorch's (v ← μ v + g; p ← p − lr v), on batches of ``order``, and returns the
training loop's seconds. Both are optional: importing either is up to the caller.
"""

from __future__ import annotations

import functools
import time

import numpy as np


def torch_epoch(W: list[np.ndarray], b: list[np.ndarray], X: np.ndarray, y: np.ndarray,
                order: np.ndarray, batch: int, lr: float, momentum: float) -> float:
    """Seconds of one epoch in PyTorch, eager: W[l] (out, in), b[l] (out,), X (n, 784)."""
    import torch

    layers: list[torch.nn.Module] = []
    for i, (w, c) in enumerate(zip(W, b)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(c))
        layers += [linear] + ([torch.nn.ReLU()] if i < len(W) - 1 else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt, order_t = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(order)
    t = time.perf_counter()
    for start in range(0, len(X), batch):
        idx = order_t[start:start + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - t


@functools.cache
def _jax_step():
    """The whole training step, forward, backward and update, as one jitted function."""
    import jax
    import jax.numpy as jnp

    def loss(params, Xb, yb):
        A = Xb                                                   # (B, 784)
        for W, b in params[:-1]:
            A = jax.nn.relu(A @ W.T + b)                         # (B, out)
        W, b = params[-1]
        log_p = jax.nn.log_softmax(A @ W.T + b)                  # (B, 10)
        return -jnp.mean(jnp.take_along_axis(log_p, yb[:, None], axis=1))

    def step(params, velocity, X, y, idx, lr, momentum):
        Xb, yb = X[idx], y[idx]                                  # the batch, gathered inside
        value, grads = jax.value_and_grad(loss)(params, Xb, yb)
        velocity = jax.tree.map(lambda v, g: momentum * v + g, velocity, grads)
        params = jax.tree.map(lambda p, v: p - lr * v, params, velocity)
        return params, velocity, value

    return jax.jit(step, donate_argnums=(0, 1))


def jax_epoch(W: list[np.ndarray], b: list[np.ndarray], X: np.ndarray, y: np.ndarray,
              order: np.ndarray, batch: int, lr: float, momentum: float) -> float:
    """Seconds of one epoch in JAX, after compiling (a warm-up step of each batch shape, on
    copies of the parameters, is not timed); the clock stops once the last update is done."""
    import jax
    import jax.numpy as jnp

    step = _jax_step()
    Xd, yd = jnp.asarray(X), jnp.asarray(y.astype(np.int32))

    def fresh():
        params = [(jnp.asarray(w), jnp.asarray(c)) for w, c in zip(W, b)]
        return params, jax.tree.map(jnp.zeros_like, params)

    starts = range(0, len(X), batch)
    order = order.astype(np.int32)                     # JAX's default integers
    lr, momentum = np.float32(lr), np.float32(momentum)
    for start in sorted({starts[0], starts[-1]}):       # a full batch and the last one
        params, velocity = fresh()
        jax.block_until_ready(step(params, velocity, Xd, yd, order[start:start + batch],
                                   lr, momentum))
    params, velocity = fresh()
    jax.block_until_ready(params)
    t = time.perf_counter()
    for start in starts:
        params, velocity, _ = step(params, velocity, Xd, yd, order[start:start + batch],
                                   lr, momentum)
    jax.block_until_ready(params)
    return time.perf_counter() - t

"""Gradient checking: the engine's backward against centred finite differences, in float64.

For a network and a few labelled inputs, the analytic gradients of the mean loss (the
engine's own ``backward``, and ``input_gradient`` for dL/dX) are compared, on float64
copies of the parameters, with centred finite differences

    n = (L(w + ε) - L(w - ε)) / 2ε,    ε = 1e-5 (as scikit-learn's MLP tests)

on a sample of the coordinates of every W[l] and b[l] (and of X): the ``TOP`` largest
analytic gradients and ``RANDOM`` more drawn at random, or every coordinate of an array
that has no more than ``TOP + RANDOM``. The error at one coordinate is

    |a - n| / max(|a| + |n|, floor),    floor = MARGIN r / THRESHOLD

relative where the gradient is large, and an absolute tolerance of MARGIN r where it is
not. r = ε_mach (1 + mean_i max_k |z_ik|) / ε is the resolution of the finite difference:
the loss's round-off (its terms, log Σ exp z and z_y, are as large as the logits z) over
the step; about 4e-11 for a fresh 784-800-10, 2e-10 for a trained one. Without the floor
a vanishing gradient would show a large "relative" error that is only noise.

A ReLU kink breaks the finite difference: a coordinate whose perturbation by +ε or -ε
changes the sign of any hidden pre-activation z (``A > 0`` differs from the unperturbed
pass) is skipped and counted, never compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .network import MLP, softmax_cross_entropy

EPS = 1e-5          # the finite-difference step
THRESHOLD = 1e-6    # the largest error that passes: correct gradients show 1e-7 or less
MARGIN = 10         # |a - n| within MARGIN resolutions passes (see the module docstring)
TOP = 10            # coordinates checked per array: its largest analytic gradients ...
RANDOM = 40         # ... and these many drawn at random among the others
MAX_WORK = 10**12   # multiply-adds of finite differences a check may take: minutes
MIN_ROWS = 16       # a forward pass over fewer rows costs what one over this many does


@dataclass(frozen=True)
class Check:
    """One gradient (of a W[l], a b[l] or of X) against its finite differences.

    Attributes:
        name: "W[1]", "b[1]", ..., "W[0]", "b[0]" or "x".
        shape: the array's shape, e.g. (800, 784) for W[0] of 784-800-10.
        equation: the note's per-sample equation that produced the gradient.
        batched: the same equation over a batch, rows being samples.
        error: the largest relative error found (inf: a gradient of the wrong shape or
            not finite).
        index: where that error is, an index into the array (None when nothing compared).
        analytic: the engine's gradient there.
        numeric: the finite difference there.
        checked: coordinates compared.
        skipped: coordinates left out because a perturbation crossed a ReLU kink.
        threshold: the error this check must stay below.
    """

    name: str
    shape: tuple[int, ...]
    equation: str
    batched: str
    error: float
    index: tuple[int, ...] | None
    analytic: float
    numeric: float
    checked: int
    skipped: int
    threshold: float

    @property
    def passed(self) -> bool:
        """At least one coordinate compared, and every error below the threshold."""
        return self.checked > 0 and self.error < self.threshold


@dataclass(frozen=True)
class Report:
    """Every check of ``check_gradients``, from the output layer down to the input."""

    sizes: list[int]
    n: int
    loss: float
    checks: list[Check]
    eps: float
    resolution: float
    floor: float
    threshold: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def equations(layer: int, last: int) -> dict[str, tuple[str, str]]:
    """The note's equations (per sample, batched) for W[layer], b[layer] of a network whose
    output layer is ``last``; "x" for the input gradient."""
    dz = ("dL/dz = a - y", "dZ = (P - Y) / n") if layer == last else \
         (f"dL/dz = (W[{layer + 1}]ᵀ · dL/dz[{layer + 1}]) ⊙ ReLU'(z)",
          f"dZ = (dZ[{layer + 1}] W[{layer + 1}]) ⊙ ReLU'(Z)")
    return {"W": (f"dL/dW = dL/dz · xᵀ,  {dz[0]}", f"dW = dZᵀ A,  {dz[1]}"),
            "b": (f"dL/db = dL/dz,  {dz[0]}", f"db = Σ_rows dZ,  {dz[1]}"),
            "x": ("dL/dx = W[0]ᵀ · dL/dz[0]", "dX = dZ[0] W[0]")}


def check_gradients(net: MLP, X: np.ndarray, y: np.ndarray, *, explain: bool = False,
                    seed: int = 0, eps: float = EPS, threshold: float = THRESHOLD,
                    top: int = TOP, random: int = RANDOM) -> Report:
    """Compare the engine's gradients of the mean loss with centred finite differences.

    Args:
        net: the network (any dtype; it is checked on a float64 copy of its class).
        X: inputs (n, sizes[0]).
        y: int labels (n,).
        explain: also check dL/dX (``input_gradient``).
        seed: seeds the random choice of coordinates.
        eps: the finite-difference step.
        threshold: the largest relative error that passes.
        top, random: coordinates per array: its largest gradients, and random others.

    Returns:
        A ``Report``: one ``Check`` per W[l] and b[l], output layer first, then "x".

    Raises:
        FloatingPointError: the logits are not finite (no gradient to check).
    """
    net = type(net).from_params([W.astype(np.float64) for W in net.W],
                                [b.astype(np.float64) for b in net.b], net.input_scale)
    X = np.array(X, dtype=np.float64)                       # (n, 784), perturbed in place
    y = np.asarray(y)
    rng = np.random.default_rng(seed)

    def loss_and_pattern() -> tuple[float, list[np.ndarray]]:
        Z, cache = net.forward(X)
        return softmax_cross_entropy(Z, y)[0], [A > 0 for A in cache.inputs[1:]]

    with np.errstate(over="ignore", invalid="ignore"):
        Z, cache = net.forward(X)
    if not np.isfinite(Z).all():
        raise FloatingPointError("the network's outputs overflow float64: its weights are "
                                 "far too large")
    resolution = float(np.finfo(np.float64).eps * (1 + np.abs(Z).max(axis=1).mean()) / eps)
    floor = MARGIN * resolution / threshold
    loss, dZ = softmax_cross_entropy(Z, y)                  # (n, k): (P - Y) / n
    dW, db = net.backward(dZ.copy(), cache)
    base = [A > 0 for A in cache.inputs[1:]]                # the ReLU pattern: z > 0

    def compare(name: str, param: np.ndarray, grad: np.ndarray,
                equation: tuple[str, str]) -> Check:
        if np.shape(grad) != param.shape:                   # nothing to compare
            return Check(name, param.shape, *equation, math.inf, None, math.nan, math.nan,
                         0, 0, threshold)
        return _compare(name, param, grad, equation, loss_and_pattern, base,
                        _coordinates(grad, rng, top, random), eps, floor, threshold)

    last = len(net.W) - 1
    checks = []
    for l in range(last, -1, -1):
        eq = equations(l, last)
        checks.append(compare(f"W[{l}]", net.W[l], dW[l], eq["W"]))
        checks.append(compare(f"b[{l}]", net.b[l], db[l], eq["b"]))
    if explain:
        dX = net.input_gradient(dZ, cache)
        checks.append(compare("x", X, dX, equations(0, last)["x"]))
    return Report(net.sizes, len(X), loss, checks, eps, resolution, floor, threshold)


def memory_needed(sizes: list[int], n: int) -> int:
    """Bytes ``check_gradients`` takes at its peak for a network of ``sizes`` and n inputs,
    roughly (with the caller's float32 network): the parameters in float32 and twice in
    float64 (the copy and its gradients), and a forward pass's activations twice."""
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
    return params * (4 + 8 + 8) + n * sum(sizes) * 8 * 4


def work_needed(sizes: list[int], n: int, explain: bool) -> int:
    """Multiply-adds of ``check_gradients``'s finite differences: two forward passes over
    the inputs for each coordinate checked (up to TOP + RANDOM per array), a pass counted
    as at least MIN_ROWS rows (over fewer, reading the weights takes as long)."""
    per_array = TOP + RANDOM
    coordinates = sum(min(i * o, per_array) + min(o, per_array)
                      for i, o in zip(sizes[:-1], sizes[1:]))
    if explain:
        coordinates += min(n * sizes[0], per_array)
    forward = max(n, MIN_ROWS) * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return 2 * coordinates * forward


def _coordinates(grad: np.ndarray, rng: np.random.Generator, top: int, random: int
                 ) -> np.ndarray:
    """Flat indices to check: the ``top`` largest |grad|, then ``random`` others drawn
    without replacement; all of them when there are no more than top + random."""
    size = grad.size
    if size <= top + random:
        return np.arange(size)
    magnitude = np.abs(np.nan_to_num(grad, nan=np.inf)).ravel()
    largest = np.argpartition(-magnitude, top)[:top]
    drawn = rng.choice(size, top + random, replace=False)
    others = drawn[~np.isin(drawn, largest)][:random]
    return np.concatenate([largest[np.argsort(-magnitude[largest])], others])


def _compare(name: str, param: np.ndarray, grad: np.ndarray, equation: tuple[str, str],
             loss_and_pattern: Callable[[], tuple[float, list[np.ndarray]]],
             base: list[np.ndarray], coordinates: np.ndarray, eps: float, floor: float,
             threshold: float) -> Check:
    """Perturb ``param`` at each coordinate by ±eps (restoring it) and compare with ``grad``,
    shaped like it."""
    found: list[tuple[float, tuple[int, ...], float, float]] = []   # (error, index, a, n)
    skipped = 0
    for flat in coordinates:
        index = np.unravel_index(flat, param.shape)
        old = param[index]
        param[index] = up_value = old + eps
        up, up_pattern = loss_and_pattern()
        param[index] = down_value = old - eps
        down, down_pattern = loss_and_pattern()
        param[index] = old
        if not all(np.array_equal(p, q) for pattern in (up_pattern, down_pattern)
                   for p, q in zip(pattern, base)):
            skipped += 1
            continue
        numeric = float((up - down) / (up_value - down_value))
        analytic = float(grad[index])
        error = abs(analytic - numeric) / max(abs(analytic) + abs(numeric), floor)
        found.append((error if math.isfinite(error) else math.inf,
                      tuple(int(i) for i in index), analytic, numeric))
    error, index, analytic, numeric = max(found, default=(0.0, None, math.nan, math.nan),
                                          key=lambda f: f[0])
    return Check(name, param.shape, *equation, error, index, analytic, numeric, len(found),
                 skipped, threshold)

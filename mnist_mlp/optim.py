"""Optimisers that update parameter arrays in place, and learning-rate schedules.

Contract: an optimiser is built on the list of parameter arrays (and, for
weight decay, which of them are decayed), holds its own state arrays shaped
like them, and ``step(grads, lr)`` updates every parameter in place, one line
of NumPy per line of its update rule (with ``out=`` so a step allocates
nothing), a cache-sized piece of each array at a time (``BLOCK``). ``grads``
must line up with the parameters and may be overwritten.
``state_dict()`` exports the state as arrays; ``load_state_dict`` restores it
so a run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# Elements each rule updates at a time. A rule is several passes over its arrays; on a
# 784-800-10 layer (627,200 weights: p, g, state and scratch 2.5 MB each) every pass
# streams them from memory, while pieces of 131,072 (512 KB each) stay in the core's
# cache from one pass to the next (benchmarks/bench.py --only profile: the optimiser
# step of 784-800-10 0.53 → 0.37 ms, of 784-1024-1024-10 1.62 → 1.08 ms). Elementwise
# rules give the same numbers whatever the pieces; arrays up to BLOCK go whole.
BLOCK = 131_072


class Optimizer:
    """Base class: parameter list, step counter, state export/restore."""

    def __init__(self, params: Sequence[np.ndarray], weight_decay: float = 0.0,
                 decayed: Sequence[bool] | None = None):
        self.params = list(params)
        if not all(p.flags.c_contiguous for p in self.params):
            raise ValueError("parameters must be C-contiguous (they are updated as flat views)")
        weight_decay = _check("weight_decay", weight_decay, 0.0, math.inf)
        decayed = [True] * len(self.params) if decayed is None else list(decayed)
        if len(decayed) != len(self.params):
            raise ValueError(f"{len(decayed)} decay flags for {len(self.params)} parameters")
        self.decay = [weight_decay if d else 0.0 for d in decayed]  # λ per parameter
        self.t = 0  # steps taken
        self.slots: dict[str, list[np.ndarray]] = {}  # named state arrays, one per parameter
        # Work space, so that updates allocate nothing: fresh multi-MB temporaries each
        # step cost more than the arithmetic (measured: 4x slower SGD on 784-800-10).
        self.scratch = [np.empty_like(p) for p in self.params]

    def _slot(self, name: str) -> list[np.ndarray]:
        self.slots[name] = [np.zeros_like(p) for p in self.params]
        return self.slots[name]

    def step(self, grads: Sequence[np.ndarray], lr: float) -> None:
        """One update from the gradients ``grads`` (one per parameter, same shapes;
        overwritten) at learning rate ``lr``."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g.shape != p.shape:
                raise ValueError(f"gradient {i} is shaped {g.shape}, its parameter {p.shape}")
            lr_ = p.dtype.type(lr)
            if p.size <= BLOCK:
                self._update(i, None, p, g, lr_)
                continue
            p, g = p.reshape(-1), g.reshape(-1)   # flat views (a strided g: a flat copy)
            for start in range(0, p.size, BLOCK):
                piece = slice(start, start + BLOCK)
                self._update(i, piece, p[piece], g[piece], lr_)

    def _update(self, i: int, piece: slice | None, p: np.ndarray, g: np.ndarray, lr) -> None:
        """The rule on ``piece`` of parameter ``i``'s elements (None: all of them), ``p`` and
        ``g`` being those elements; state arrays are read through ``self._at``."""
        raise NotImplementedError

    @staticmethod
    def _at(arrays: list[np.ndarray], i: int, piece: slice | None) -> np.ndarray:
        """``piece`` of ``arrays[i]``'s elements as a flat view (None: the whole array)."""
        return arrays[i] if piece is None else arrays[i].reshape(-1)[piece]

    def state_dict(self) -> dict[str, np.ndarray]:
        """State as arrays: ``t`` and ``<slot>.<i>`` for each slot and parameter."""
        state = {"t": np.array(self.t, dtype=np.int64)}
        for name, arrays in self.slots.items():
            state.update({f"{name}.{i}": a for i, a in enumerate(arrays)})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``state_dict`` exported.

        Raises:
            ValueError: missing or extra keys, wrong shapes or kinds, non-finite values.
        """
        _check_state("optimiser", state, self.state_dict())
        self.t = int(state["t"])
        for name, arrays in self.slots.items():
            for i, a in enumerate(arrays):
                a[...] = state[f"{name}.{i}"]


def _check_state(what: str, state: dict[str, np.ndarray], current: dict[str, np.ndarray]
                 ) -> None:
    """A saved state against the ``current`` one: same keys, a step count ``t``, and
    finite float arrays of the same shapes.

    Raises:
        ValueError: naming the first difference.
    """
    if set(state) != set(current):
        raise ValueError(f"{what} state has keys {sorted(state)}, expected {sorted(current)}")
    t = state["t"]
    if t.shape != () or t.dtype.kind not in "iu" or not 0 <= int(t) < 2**62:
        raise ValueError(f"{what} step count {t!r} is not a count")
    for key, a in current.items():
        if key == "t":
            continue
        src = state[key]
        if src.shape != a.shape or src.dtype.kind != "f":
            raise ValueError(f"{what} state {key} is {src.dtype} {src.shape}, expected "
                             f"float {a.shape}")
        if not np.isfinite(src).all():
            raise ValueError(f"{what} state {key} holds NaN or infinity")


def _check(name: str, value: float, low: float, high: float, high_open: bool = True) -> float:
    ok = low <= value < high if high_open else low <= value <= high
    if not (ok and math.isfinite(value)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, not {value}")
    return float(value)


class SGD(Optimizer):
    """SGD with momentum μ (Sutskever et al. 2013), optional Nesterov, and L2 weight decay λ:

        g ← g + λ p
        v ← μ v - lr g;   p ← p + v                 (momentum)
        v ← μ v - lr g;   p ← p + μ v - lr g        (Nesterov)

    v is the velocity, the step momentum carries over; without momentum p ← p - lr g.
    """

    def __init__(self, params: Sequence[np.ndarray], momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 decayed: Sequence[bool] | None = None):
        super().__init__(params, weight_decay, decayed)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        if nesterov and not self.momentum:
            raise ValueError("nesterov needs momentum > 0")
        self.nesterov = nesterov
        self.velocity = self._slot("velocity") if self.momentum else None

    def _update(self, i, piece, p, g, lr):
        dt, s = p.dtype.type, self._at(self.scratch, i, piece)
        if self.decay[i]:
            g += np.multiply(p, dt(self.decay[i]), out=s)          # g ← g + λ p
        g *= -lr                                                   # g ← -lr g, the plain step
        if self.velocity is None:
            p += g                                                 # p ← p - lr g
            return
        v = self._at(self.velocity, i, piece)
        v *= dt(self.momentum)
        v += g                                                     # v ← μ v - lr g
        if self.nesterov:
            p += g
            p += np.multiply(v, dt(self.momentum), out=s)          # p ← p + μ v - lr g
        else:
            p += v                                                 # p ← p + v


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015) with bias correction; ``weight_decay`` adds λ p to g (L2).

        m ← β1 m + (1-β1) g;  v ← β2 v + (1-β2) g²;  p ← p - lr · m̂ / (√v̂ + ε)
        with m̂ = m / (1 - β1ᵗ), v̂ = v / (1 - β2ᵗ)
    """

    decoupled = False

    def __init__(self, params: Sequence[np.ndarray], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 decayed: Sequence[bool] | None = None):
        super().__init__(params, weight_decay, decayed)
        self.beta1 = _check("beta1", betas[0], 0.0, 1.0)
        self.beta2 = _check("beta2", betas[1], 0.0, 1.0)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, not {eps}")
        self.eps = float(eps)
        self.m = self._slot("m")
        self.v = self._slot("v")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        if any((v < 0).any() for v in self.v):
            raise ValueError("optimiser state holds negative second moments v")

    def _update(self, i, piece, p, g, lr):
        dt, s = p.dtype.type, self._at(self.scratch, i, piece)
        if self.decay[i]:
            if self.decoupled:
                p *= dt(1 - lr * self.decay[i])       # AdamW: p ← p - lr λ p, apart from g
            else:
                g += np.multiply(p, dt(self.decay[i]), out=s)
        m, v = self._at(self.m, i, piece), self._at(self.v, i, piece)
        m *= dt(self.beta1)
        m += np.multiply(g, dt(1 - self.beta1), out=s)        # m ← β1 m + (1-β1) g
        v *= dt(self.beta2)
        np.multiply(g, g, out=s)
        s *= dt(1 - self.beta2)
        v += s                                                # v ← β2 v + (1-β2) g²
        np.divide(v, dt(1 - self.beta2 ** self.t), out=s)     # v̂
        np.sqrt(s, out=s)
        s += dt(self.eps)                                     # √v̂ + ε
        np.divide(m, s, out=s)
        s *= dt(lr / (1 - self.beta1 ** self.t))              # lr m̂ / (√v̂ + ε)
        p -= s


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019): p ← p (1 - lr λ) first."""

    decoupled = True

    def __init__(self, params: Sequence[np.ndarray], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01,
                 decayed: Sequence[bool] | None = None):
        super().__init__(params, betas, eps, weight_decay, decayed)


def _sgd(params, momentum, weight_decay, decayed):
    return SGD(params, momentum=momentum, weight_decay=weight_decay, decayed=decayed)


def _nesterov(params, momentum, weight_decay, decayed):
    return SGD(params, momentum=momentum, nesterov=True, weight_decay=weight_decay,
               decayed=decayed)


def _adam(params, momentum, weight_decay, decayed):
    return Adam(params, betas=(momentum, 0.999), weight_decay=weight_decay, decayed=decayed)


def _adamw(params, momentum, weight_decay, decayed):
    return AdamW(params, betas=(momentum, 0.999), weight_decay=weight_decay, decayed=decayed)


# Config string -> factory(params, momentum, weight_decay, decayed). For Adam and AdamW
# the config's momentum is β1.
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": _sgd, "nesterov": _nesterov, "adam": _adam, "adamw": _adamw,
}


def make_optimizer(name: str, params: Sequence[np.ndarray], momentum: float = 0.9,
                   weight_decay: float = 0.0, decayed: Sequence[bool] | None = None
                   ) -> Optimizer:
    """Build the optimiser ``name`` ("sgd", "nesterov", "adam", "adamw").

    ``decayed[i]`` says whether weight decay applies to ``params[i]`` (default: all).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, momentum, weight_decay, decayed)


class WeightAverage:
    """An exponential moving average of the parameters, bias-corrected as Adam's moments are:

        m ← d m + (1 - d) p   after each step t;     average = m / (1 - dᵗ)

    With m starting at zero, the correction makes the early average a mean of
    the steps taken so far rather than a pull towards zero. ``t`` is the count
    of updates; the state is m (one array per parameter) and t.
    """

    def __init__(self, params: Sequence[np.ndarray], decay: float):
        self.params = list(params)
        self.decay = _check("ema decay", decay, 0.0, 1.0)
        self.t = 0
        self.m = [np.zeros_like(p) for p in self.params]
        self.scratch = [np.empty_like(p) for p in self.params]

    def update(self) -> None:
        """m ← d m + (1 - d) p for every parameter, after an optimiser step."""
        self.t += 1
        for p, m, s in zip(self.params, self.m, self.scratch):
            d = p.dtype.type(self.decay)
            m *= d
            m += np.multiply(p, 1 - d, out=s)

    def averaged(self) -> list[np.ndarray]:
        """m / (1 - dᵗ) for each parameter (new arrays); the parameters themselves at t = 0."""
        if self.t == 0:
            return [p.copy() for p in self.params]
        correction = 1 - self.decay ** self.t
        return [m / m.dtype.type(correction) for m in self.m]

    def state_dict(self) -> dict[str, np.ndarray]:
        """``t`` and ``m.<i>`` for each parameter."""
        return {"t": np.array(self.t, dtype=np.int64),
                **{f"m.{i}": m for i, m in enumerate(self.m)}}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``state_dict`` exported.

        Raises:
            ValueError: missing or extra keys, wrong shapes or kinds, non-finite values.
        """
        _check_state("weight average", state, self.state_dict())
        self.t = int(state["t"])
        for i, m in enumerate(self.m):
            m[...] = state[f"m.{i}"]


def clip_row_norms_(W: np.ndarray, max_norm: float) -> None:
    """Max-norm: scale each row of W (out, in), a unit's incoming weights, to norm <= max_norm."""
    norms = np.sqrt(np.einsum("ij,ij->i", W, W))                    # (out,)
    too_long = norms > max_norm
    if too_long.any():
        W[too_long] *= (max_norm / norms[too_long])[:, None].astype(W.dtype)


# ---------------------------------------------------------------- schedules

def _constant(progress: float, gamma: float, step_fraction: float) -> float:
    return 1.0


def _step(progress: float, gamma: float, step_fraction: float) -> float:
    return gamma ** math.floor(progress / step_fraction)


def _cosine(progress: float, gamma: float, step_fraction: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


# Schedule name -> factor of the base lr as a function of the progress after warm-up, in [0, 1].
SCHEDULES = {"constant": _constant, "step": _step, "cosine": _cosine}


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                  gamma: float = 0.1, step_fraction: float = 1 / 3) -> Callable[[int], float]:
    """Learning rate as a function of the step index (0-based).

    A linear warm-up rises from base_lr / warmup_steps to base_lr over
    ``warmup_steps``; then "constant" keeps base_lr, "step" multiplies it by
    ``gamma`` after every ``step_fraction`` of the remaining steps, and
    "cosine" decays it to 0 along half a cosine.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    if not (base_lr > 0 and math.isfinite(base_lr)):
        raise ValueError(f"learning rate must be > 0, not {base_lr}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warm-up of {warmup_steps} steps does not fit in {total_steps}")
    factor = SCHEDULES[name]
    decay_steps = max(total_steps - warmup_steps, 1)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return base_lr * (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        return base_lr * factor(progress, gamma, step_fraction)

    return lr_at

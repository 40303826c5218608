"""The training batches of an epoch, with distortions prepared a batch ahead on a thread."""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .augment import Distortion, apply, draw


class Batches:
    """The training batches of the current epoch, in ``state.order``; with distortions,
    each batch's is computed on a worker thread while the step before it runs.

    The random draws stay in the generator's order (a batch's distortions, then its
    dropout masks, then the next batch's distortions), so the stream equals drawing
    each batch's distortions on the spot. The draws for the next batch are taken after
    the current step's forward pass; until that step is done, ``rng_state`` is the
    generator's state before them, which is what a resumed run must start from.
    """

    def __init__(self, X: np.ndarray, batch_size: int, state: Any,
                 rng: np.random.Generator, distortion: Distortion | None):
        """X (n, 784): the training split; ``state`` holds this epoch's ``order``; ``rng`` is
        the run's one generator; ``distortion`` None for none. The Trainer replaces
        ``distortion`` at each epoch's start (with the epoch's strength), never to or from
        None: past an epoch's last batch nothing is prepared ahead."""
        self.X, self.B, self.state, self.rng, self.distortion = (X, batch_size, state, rng,
                                                                  distortion)
        self.n_batches = math.ceil(len(X) / self.B)
        self.pending: tuple[int, Future] | None = None   # (batch number, its distortion)
        self.before_draws: dict[str, Any] | None = None  # rng state before pending's draws
        self.pool = (ThreadPoolExecutor(1, thread_name_prefix="distort")
                     if distortion is not None else None)

    def indices(self, k: int) -> np.ndarray:
        """Sample indices of batch ``k`` of this epoch (B,) or fewer for the last."""
        return self.state.order[k * self.B:(k + 1) * self.B]

    def prepare(self, k: int) -> None:
        """Draw batch ``k``'s distortions and start computing them (no-op past the epoch's
        end, or without distortions)."""
        if self.pool is None or k >= self.n_batches:
            return
        self.before_draws = self.rng.bit_generator.state
        Xb = self.X[self.indices(k)]
        d = self.distortion
        self.pending = k, self.pool.submit(apply, Xb, d, draw(d, len(Xb), self.rng))

    def take(self, k: int) -> np.ndarray:
        """Batch ``k`` as the network trains on it (B, 784): distorted when configured."""
        if self.pool is None:
            return self.X[self.indices(k)]
        if self.pending is None or self.pending[0] != k:
            self.prepare(k)                   # the first batch of an epoch, or of a resume
        _, future = self.pending
        self.pending = self.before_draws = None
        return future.result()

    def rng_state(self) -> dict[str, Any]:
        """The generator's state as of the last finished step: before any draws made ahead."""
        return self.before_draws or self.rng.bit_generator.state

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

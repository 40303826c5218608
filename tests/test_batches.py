"""Batches: the epoch's batches, distortions prepared a batch ahead, the stream unchanged."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mnist_mlp.augment import AUGMENTATIONS, distort
from mnist_mlp.batches import Batches

N, B = 70, 16


def _setup(seed: int = 3):
    X = np.random.default_rng(0).random((N, 784), dtype=np.float32)
    rng = np.random.default_rng(seed)
    state = SimpleNamespace(order=rng.permutation(N))
    return X, state, rng


def _on_the_spot(augment: str, dropout_draws: int) -> list[np.ndarray]:
    """Each batch distorted where it is used, then the step's own draws (dropout)."""
    X, state, rng = _setup()
    out = []
    for k in range(-(-N // B)):
        Xb = X[state.order[k * B:(k + 1) * B]]
        if AUGMENTATIONS[augment] is not None:
            Xb = distort(Xb, AUGMENTATIONS[augment], rng)
        rng.random(dropout_draws)
        out.append(Xb)
    return out + [rng.random(4)]


def _prepared_ahead(augment: str, dropout_draws: int) -> list[np.ndarray]:
    """As the trainer uses Batches: take, the step's draws, prepare the next."""
    X, state, rng = _setup()
    batches = Batches(X, B, state, rng, AUGMENTATIONS[augment])
    out = []
    try:
        for k in range(batches.n_batches):
            Xb = batches.take(k)
            rng.random(dropout_draws)               # the forward pass's dropout masks
            batches.prepare(k + 1)
            out.append(Xb)
    finally:
        batches.close()
    return out + [rng.random(4)]


@pytest.mark.parametrize("augment", ["none", "affine", "elastic"])
@pytest.mark.parametrize("dropout_draws", [0, 5])
def test_the_stream_equals_distorting_on_the_spot(augment, dropout_draws):
    expected = _on_the_spot(augment, dropout_draws)
    got = _prepared_ahead(augment, dropout_draws)
    assert len(got) == len(expected) == -(-N // B) + 1
    for a, b in zip(got, expected):
        assert np.array_equal(a, b)


def test_the_state_to_save_is_before_the_draws_made_ahead():
    X, state, rng = _setup()
    batches = Batches(X, B, state, rng, AUGMENTATIONS["elastic"])
    try:
        batches.take(0)
        before = rng.bit_generator.state
        batches.prepare(1)
        assert rng.bit_generator.state != before        # batch 1's draws are taken...
        assert batches.rng_state() == before            # ...but a save starts before them
        batches.take(1)
        assert batches.rng_state() == rng.bit_generator.state
    finally:
        batches.close()


def test_without_distortions_nothing_is_drawn_or_threaded():
    X, state, rng = _setup()
    batches = Batches(X, B, state, rng, None)
    before = rng.bit_generator.state
    batches.prepare(1)
    assert np.array_equal(batches.take(1), X[state.order[B:2 * B]])
    assert batches.pool is None and rng.bit_generator.state == before
    batches.close()


def test_the_last_batch_is_short_and_nothing_is_prepared_past_it():
    X, state, rng = _setup()
    batches = Batches(X, B, state, rng, AUGMENTATIONS["affine"])
    try:
        last = batches.n_batches - 1
        assert batches.take(last).shape == (N - last * B, 784)
        before = rng.bit_generator.state
        batches.prepare(last + 1)
        assert rng.bit_generator.state == before and batches.pending is None
    finally:
        batches.close()

"""Scores: accuracy, loss, confusion matrix and per-class precision, recall and F1."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import metrics
from mnist_mlp.network import MLP, Committee


class FixedLogits(MLP):
    """A 'network' whose logits are given, to score known predictions."""

    def __init__(self, logits, input_scale=255.0):
        self.fixed = np.asarray(logits, dtype=np.float32)
        self.input_scale = input_scale

    def logits(self, X):
        return self.fixed[: len(X)]


def test_evaluate_by_hand():
    # true:      0  0  0  1  1  2
    # predicted: 0  0  1  1  2  2
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    logits = np.full((6, 3), -5.0)
    logits[np.arange(6), pred] = 5.0
    result = metrics.evaluate(FixedLogits(logits), np.zeros((6, 4)), y)
    assert result["n"] == 6 and result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class 0: precision 2/2, recall 2/3; class 1: 1/2, 1/2; class 2: 1/2, 1/1
    expected = [(1.0, 2 / 3, 3), (0.5, 0.5, 2), (0.5, 1.0, 1)]
    for row, (p, r, support) in zip(result["per_class"], expected):
        assert row["precision"] == pytest.approx(p) and row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(2 * p * r / (p + r)) and row["support"] == support
    p_right = np.exp(5) / (np.exp(5) + 2 * np.exp(-5))
    losses = [-np.log(p_right) if t == q else -np.log((1 - p_right) / 2)
              for t, q in zip(y, pred)]
    assert result["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert all(isinstance(v, float) for v in (result["accuracy"], result["loss"]))


def test_a_class_never_predicted_scores_zero_not_nan():
    y = np.array([0, 1])
    confusion = metrics.confusion_matrix(y, np.array([0, 0]), 2)
    scores = metrics.per_class_scores(confusion)
    assert scores["precision"].tolist() == [0.5, 0.0] and scores["f1"][1] == 0.0


def _sure(pred, k=3):
    logits = np.full((len(pred), k), -5.0)
    logits[np.arange(len(pred)), pred] = 5.0
    return logits


def test_a_committee_is_scored_with_each_member_alone():
    y = np.array([0, 0, 0, 1, 1, 2])
    committee = Committee({"right": FixedLogits(_sure(y)),
                           "half": FixedLogits(_sure([0, 1, 0, 2, 1, 0]) / 5)})
    result = metrics.evaluate(committee, np.zeros((6, 4)), y)
    assert result["members"] == {"right": 1.0, "half": 0.5}
    assert list(result["members"]) == ["right", "half"]
    assert result["accuracy"] == 1.0                 # the surer member outvotes the other
    assert "members" not in metrics.evaluate(FixedLogits(_sure(y)), np.zeros((6, 4)), y)


def test_each_member_is_scored_on_its_own_input_scale():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 12)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    net = MLP([12, 8, 4], seed=1)
    raw = MLP.from_params([net.W[0] / np.float32(255), net.W[1]], net.b, input_scale=1)
    result = metrics.evaluate(Committee({"scaled": net, "raw": raw}), pixels / 255, y)
    alone = metrics.accuracy(y, net.predict(pixels / 255))
    assert result["members"] == {"scaled": alone, "raw": alone}

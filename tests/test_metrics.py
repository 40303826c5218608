"""Scores: accuracy, loss, confusion matrix and per-class precision, recall and F1."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import metrics
from mnist_mlp.network import MLP


class FixedLogits(MLP):
    """A 'network' whose logits are given, to score known predictions."""

    def __init__(self, logits):
        self.fixed = np.asarray(logits, dtype=np.float32)

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

"""Scores of predictions against labels: accuracy, loss, confusion matrix, per-class F1."""

from __future__ import annotations

import numpy as np

from .network import log_softmax


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal labels. Both int (n,)."""
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def mean_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean of -log softmax(logits)[i, y_i]. logits (n, k), y int (n,)."""
    log_p = log_softmax(logits.astype(np.float64))
    return float(-log_p[np.arange(len(y)), y].mean()) if len(y) else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int = 10) -> np.ndarray:
    """C[i, j] = number of samples of class i predicted as j. int64 (k, k)."""
    return np.bincount(k * y_true + y_pred, minlength=k * k).reshape(k, k)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (k, k).

    A score whose denominator is 0 is reported as 0.
    """
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}

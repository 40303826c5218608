"""Scores of predictions against labels: accuracy, loss, confusion matrix, per-class F1."""

from __future__ import annotations

from typing import Any

import numpy as np

from .network import Committee, Model, log_softmax


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


def evaluate(model: Model, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Score ``model`` on X (n, 784) = pixels / model.input_scale, with labels y int (n,).

    Returns:
        {"accuracy", "loss", "n", "per_class": [{"precision", "recall", "f1",
        "support"} for each digit], "confusion": (k, k) nested lists}, plain
        Python numbers throughout (JSON-ready); for a committee also
        "members": {name: that member's accuracy alone}.
    """
    logits = model.logits(X)                                  # (n, k)
    pred = logits.argmax(axis=1)
    k = logits.shape[1]
    confusion = confusion_matrix(y, pred, k)
    scores = per_class_scores(confusion)
    result = {
        "accuracy": accuracy(y, pred),
        "loss": mean_cross_entropy(logits, y),
        "n": len(y),
        "per_class": [{name: (int(v[d]) if name == "support" else float(v[d]))
                       for name, v in scores.items()} for d in range(k)],
        "confusion": confusion.tolist(),
    }
    if isinstance(model, Committee):
        result["members"] = {name: accuracy(y, m.predict(model.member_inputs(m, X)))
                             for name, m in model.members.items()}
    return result

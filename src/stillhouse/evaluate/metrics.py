"""Classification metrics as pure functions of arrays: no I/O, shapes in the docstrings."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``[n, classes]`` logits."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of ``[n]`` predictions equal to the ``[n]`` gold labels."""
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-label F1 over labels that occur in gold or predictions (sklearn's convention)."""
    scores = []
    for label in range(num_labels):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def calibration_bins(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> list[dict]:
    """Reliability-diagram bins over top-label confidence: count, mean confidence and accuracy per bin.

    Equal-width bins over (0, 1]; ``probs`` ``[n, classes]``, ``y_true`` ``[n]``.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        in_bin = which == b
        n = int(in_bin.sum())
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                    "confidence": float(confidence[in_bin].mean()) if n else None,
                    "accuracy": float(correct[in_bin].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): Σ_b (n_b / n) · |accuracy_b − confidence_b| over equal-width confidence bins."""
    n = len(y_true)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in calibration_bins(probs, y_true, bins) if b["count"]))


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean −log p(gold) over ``[n, classes]`` probabilities (clipped at 1e-12 to stay finite)."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0))))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> np.ndarray:
    """``[num_labels, num_labels]`` counts: row = gold label, column = predicted label."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_metrics(logits: np.ndarray, y_true: np.ndarray, bins: int = 15,
                           reference_pred: np.ndarray | None = None) -> dict:
    """The quality block of metrics.json for one model: accuracy, macro-F1, ECE, NLL (+ agreement)."""
    probs = softmax(logits)
    pred = probs.argmax(axis=1)
    out = {"accuracy": accuracy(y_true, pred), "macro_f1": macro_f1(y_true, pred, logits.shape[1]),
           "ece": expected_calibration_error(probs, y_true, bins), "nll": negative_log_likelihood(probs, y_true)}
    if reference_pred is not None:
        out["agreement_with_teacher"] = float(np.mean(pred == reference_pred))
    return out

"""Classification metrics with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np

from compress.core.records import SplitScores


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    """Mean F1 over labels present in y_true or y_pred (sklearn's macro average)."""
    scores = []
    for c in range(num_labels):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int, n: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals for accuracy and macro-F1, resampling examples with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n, len(y_true)))
    correct = (y_true == y_pred)[idx].mean(axis=1)
    f1 = np.array([macro_f1(y_true[i], y_pred[i], num_labels) for i in idx])
    q = lambda a: (float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5)))
    return {"accuracy": q(correct), "macro_f1": q(f1)}


def classification_scores(logits: np.ndarray, labels: np.ndarray, num_labels: int, seed: int = 0) -> SplitScores:
    """Accuracy and macro-F1 of `logits` against `labels`, each with its 95% bootstrap interval."""
    pred = logits.argmax(axis=1)
    ci = bootstrap_ci(labels, pred, num_labels, seed=seed)
    return SplitScores(n=len(labels), metrics={"accuracy": accuracy(labels, pred), "macro_f1": macro_f1(labels, pred, num_labels)}, ci95=ci)

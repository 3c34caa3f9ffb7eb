"""Task metrics as plain functions of (y_true, y_pred), and their bootstrap intervals.

GLUE conventions: accuracy; macro-F1; Matthews correlation (`mcc`, CoLA); F1 of the positive class (`f1`,
label id 1 of a two-label task: MRPC, QQP); Pearson and Spearman correlation for regression (STS-B).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
from scipy import stats

Metric = Callable[..., float]  # (y_true, y_pred): arrays, or tag sequences per sentence for entity metrics


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over labels present in y_true or y_pred (sklearn's macro average)."""
    scores = [_f1(y_true, y_pred, c) for c in np.union1d(y_true, y_pred)]
    return float(np.mean(scores)) if scores else float("nan")


def f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (label id 1), as GLUE reports it for MRPC and QQP."""
    return _f1(y_true, y_pred, 1)


def _f1(y_true: np.ndarray, y_pred: np.ndarray, c: int) -> float:
    tp = np.sum((y_pred == c) & (y_true == c))
    wrong = np.sum((y_pred == c) != (y_true == c))
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K, as sklearn); 0 when either side is constant."""
    labels = np.union1d(y_true, y_pred)
    t = np.searchsorted(labels, y_true)
    p = np.searchsorted(labels, y_pred)
    k = len(labels)
    confusion = np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.float64)
    true_sum, pred_sum, n = confusion.sum(1), confusion.sum(0), confusion.sum()
    correct = np.trace(confusion)
    cov_tp = correct * n - true_sum @ pred_sum
    denom = np.sqrt((n * n - pred_sum @ pred_sum) * (n * n - true_sum @ true_sum))
    return float(cov_tp / denom) if denom else 0.0


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _correlation(stats.pearsonr, y_true, y_pred)


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _correlation(stats.spearmanr, y_true, y_pred)


def _correlation(fn, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scipy's coefficient, 0 where it is undefined (a constant side: an untrained regressor, a tiny bootstrap draw)."""
    if len(y_true) < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0
    return float(fn(y_true, y_pred)[0])


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean((y_true - y_pred) ** 2)) if len(y_true) else float("nan")


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, metrics: dict[str, Metric], n: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each metric, resampling examples with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n, len(y_true)))
    out = {}
    for name, metric in metrics.items():
        values = np.array([metric(y_true[i], y_pred[i]) for i in idx])
        out[name] = (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
    return out


def resampled(n: int, fn: Callable[[np.ndarray], float], reps: int = 1000, seed: int = 0) -> tuple[float, np.ndarray]:
    """`fn` (a metric of unit indices, TaskKind.resampler) over all `n` units, and over `reps` bootstrap draws of
    them. The same seed draws the same units for every `fn`: what pairs two models in `paired_ci`."""
    rng = np.random.default_rng(seed)
    return fn(np.arange(n)), np.array([fn(rng.integers(0, n, n)) for _ in range(reps)])


def paired_ci(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> tuple[float, float, float]:
    """a - b and its 95% percentile interval, from two `resampled` results of the same units and seed.

    Why paired: two models tested on the same texts share most of their errors (the hard texts are hard for
    both), so their difference varies far less than either score; two separate intervals that overlap say
    little about whether one model is better."""
    diffs = a[1] - b[1]
    return a[0] - b[0], float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


# --- entities (token classification) ----------------------------------------------------------------------


def entity_counts(gold: list[list[str]], pred: list[list[str]]) -> np.ndarray:
    """Per sentence [correct, predicted, gold] entity counts; an entity is (type, first word, last word).

    Entities are read with seqeval's `get_entities` (conlleval conventions: an I- tag after O starts an
    entity; IOB1, IOB2 and IOBES read alike), so an exact-span match means what seqeval's F1 means."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for g, p in zip(gold, pred, strict=True):
        ge, pe = set(get_entities(g)), set(get_entities(p))
        rows.append((len(ge & pe), len(pe), len(ge)))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def entity_scores(counts: np.ndarray) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 from `entity_counts` rows (seqeval's default average)."""
    correct, predicted, gold = counts.sum(0) if len(counts) else (0, 0, 0)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": float(f), "precision": float(precision), "recall": float(recall)}


def entity_bootstrap_ci(counts: np.ndarray, n: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of entity precision/recall/F1, resampling sentences (not tokens: the words of
    one sentence are not independent draws)."""
    rng = np.random.default_rng(seed)
    draws = [entity_scores(counts[rng.integers(0, len(counts), len(counts))]) for _ in range(n)]
    return {
        k: (float(np.percentile([d[k] for d in draws], 2.5)), float(np.percentile([d[k] for d in draws], 97.5)))
        for k in draws[0]
    }


def entity_metric(name: str) -> Metric:
    """Entity precision, recall or F1 as a metric of (gold tag sequences, predicted tag sequences)."""

    def metric(gold: list[list[str]], pred: list[list[str]]) -> float:
        return entity_scores(entity_counts(gold, pred))[name]

    metric.__name__ = f"entity_{name}"
    return metric


# --- answers (extractive question answering) ---------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _token_f1(gold: str, pred: str) -> float:
    g, p = normalize_answer(gold).split(), normalize_answer(pred).split()
    common = sum((Counter(g) & Counter(p)).values())
    if not g or not p:
        return float(g == p)
    return 0.0 if common == 0 else 2 * common / (len(g) + len(p))


def answer_scores(golds: list[list[str]], preds: list[str]) -> dict[str, np.ndarray]:
    """Per question: exact match and token F1 against the best-matching gold answer (SQuAD v1.1 evaluate)."""
    em = [
        max(float(normalize_answer(g) == normalize_answer(p)) for g in gs) for gs, p in zip(golds, preds, strict=True)
    ]
    f = [max(_token_f1(g, p) for g in gs) for gs, p in zip(golds, preds, strict=True)]
    return {"exact_match": np.asarray(em), "f1": np.asarray(f)}


def answer_metric(name: str) -> Metric:
    """Exact match or F1 (fractions, not SQuAD's percentages) as a metric of (gold answers, predicted texts)."""

    def metric(golds: list[list[str]], preds: list[str]) -> float:
        return float(answer_scores(golds, preds)[name].mean()) if preds else float("nan")

    metric.__name__ = name
    return metric


def mean_bootstrap_ci(values: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of per-example values."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))

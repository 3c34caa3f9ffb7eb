"""Predictions and classification metrics with bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from compress.encoding import Encoded, batches, by_length


@torch.no_grad()
def predict(model: torch.nn.Module, enc: Encoded, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Logits [n, num_labels] of a Hugging Face classifier, in the split's order."""
    model.eval().to(device)

    def run(b: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {k: b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
        return model(**inputs).logits.float().cpu().numpy()

    return predict_with(run, enc, batch_size)


@torch.no_grad()
def predict_with(run: Callable[[dict[str, torch.Tensor]], np.ndarray], enc: Encoded, batch_size: int = 64) -> np.ndarray:
    """Logits from any runner (torch, ONNX Runtime, quantized), batched longest-first to save padding."""
    out = None
    for b in batches(enc, batch_size, by_length(enc)):
        logits = run(b)
        if out is None:
            out = np.zeros((len(enc), logits.shape[1]), dtype=np.float32)
        out[b["index"].numpy()] = logits
    return out


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


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, num_labels: int, n: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals for accuracy and macro-F1, resampling examples with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n, len(y_true)))
    correct = (y_true == y_pred)[idx].mean(axis=1)
    f1 = np.array([macro_f1(y_true[i], y_pred[i], num_labels) for i in idx])
    q = lambda a: (float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5)))  # noqa: E731
    return {"accuracy": q(correct), "macro_f1": q(f1)}


def classification_report(logits: np.ndarray, labels: np.ndarray, num_labels: int, seed: int = 0) -> dict:
    pred = logits.argmax(axis=1)
    ci = bootstrap_ci(labels, pred, num_labels, seed=seed)
    return {
        "n": int(len(labels)),
        "accuracy": accuracy(labels, pred),
        "accuracy_ci95": ci["accuracy"],
        "macro_f1": macro_f1(labels, pred, num_labels),
        "macro_f1_ci95": ci["macro_f1"],
    }

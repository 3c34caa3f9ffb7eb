"""What differs by task kind - labels, losses, predictions, metrics - in one class per kind.

Everything else (data loading, fine-tuning, distillation, the training loop's best-epoch choice,
evaluate, the search's objective) asks the run's `TaskKind` instead of assuming classification.

    classification   sentence / sentence-pair labels; CE, KL distillation; accuracy, macro_f1, mcc (+ f1 with 2 labels)
    regression       one float per example (STS-B); MSE, MSE distillation; pearson, spearman (mse reported too)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from compress.core.errors import CompressError
from compress.core.records import SplitScores
from compress.tasks import metrics as m

NO_LABEL = -100  # a classification text the teacher labels (cross-entropy's ignore_index); regression uses NaN


class TaskKind(ABC):
    """One kind of task. `metric` names are what `task.metric` may choose; the first is the default."""

    name: ClassVar[str]
    metrics: ClassVar[dict[str, m.Metric]]
    reported: ClassVar[dict[str, m.Metric]] = {}  # measured and shown, never a target (lower is better)
    label_dtype: ClassVar[type] = np.int64

    @property
    def default_metric(self) -> str:
        return next(iter(self.metrics))

    def available(self, num_labels: int) -> dict[str, m.Metric]:
        return dict(self.metrics)

    def check_metric(self, metric: str | None, num_labels: int) -> str:
        """The primary metric (higher is better), or one line naming the valid ones."""
        valid = self.available(num_labels)
        metric = metric or self.default_metric
        if metric not in valid:
            raise CompressError(f"task.metric {metric!r} is not a {self.name} metric here; use one of {', '.join(valid)}")
        return metric

    def no_labels(self, n: int) -> np.ndarray:
        return np.full(n, NO_LABEL, dtype=self.label_dtype)

    @abstractmethod
    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """What the metrics compare with the labels (class ids; scores)."""

    @abstractmethod
    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss on labelled examples; texts without a label (teacher-labelled only) are ignored."""

    @abstractmethod
    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """The student's loss against the teacher's outputs for the same batch."""

    def has_labels(self, labels: torch.Tensor) -> bool:
        return bool((labels != NO_LABEL).any())

    def score(self, metric: str, logits: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
        """One metric of `logits` against `labels` (the training loop's best-epoch choice, the quantizers' checks)."""
        return self.available(num_labels)[metric](labels, self.predictions(logits))

    def scores(self, logits: np.ndarray, labels: np.ndarray, num_labels: int, seed: int = 0) -> SplitScores:
        """Every metric of the kind, each with its 95% bootstrap interval."""
        pred = self.predictions(logits)
        found = self.available(num_labels) | self.reported
        values = {k: f(labels, pred) for k, f in found.items()}
        return SplitScores(n=len(labels), metrics=values, ci95=m.bootstrap_ci(labels, pred, found, seed=seed))


class Classification(TaskKind):
    name = "classification"
    metrics: ClassVar[dict[str, m.Metric]] = {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "mcc": m.mcc, "f1": m.f1}

    def available(self, num_labels: int) -> dict[str, m.Metric]:
        """F1 of the positive class means something only with two labels (id 1 is the positive one)."""
        return {k: v for k, v in self.metrics.items() if k != "f1" or num_labels == 2}

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return logits.argmax(axis=1)

    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, ignore_index=NO_LABEL)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """T^2-scaled KL(teacher || student) of temperature-softened distributions (Hinton et al.)."""
        t = temperature
        kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean")
        return kl * t * t


class Regression(TaskKind):
    name = "regression"
    metrics: ClassVar[dict[str, m.Metric]] = {"pearson": m.pearson, "spearman": m.spearman}
    reported: ClassVar[dict[str, m.Metric]] = {"mse": m.mse}
    label_dtype = np.float32

    def no_labels(self, n: int) -> np.ndarray:
        return np.full(n, np.nan, dtype=np.float32)

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0]

    def has_labels(self, labels: torch.Tensor) -> bool:
        return bool((~torch.isnan(labels)).any())

    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(labels)
        return F.mse_loss(logits[:, 0][known], labels[known].to(logits.dtype))

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """MSE to the teacher's scores: a regression head has no distribution to soften (temperature unused)."""
        return F.mse_loss(student, teacher)


KINDS: dict[str, TaskKind] = {k.name: k() for k in (Classification, Regression)}

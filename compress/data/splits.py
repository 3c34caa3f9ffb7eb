"""A task's split tokenized exactly as a run tokenizes it: what passes train on and what finalize re-scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.data.encoding import Encoded, encode
from compress.data.sources import TaskData
from compress.data.squad import encode_questions
from compress.recipe.task import TaskSpec


def encode_split(task: TaskData, spec: TaskSpec, tokenizer: Any, split: str, cache_dir: Path | None) -> Encoded:
    """A split tokenized as a run of `spec` tokenizes it (question answering: windows over the contexts)."""
    df = task.splits[split]
    if task.kind.name == "question_answering":
        return encode_questions(df, tokenizer, spec.max_length, spec.stride, spec.max_answer_tokens)
    return encode(df, tokenizer, spec.max_length, cache_dir)

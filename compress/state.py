"""The run state: the one object that flows through a recipe's passes.

Passes read what earlier passes left here and add what they produce. Nothing else is shared: a pass
never reaches into the CLI or the search, and the search never reaches into a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from compress.data import TaskData
from compress.errors import CompressError
from compress.encoding import Encoded, encode
from compress.recipe import Recipe


@dataclass
class Variant:
    """A deployable form of a model: an ONNX file (ONNX Runtime) or a torch module (e.g. int8 dynamic)."""

    model: str  # the run's model it derives from
    backend: str  # "onnxruntime" | "torch"
    precision: str  # "fp32" | "int8"
    path: Path | None = None
    module: torch.nn.Module | None = None

    def runner(self, threads: int | None = 2):
        """A callable: batch of tensors (input_ids, attention_mask, token_type_ids) -> logits ndarray."""
        if self.backend == "onnxruntime":
            from compress.runtime import INPUTS, session

            sess = session(self.path, threads)
            return lambda b: sess.run(["logits"], {k: b[k].numpy() for k in INPUTS})[0]
        module = self.module
        return lambda b: module(b["input_ids"], b["attention_mask"], b["token_type_ids"]).detach().numpy()


@dataclass
class RunState:
    recipe: Recipe
    out_dir: Path  # this run's folder (written as <name>.partial, renamed when the run completes)
    cache_dir: Path  # content-hash caches shared between runs
    device: torch.device
    task: TaskData
    tokenizer: Any  # a fast Hugging Face tokenizer
    teacher: PreTrainedModel | None = None
    teacher_source: str = ""  # where the current teacher weights came from (a folder)
    students: dict[str, PreTrainedModel] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # pass name -> what it measured
    artifacts: dict[str, str] = field(default_factory=dict)  # model name -> saved folder
    variants: dict[str, Variant] = field(default_factory=dict)  # deployable forms: "student.onnx", "student.int8", ...
    # Set by `compress search`: called after every validation during training, may raise to stop the trial.
    on_validation: Callable[[str, float, float, torch.nn.Module], None] | None = field(default=None, repr=False)
    _encoded: dict[str, Encoded] = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def encoded(self, split: str) -> Encoded:
        """Tokenized split (cached on disk by content, and in memory for this run)."""
        if split not in self._encoded:
            df = self.task.splits[split]
            self._encoded[split] = encode(df, self.tokenizer, self.recipe.task.max_length, self.cache_dir)
        return self._encoded[split]

    def model_dir(self, name: str) -> Path:
        """Where model `name` is saved in this run (HF weights, ONNX files, model card)."""
        return self.out_dir / "models" / name

    def pick(self, names: list[str] | None, available: dict, option: str) -> list[str]:
        """`names` (default: all of `available`), refusing any this run does not have."""
        chosen = list(available) if names is None else names  # an empty list (a pattern matching nothing) is an error, not "all"
        unknown = [n for n in chosen if n not in available]
        if unknown or not chosen:
            raise CompressError(f"{option} names {unknown or 'nothing'}, but this run has {list(available)}; fix {option} or add a convert pass")
        return chosen

    def models(self) -> dict[str, PreTrainedModel]:
        """Teacher first, then students, by name."""
        out = {"teacher": self.teacher} if self.teacher is not None else {}
        return out | self.students

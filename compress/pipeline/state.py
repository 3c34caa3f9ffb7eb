"""The run state: the one object that flows through a recipe's passes.

Passes read what earlier passes left here and add what they produce. Nothing else is shared: a pass
never reaches into the CLI or the search, and the search never reaches into a pass. What is measured is
kept as typed records (`compress.core.records`); `reports` holds each pass's own diagnostics for people.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from compress.core.errors import CompressError
from compress.core.records import Conversion, FormEval
from compress.data.encoding import Encoded
from compress.data.sources import TaskData
from compress.data.splits import encode_split
from compress.deploy.targets import open_runner, target_of
from compress.modeling.runners import Runner, torch_runner
from compress.recipe import Recipe


@dataclass
class Variant:
    """A deployable form of a model: a file of a deploy target (ONNX, OpenVINO IR, ExecuTorch program) or a torch
    module."""

    model: str  # the run's model it derives from
    runtime: str  # a deploy target's runtime: "torch" | "onnxruntime" | "openvino" | "executorch"
    precision: str  # "fp32" | "int8"
    path: Path | None = None
    module: torch.nn.Module | None = None

    def runner(self, threads: int | None = 2) -> Runner:
        if self.path is not None:
            target = target_of(self.runtime, self.precision)
            assert target is not None, f"no deploy target runs {self.runtime} {self.precision}"
            return open_runner(target, self.path, threads)
        assert self.module is not None, "a variant is a file or a module"
        return torch_runner(self.module)


OnValidation = Callable[[str, float, float, torch.nn.Module], None]


@dataclass
class RunState:
    recipe: Recipe
    out_dir: Path  # this run's folder (written as <name>.partial, renamed when the run completes)
    cache_dir: Path  # content-hash caches shared between runs
    device: torch.device
    task: TaskData
    tokenizer: Any  # a fast Hugging Face tokenizer
    teacher: PreTrainedModel | None = None
    students: dict[str, PreTrainedModel] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)  # deployable forms: "student.onnx", "student.int8", ...
    evaluations: dict[str, FormEval] = field(default_factory=dict)  # form name -> scores and latency (evaluate)
    conversions: dict[str, Conversion] = field(default_factory=dict)  # student -> how convert built it
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # pass name -> its diagnostics (free form)
    artifacts: dict[str, str] = field(default_factory=dict)  # model name -> saved folder
    # Set by `compress search`: called after every validation during training, may raise to stop the trial.
    on_validation: OnValidation | None = field(default=None, repr=False)
    _encoded: dict[str, Encoded] = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def encoded(self, split: str) -> Encoded:
        """Tokenized split (cached on disk by content, and in memory for this run)."""
        if split not in self._encoded:
            self._encoded[split] = encode_split(self.task, self.recipe.task, self.tokenizer, split, self.cache_dir)
        return self._encoded[split]

    def report(self, pass_name: str) -> dict[str, Any]:
        """The diagnostics dict of `pass_name`, created on first use."""
        return self.reports.setdefault(pass_name, {})

    def model_dir(self, name: str) -> Path:
        """Where model `name` is saved in this run (HF weights, ONNX files, model card)."""
        return self.out_dir / "models" / name

    def pick(self, names: list[str] | None, available: Mapping[str, object], option: str) -> list[str]:
        """`names` (default: all of `available`), refusing any this run does not have."""
        # an empty list (a pattern matching nothing) is an error, not "all"
        chosen = list(available) if names is None else names
        unknown = [n for n in chosen if n not in available]
        if unknown or not chosen:
            raise CompressError(
                f"{option} names {unknown or 'nothing'}, but this run has {list(available)}; fix {option} or add a "
                "convert pass"
            )
        return chosen

    def models(self) -> dict[str, PreTrainedModel]:
        """Teacher first, then students, by name."""
        out = {"teacher": self.teacher} if self.teacher is not None else {}
        return out | self.students

    def origin(self, form: str) -> str:
        """The model a form derives from ("student.int8" -> "student")."""
        return self.variants[form].model if form in self.variants else form

"""What a run measures, as typed records: the one schema that passes write and everything else reads.

    SplitScores   one model form on one split: each metric with its 95% bootstrap interval
    Latency       one timed form: runtime, precision, shape, threads, median/p90/IQR/CV, speed-up vs a reference
    FormEval      one deployable form of a model (torch, ONNX fp32, int8, ...): its scores and latency
    Conversion    how a student was built from the teacher
    RunMetrics    a whole run; `metrics.json` is this record serialized, with `schema_version`
    TrialScore    what a search trial scored (stored in the study, read by the report)

Records are pydantic models: `model_dump(mode="json")` writes them, `model_validate` reads them back,
so no consumer re-parses dictionaries by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from compress.core.errors import CompressError

SCHEMA_VERSION = 2


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitScores(Record):
    """Scores of one model form on one split."""

    n: int
    metrics: dict[str, float]  # e.g. accuracy, macro_f1
    ci95: dict[str, tuple[float, float]] = {}

    def __getitem__(self, metric: str) -> float:
        if metric not in self.metrics:
            raise CompressError(f"metric {metric!r} was not measured (have {sorted(self.metrics)})")
        return self.metrics[metric]


class Latency(Record):
    """One form timed by the latency harness; `speedup` is against `reference`, timed in the same run."""

    runtime: str  # torch | onnxruntime
    precision: str  # fp32 | int8
    device: str = "cpu"
    batch: int
    seq: int
    threads: int
    median_ms: float
    p90_ms: float
    iqr_ms: float
    cv: float
    runs: int
    params: int
    gflops: float
    reference: str | None = None
    speedup: float | None = None

    @property
    def gflops_per_s(self) -> float:
        return self.gflops / (self.median_ms / 1000)


class FormEval(Record):
    """One deployable form of one model: what it is, how accurate, how fast."""

    form: str  # "student", "student.onnx", "student.int8", ...
    model: str  # the run's model it derives from
    runtime: str
    precision: str
    path: str | None = None  # artifact inside the run folder, if the form is a file
    size_mb: float | None = None
    splits: dict[str, SplitScores] = {}
    latency: Latency | None = None


class Conversion(Record):
    """How a student was built from the teacher (read by distillation's layer maps and by model cards)."""

    teacher_layers: list[int]
    groups: dict[str, int]
    intermediate_size: int
    init: str


class PassRun(Record):
    name: str
    seconds: float


Status = Literal["running", "complete", "failed"]


class RunMetrics(Record):
    """Everything a run measured; written to `metrics.json` after every pass."""

    schema_version: int = SCHEMA_VERSION
    name: str
    status: Status
    compress_version: str
    error: str | None = None
    passes: list[PassRun] = []
    labels: list[str] = []
    evaluations: dict[str, FormEval] = {}
    conversions: dict[str, Conversion] = {}
    reports: dict[str, dict[str, Any]] = {}  # pass name -> its own diagnostics, for people (free form)
    models: dict[str, str] = {}  # model name -> saved folder

    def forms_of(self, model: str) -> dict[str, FormEval]:
        return {k: v for k, v in self.evaluations.items() if v.model == model}


class TeacherReference(Record):
    """The teacher measured once per study: accuracy, and the latency of each of its timed forms."""

    validation: SplitScores
    test: SplitScores | None = None
    latency: dict[str, Latency]  # form -> timing ("teacher" = PyTorch fp32, "teacher.onnx" = ONNX Runtime fp32)

    @property
    def latency_ms(self) -> float:
        """The teacher in PyTorch fp32, the reference of `speedup` in trials."""
        return self.latency["teacher"].median_ms


class TrialScore(Record):
    """A search trial's result: its fastest timed form of the student and what the report shows of it."""

    form: str
    path: str
    validation: SplitScores
    test: SplitScores | None
    latency: Latency
    speedup: float  # vs the teacher timed in the same run
    size_mb: float
    layers: int
    intermediate_size: int
    groups: str
    constraints: list[float]
    feasible: bool


def read_metrics(path: Path) -> RunMetrics:
    """`metrics.json` of a run, refusing files of another schema with a line that says what to do."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompressError(f"{path}: cannot read run metrics ({e}); rerun the recipe") from e
    version = raw.get("schema_version", 1) if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise CompressError(
            f"{path}: written by another compress version (metrics schema {version}, this one reads {SCHEMA_VERSION}); rerun the recipe to rewrite it"
        )
    try:
        return RunMetrics.model_validate(raw)
    except ValidationError as e:
        raise CompressError(f"{path}: not a valid metrics file ({e.errors()[0]['msg']} at {e.errors()[0]['loc']}); rerun the recipe") from e

"""What a run measures, as typed records: the one schema that passes write and everything else reads.

    SplitScores   one model form on one split: each metric with its 95% bootstrap interval
    Latency       one timed form: runtime, precision, shape, threads, median/p90/IQR/CV, speed-up vs a reference
    FormEval      one deployable form of a model (torch, ONNX fp32, int8, ...): its scores and latency
    Conversion    how a student was built from the teacher
    RunMetrics    a whole run; `metrics.json` is this record serialized, with `schema_version`

A study's records (teacher reference, trial scores, the final frontier) are in `compress.core.frontier`.

Records are pydantic models: `model_dump(mode="json")` writes them, `model_validate` reads them back,
so no consumer re-parses dictionaries by hand.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from compress.core.errors import CompressError

SCHEMA_VERSION = 2
ONE_POINT = 0.01  # "within 1 point" of the teacher: the headline threshold, as a fraction of the task's metric


def fastest(times: Mapping[str, float]) -> str | None:
    """The key of the lowest time (ms or s): the teacher's fastest form, the reference of every speed-up."""
    return min(times, key=times.__getitem__) if times else None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitScores(Record):
    """Scores of one model form on one split."""

    n: int
    metrics: dict[str, float]  # e.g. accuracy, macro_f1, mcc; pearson, spearman
    ci95: dict[str, tuple[float, float]] = {}

    def __getitem__(self, metric: str) -> float:
        if metric not in self.metrics:
            raise CompressError(f"metric {metric!r} was not measured (have {sorted(self.metrics)})")
        return self.metrics[metric]


class Latency(Record):
    """One form timed by the latency harness at a fixed shape.

    `p10_ms` is what comparisons use: on a shared machine interference only adds time, and the 10th
    percentile of the per-call times measured 10-50x more stable across repeats than the median (README,
    Latency). `speedup` is `reference`'s p10 over this form's p10, both timed in the same run, where the
    reference is the teacher's fastest deploy form; `speedups` holds the ratio against every teacher form.
    """

    runtime: str  # torch | onnxruntime
    precision: str  # fp32 | int8
    device: str = "cpu"
    batch: int
    seq: int  # padded: the timed length; natural: the texts' mean token count
    shape: Literal["padded", "natural"] = "padded"  # natural: per text, over real texts at their own lengths
    threads: int
    p10_ms: float
    median_ms: float
    p90_ms: float
    iqr_ms: float
    cv: float
    runs: int
    params: int
    gflops: float
    reference: str | None = None
    speedup: float | None = None
    speedups: dict[str, float] = {}

    @classmethod
    def of(cls, stats: Any, teacher_p10: Mapping[str, float], **context: Any) -> Latency:
        """A timing's statistics (attributes p10_ms, median_ms, p90_ms, iqr_ms, cv, runs), with speed-ups against the
        teacher's forms timed in the same run (`teacher_p10`: form -> p10 ms; the fastest is the reference)."""
        p10 = float(stats.p10_ms)
        reference = fastest(teacher_p10)
        return cls(
            **{k: getattr(stats, k) for k in ("p10_ms", "median_ms", "p90_ms", "iqr_ms", "cv", "runs")},
            **context,
            reference=reference,
            speedup=teacher_p10[reference] / p10 if reference else None,
            speedups={k: v / p10 for k, v in teacher_p10.items()},
        )


class NaturalLatency(Record):
    """Batch-1 latency over real texts of the task at their own lengths (dynamic shapes).

    `speedup` is the median over texts of reference time / this form's time, each pair timed back to back."""

    texts: int
    mean_tokens: float  # per text
    mean_ms: float  # what a stream of such requests costs per request
    median_ms: float
    speedup: float | None = None
    reference: str | None = None

    @classmethod
    def of(cls, times_s: Mapping[str, Any], teacher_forms: Collection[str], tokens: float) -> dict[str, NaturalLatency]:
        """Per form, from its seconds per text (the same texts, in order, for every form); the reference is the
        teacher form with the lowest mean."""
        teacher = {k: float(np.mean(times_s[k])) for k in teacher_forms}
        ref = fastest(teacher)
        return {
            k: cls(
                texts=len(v),
                mean_tokens=tokens,
                mean_ms=1000 * float(np.mean(v)),
                median_ms=1000 * float(np.median(v)),
                reference=ref,
                speedup=float(np.median(np.asarray(times_s[ref]) / np.asarray(v))) if ref else None,
            )
            for k, v in times_s.items()
        }


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
    natural: NaturalLatency | None = None


class Conversion(Record):
    """How a student was built from the teacher (read by distillation's layer maps and by model cards)."""

    teacher_layers: list[int]
    groups: dict[str, int]
    intermediate_size: int
    init: str
    hidden_size: int | None = None  # below the teacher's: a narrowed student (convert.hidden_size)
    # The student's residual stream and heads are the teacher's (a subset of them when narrowed), reordered so
    # that grouped blocks keep the most weight: student channel j is teacher channel hidden_order[j]; head slot s
    # of student layer i is teacher head head_orders[i][s]. Losses that compare hidden states or attention maps
    # must line them up by these (empty: identity, e.g. init: identity or random).
    hidden_order: list[int] = []
    head_orders: list[list[int]] = []


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
    task_kind: str = "classification"
    metric: str = "accuracy"  # the task's primary metric: what training selected on and what reports lead with
    evaluations: dict[str, FormEval] = {}
    conversions: dict[str, Conversion] = {}
    reports: dict[str, dict[str, Any]] = {}  # pass name -> its own diagnostics, for people (free form)
    models: dict[str, str] = {}  # model name -> saved folder

    def forms_of(self, model: str) -> dict[str, FormEval]:
        return {k: v for k, v in self.evaluations.items() if v.model == model}


def read_metrics(path: Path) -> RunMetrics:
    """`metrics.json` of a run, refusing files of another schema with a line that says what to do."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompressError(f"{path}: cannot read run metrics ({e}); rerun the recipe") from e
    version = raw.get("schema_version", 1) if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise CompressError(
            f"{path}: written by another compress version (metrics schema {version}, this one reads "
            f"{SCHEMA_VERSION}); rerun the recipe to rewrite it"
        )
    try:
        return RunMetrics.model_validate(raw)
    except ValidationError as e:
        raise CompressError(
            f"{path}: not a valid metrics file ({e.errors()[0]['msg']} at {e.errors()[0]['loc']}); rerun the recipe"
        ) from e

"""What a run measures, as typed records: the one schema that passes write and everything else reads.

    SplitScores   one model form on one split: each metric with its 95% bootstrap interval
    Latency       one timed form: runtime, precision, shape, threads, median/p90/IQR/CV, speed-up vs a reference
    FormEval      one deployable form of a model (torch, ONNX fp32, int8, ...): its scores and latency
    Conversion    how a student was built from the teacher
    RunMetrics    a whole run; `metrics.json` is this record serialized, with `schema_version`
    TrialScore    what a search trial scored (stored in the study, read by the report)
    Frontier      the final timing run of a study (`compress finalize`), with paired test comparisons and the
                  proxy trials re-timed (TrialTiming) to check the latency model

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
    seq: int
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
    def of(cls, stats: Mapping[str, Any], teacher_p10: Mapping[str, float], **context: Any) -> Latency:
        """A timing's statistics (p10_ms, median_ms, p90_ms, iqr_ms, cv, runs), with speed-ups against the teacher's
        forms timed in the same run (`teacher_p10`: form -> p10 ms; the fastest is the reference)."""
        p10 = float(stats["p10_ms"])
        reference = min(teacher_p10, key=teacher_p10.__getitem__) if teacher_p10 else None
        return cls(
            **{k: stats[k] for k in ("p10_ms", "median_ms", "p90_ms", "iqr_ms", "cv", "runs")},
            **context,
            reference=reference,
            speedup=teacher_p10[reference] / p10 if reference else None,
            speedups={k: v / p10 for k, v in teacher_p10.items()},
        )

    @property
    def gflops_per_s(self) -> float:
        return self.gflops / (self.median_ms / 1000)


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
        ref = min(teacher, key=teacher.__getitem__) if teacher else None
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


class TeacherReference(Record):
    """The teacher measured once per study, in every deploy form: what a user gets without compress."""

    forms: dict[str, FormEval]  # "teacher" (PyTorch fp32), "teacher.onnx", "teacher.int8", ...
    metric: str = "accuracy"  # the task's primary metric (task.metric): what "accuracy" means in a study

    @property
    def model(self) -> FormEval:
        return self.forms["teacher"]

    def fastest(self) -> FormEval:
        """The teacher's fastest timed form (p10), the reference of every speed-up."""
        timed = [f for f in self.forms.values() if f.latency is not None]
        return min(timed, key=lambda f: f.latency.p10_ms if f.latency else float("inf"))

    def score(self, split: str) -> float | None:
        """The teacher's primary metric on `split` (PyTorch fp32 form)."""
        scores = self.model.splits.get(split)
        return scores[self.metric] if scores else None


class TrialScore(Record):
    """A search trial's result: the student in the study's deploy target, its predicted and measured latency."""

    form: str
    path: str
    target: str
    metric: str = "accuracy"  # the task's primary metric, which the study maximizes
    validation: SplitScores
    test: SplitScores | None
    predicted_ms: float  # the latency model's p10 prediction: what the search optimizes
    predicted_speedup: float  # the teacher's fastest form (timed at calibration) over predicted_ms
    latency: Latency | None  # measured in the trial's own run, when its evaluate pass timed the form
    size_mb: float
    arch: dict[str, Any]  # compress.deploy.blocks.Architecture
    constraints: list[float]
    feasible: bool

    @property
    def value(self) -> float:
        """The validation score the study maximizes (the task's primary metric)."""
        return self.validation[self.metric]

    @property
    def measured_speedup(self) -> float | None:
        return self.latency.speedup if self.latency else None


class PairedDiff(Record):
    """A final student's test score minus a rival's (a teacher form, a baseline) on the same units, with the 95%
    interval of a paired bootstrap: whether a gap is real, which the two models' own intervals cannot say."""

    rival: str  # "<entry name>/<form>"
    form: str  # the student's form compared (its fastest)
    metric: str
    diff: float
    ci95: tuple[float, float]
    n: int  # test units (examples, sentences, questions)


class TrialTiming(Record):
    """A proxy trial's student re-timed after the search beside the teacher's forms, in one repeated session like
    the final timing run: the latency model checked on the measurement that the final students get, not on each
    trial's single timing series taken in the process that had just trained it (compress.search.timing)."""

    trial: int
    form: str
    predicted_speedup: float  # what the search optimized (TrialScore.predicted_speedup)
    p10_ms: float
    speedup: float  # `reference`'s p10 over this one's, both from the session
    reference: str  # the teacher's fastest form in that session, "teacher/<form>"


class FrontierEntry(Record):
    """A model of the final timing run: the teacher, a retrained front student, or a peer baseline."""

    name: str
    kind: Literal["teacher", "final", "baseline"]
    trial: int | None = None  # the proxy trial a final student was retrained from
    path: str
    arch: dict[str, Any]
    forms: dict[str, FormEval]  # accuracy from its run, latency from the shared timing session
    challenges: list[str] = []  # the baselines a final student was retrained to beat (finalize.cover_baselines)
    paired: list[PairedDiff] = []  # a final student against every rival (compress.search.paired)

    def best(self) -> FormEval:
        """The fastest form (p10): how this model would be shipped."""
        return min(self.forms.values(), key=lambda f: f.latency.p10_ms if f.latency else float("inf"))


class Frontier(Record):
    """The final students, the peer baselines and the teacher's forms, timed together in one repeated run."""

    target: str
    reference: str  # the teacher's fastest form: every speedup is against it
    reference_ms: float
    seq: int
    threads: int
    runs: int
    repeats: int
    repeats_redone: int
    entries: list[FrontierEntry]
    trials: list[TrialTiming] = []  # proxy trials re-timed to check the latency model (finalize.check_trials)


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

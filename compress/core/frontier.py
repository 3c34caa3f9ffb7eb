"""A study's typed records: what crosses from the search to finalize and the report.

TeacherReference  the teacher measured once per study, in every deploy form
TrialScore        what a search trial scored (stored in the study, read by finalize and the report)
Frontier          the final timing run (`compress finalize`): entries with paired test comparisons, and the
                  proxy trials re-timed (TrialTiming) to check the latency model
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.core.arch import Architecture
from compress.core.records import FormEval, Latency, Record, SplitScores, fastest


def fastest_form(forms: dict[str, FormEval]) -> FormEval:
    """The form with the lowest p10 latency (untimed forms last): how a model would be shipped."""
    p10 = {k: f.latency.p10_ms if f.latency else float("inf") for k, f in forms.items()}
    return forms[fastest(p10) or next(iter(forms))]


class TeacherReference(Record):
    """The teacher measured once per study, in every deploy form: what a user gets without compress."""

    forms: dict[str, FormEval]  # "teacher" (PyTorch fp32), "teacher.onnx", "teacher.int8", ...
    metric: str = "accuracy"  # the task's primary metric (task.metric): what "accuracy" means in a study

    @property
    def model(self) -> FormEval:
        return self.forms["teacher"]

    def fastest(self) -> FormEval:
        """The teacher's fastest timed form (p10), the reference of every speed-up."""
        return fastest_form({k: f for k, f in self.forms.items() if f.latency is not None})

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
    arch: Architecture
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
    trial's single timing series taken in the process that had just trained it (compress.finalize.timing)."""

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
    arch: Architecture
    forms: dict[str, FormEval]  # accuracy from its run, latency from the shared timing session
    # the baselines a final student was retrained to beat (finalize.cover_baselines)
    challenges: list[str] = Field(default_factory=list)
    # a final student against every rival (compress.finalize.paired)
    paired: list[PairedDiff] = Field(default_factory=list)

    def best(self) -> FormEval:
        """The fastest form (p10): how this model would be shipped."""
        return fastest_form(self.forms)


class BudgetUse(Record):
    """How a wall-clock budget was used: `seconds` allowed, `used_s` spent, `skipped` pieces of work not started."""

    seconds: float
    used_s: float
    skipped: int = 0


class Frontier(Record):
    """The final students, the peer baselines and the teacher's forms, timed together in one repeated run."""

    target: str
    reference: str  # the teacher's fastest form: every speedup is against it
    reference_ms: float
    seq: int
    latency_shape: Literal["padded", "natural"] = "padded"  # search.latency_shape: what every latency here is
    threads: int
    runs: int
    repeats: int
    repeats_redone: int
    entries: list[FrontierEntry]
    # proxy trials re-timed to check the latency model (finalize.check_trials)
    trials: list[TrialTiming] = Field(default_factory=list)
    budget: BudgetUse | None = None  # finalize.timeout, when set: final students left out when it ran out

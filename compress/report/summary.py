"""The report's numbers as one typed record (`ReportSummary`): what summary.json holds, and what the pages and
charts read. Everything here is derived from the points DataFrame (`compress.report.points`) and the study's
context; nothing is measured.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from compress.core.frontier import Frontier, TeacherReference
from compress.core.records import ONE_POINT
from compress.deploy.latency_model import agreement
from compress.finalize.paired import Closest, closest
from compress.report.frontier import budgets, hypervolume, knee, pareto
from compress.report.points import Context


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Row(Summary):
    """One point as the tables and summary.json show it (a final student, a baseline, a teacher form, a proxy)."""

    name: str
    form: str | None = None
    test_score: float | None = None
    test_ci_low: float | None = None
    test_ci_high: float | None = None
    val_score: float | None = None
    latency_ms: float | None = None
    median_ms: float | None = None
    natural_ms: float | None = None
    speedup: float | None = None
    natural_speedup: float | None = None
    natural_form: str | None = None  # the form natural_ms is of: the fastest at natural lengths, maybe not `form`
    speedup_vs_torch: float | None = None
    layers: int | None = None
    hidden: int | None = None  # residual width (below the teacher's: a narrowed student)
    groups: str | None = None
    intermediate_size: int | None = None
    trial: int | None = None
    challenges: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, r: pd.Series) -> Row:
        values = {k: r[k] for k in cls.model_fields if k in r and not pd.isna(r[k])}
        values = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}  # numpy scalars
        ints = ("layers", "hidden", "intermediate_size", "trial")
        counts = {k: int(v) for k in ints if (v := values.get(k)) is not None}
        return cls.model_validate(values | counts)


class Rival(Row):
    """What a user gets without compress (a teacher form, a peer baseline), and whether a final student beats it."""

    kind: Literal["teacher", "peer"]
    dominated: bool  # a final student at least as accurate (test) and at least as fast
    paired: Closest | None  # the most accurate final student at least as fast, paired difference


class Timing(Summary):
    seq: int
    latency_shape: str = "padded"  # natural: per text over real texts at their own lengths (seq: their mean tokens)
    threads: int
    runs: int
    repeats: int
    statistic: str = "p10 of per-call times"
    repeats_redone: int


class Agreement(Summary):
    trials: int
    spearman: float | None = None
    median_abs_err: float | None = None


class Predictor(Agreement):
    """The latency model's predicted vs measured speed-up: over trials re-timed together when there are two or more
    (`measured` "re-timed"), else as each trial's own run measured it; the latter kept under `own_runs`."""

    measured: Literal["re-timed", "own run"]
    own_runs: Agreement


class Knee(Summary):
    name: str
    why: str


class Level(Summary):
    speedup_at_least: float
    trial: str | None


class SearchBudget(Summary):
    """How the study's proxy trials went against their targets: `finished` of `wanted`, within `timeout` seconds."""

    finished: int
    wanted: int | None = None
    timeout: float | None = None
    finalize_timeout: float | None = None
    finals_skipped: int = 0


class ReportSummary(Summary):
    target: str | None
    reference: str  # the teacher's fastest form: every speed-up is against it
    timing: Timing | None  # the final timing run; None before compress finalize
    metric: str  # what every score column holds (task.metric)
    teacher_score: dict[str, float | None]
    baselines: list[Rival]
    finals: list[Row]
    best_speedup_vs_teacher_fastest_within_1pt: float | None
    baselines_total: int
    baselines_dominated: int
    baselines_matched_paired: int  # as fast, and not surely less accurate: the paired 95% interval reaches 0
    predictor: Predictor
    trials: dict[str, int]  # proxy trials by state
    budget: SearchBudget
    front_size: int
    hypervolume: float
    hypervolume_by_source: dict[str, float]
    knee: Knee | None
    budgets: list[Level]

    def trial_counts(self) -> str:
        """The proxy trials as a reader says it: "6 complete, 1 pruned (6 of 8 in the 5-minute budget)"."""
        counts = ", ".join(f"{v} {k.lower()}" for k, v in self.trials.items()) or "none"
        b = self.budget
        if b.wanted is None or b.finished >= b.wanted:
            return counts
        within = f" in the {_minutes(b.timeout)} budget (search.timeout)" if b.timeout else ""
        return f"{counts} ({b.finished} of {b.wanted} wanted{within})"


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:g}-minute" if seconds and seconds % 60 == 0 else f"{seconds:g}-second"


class Picks(BaseModel):
    """Rows the pages show beside the summary (not written to summary.json)."""

    model_config = ConfigDict(frozen=True)
    knee: Row | None
    levels: list[tuple[float, Row | None]]


def predictor_quality(points: pd.DataFrame) -> Predictor:
    """How well the predicted speed-up ranks and matches the measured one (see `Predictor`)."""

    def over(column: str) -> Agreement:
        t = points[(points["kind"] == "trial") & points[column].notna()] if column in points else pd.DataFrame()
        if len(t) < 2:
            return Agreement(trials=len(t))
        rho, err = agreement(t["speedup"].tolist(), t[column].tolist())
        return Agreement(trials=len(t), spearman=rho, median_abs_err=err)

    own, retimed = over("measured_speedup"), over("retimed_speedup")
    best, how = (retimed, "re-timed") if retimed.trials >= 2 else (own, "own run")
    return Predictor(**best.model_dump(), measured=how, own_runs=own)


def summarize(
    points: pd.DataFrame, front: pd.DataFrame, context: Context, teachers: dict[str, TeacherReference]
) -> tuple[ReportSummary, Picks]:
    """The summary of `points` (every source's rows) and their proxy `front`, with the first source's `context`;
    `teachers`: each source's teacher, for its own hypervolume."""
    teacher = context.teacher
    tv, tt = teacher.score("validation"), teacher.score("test")
    kind = points["kind"]
    finals, rivals = points[kind == "final"], pd.concat([points[kind == "teacher"], points[kind == "baseline"]])
    within = finals[finals["test_score"] >= tt - ONE_POINT] if tt is not None and not finals.empty else finals.iloc[:0]
    dominated = [_dominated(finals, r) for r in rivals.itertuples()]
    paired = _paired(context.frontier, rivals)
    pick, why = knee(front, tv) if tv is not None else (None, "no teacher validation accuracy")
    levels = budgets(front)
    summary = ReportSummary(
        target=context.info.target if context.info else None,
        reference=context.frontier.reference if context.frontier else f"teacher/{teacher.fastest().form}",
        timing=_timing(context.frontier),
        metric=teacher.metric,
        teacher_score={"validation": tv, "test": tt},
        baselines=[
            Rival(**Row.of(r).model_dump(), kind="teacher" if r["kind"] == "teacher" else "peer", dominated=d, paired=c)
            for (_, r), d, c in zip(rivals.iterrows(), dominated, paired, strict=True)
        ],
        finals=[Row.of(r) for _, r in finals.sort_values("speedup", ascending=False).iterrows()],
        best_speedup_vs_teacher_fastest_within_1pt=float(within["speedup"].max()) if not within.empty else None,
        baselines_total=len(rivals),
        baselines_dominated=sum(dominated),
        baselines_matched_paired=sum(c is not None and c.ci95[1] >= 0 for c in paired),
        predictor=predictor_quality(points),
        trials={str(k): int(v) for k, v in points[kind == "trial"].groupby("state").size().items()},
        budget=_budget(points, context),
        front_size=len(front),
        hypervolume=hypervolume(front, tv) if len(front) and tv is not None else 0.0,
        hypervolume_by_source={s: _source_hypervolume(points, s, t) for s, t in teachers.items()},
        knee=None if pick is None else Knee(name=str(pick["name"]), why=why),
        budgets=[Level(speedup_at_least=level, trial=None if r is None else str(r["name"])) for level, r in levels],
    )
    picks = Picks(
        knee=None if pick is None else Row.of(pick), levels=[(x, None if r is None else Row.of(r)) for x, r in levels]
    )
    return summary, picks


def _dominated(finals: pd.DataFrame, rival: Any) -> bool:
    if finals.empty:
        return False
    return bool(((finals["test_score"] >= rival.test_score) & (finals["speedup"] >= rival.speedup)).any())


def _paired(frontier: Frontier | None, rivals: pd.DataFrame) -> list[Closest | None]:
    """Per rival row, its paired comparison with the closest final student; rows are found by their frontier entry
    and form ("<entry>/<form>"), as `closest` keys them."""
    near = closest(frontier) if frontier else {}
    return (
        [near.get(f"{e}/{f}") for e, f in zip(rivals["entry"], rivals["form"], strict=True)]
        if near
        else [None] * len(rivals)
    )


def _timing(frontier: Frontier | None) -> Timing | None:
    if frontier is None:
        return None
    keys = ("seq", "latency_shape", "threads", "runs", "repeats", "repeats_redone")
    return Timing(**{k: getattr(frontier, k) for k in keys})


def _budget(points: pd.DataFrame, context: Context) -> SearchBudget:
    """The first source's trials against its study's targets (other sources overlaid have budgets of their own)."""
    trials = points[(points["kind"] == "trial") & (points["source"] == context.source.name)]
    finished = int(trials["state"].isin(["COMPLETE", "PRUNED"]).sum())
    spec = context.info.search if context.info else None
    used = context.frontier.budget if context.frontier else None
    return SearchBudget(
        finished=finished,
        wanted=spec.trials if spec else None,
        timeout=spec.timeout if spec else None,
        finalize_timeout=spec.finalize.timeout if spec else None,
        finals_skipped=used.skipped if used else 0,
    )


def _source_hypervolume(points: pd.DataFrame, source: str, teacher: TeacherReference) -> float:
    trials = points[(points["source"] == source) & (points["kind"] == "trial")]
    return hypervolume(pareto(trials), teacher.score("validation") or 0.0)
